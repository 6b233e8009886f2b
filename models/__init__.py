"""The GAN's networks and how they travel between server and sites as one record."""
