"""fedsynth: federated synthetic tables from a DP-trained GAN, built on Flower and Opacus."""

from fedsynth.core import __version__

__all__ = ["__version__"]
