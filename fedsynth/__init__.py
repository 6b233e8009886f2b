"""fedsynth: federated synthetic tables from a DP-trained GAN, built on Flower and Opacus."""

__version__ = "0.1.0"
