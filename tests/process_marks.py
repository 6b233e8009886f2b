"""Find the Flower and Ray processes a test started, and only those.

A test puts a unique mark in the environment of the command it runs; every
process that command starts (SuperLink, SuperExec, simulation, Ray) inherits it.
Other Flower runs on the same machine lack the mark, so they neither fail a test
nor get counted as its leftovers.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from fedsynth.simulations.runner import is_alive, processes_matching

FLOWER_NAMES = ("flower-superlink", "flower-superexec", "flwr-simulation", "flwr-serverapp", "flwr-clientapp",
                "raylet", "gcs_server")  # fmt: skip


def new_mark(prefix: str = "FEDSYNTH_TEST") -> str:
    """A fresh environment variable name to mark one test's processes."""
    return f"{prefix}_{uuid.uuid4().hex}"


def marked_env(mark: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with ``mark`` set."""
    return {**(os.environ if base is None else base), mark: "1"}


def marked_flower_processes(mark: str) -> set[int]:
    """Live (not zombie) Flower and Ray processes whose environment holds ``mark``."""
    ours = set()
    for pid in {pid for name in FLOWER_NAMES for pid in processes_matching(name) if is_alive(pid)}:
        with contextlib.suppress(OSError):
            if mark.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                ours.add(pid)
    return ours
