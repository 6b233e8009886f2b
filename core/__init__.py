"""What every part of fedsynth shares: the run configuration (``config``) and the user-facing errors (``errors``)."""

__version__ = "0.1.0"
