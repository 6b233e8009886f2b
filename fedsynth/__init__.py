"""fedsynth: federated synthetic tables from a DP-trained GAN, built on Flower and Opacus.

``fedsynth.simulate``, ``fedsynth.generate`` and ``fedsynth.evaluate`` are the Python API
(``fedsynth.api``); ``fedsynth.UserError`` is every one-line mistake they report.
"""

from typing import Any

from fedsynth.core import __version__
from fedsynth.core.errors import UserError

__all__ = ["UserError", "__version__", "evaluate", "generate", "simulate"]


def __getattr__(name: str) -> Any:
    # The API pulls in pandas, torch and Flower: import it on first use, not with every subpackage.
    if name in ("simulate", "generate", "evaluate", "SimulationResult"):
        from fedsynth import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedsynth' has no attribute {name!r}")
