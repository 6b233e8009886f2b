"""Run many ``fedsynth`` command lines quickly: import once, then fork one process per command.

Each command still runs in its own process, through the console script's entry point
(``fedsynth.cli:main``) with its own argv, working folder, stdout, stderr and exit code; only the
2-4 s of importing torch, pandas and Flower is paid once instead of once per case.

Usage: ``python driver.py < cases.json > results.json``, where cases.json is a list of
``{"args": [...], "cwd": "..."}`` and each result is ``{"returncode", "stdout", "stderr", "seconds"}``.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback

TIMEOUT = 90.0


# What the commands import (some lazily, such as the partitioning step's Hugging Face datasets).
PRELOAD = (
    "datasets", "flwr_datasets.partitioner", "fedsynth.cli", "fedsynth.server.checkpoints", "fedsynth.server.synthesis",
    "fedsynth.simulations.runner", "fedsynth.simulations.setup", "fedsynth.tabular.draft",
)  # fmt: skip


def preload() -> None:
    """Import what the commands import, without running anything (no threads exist before fork)."""
    for name in PRELOAD:
        importlib.import_module(name)


def child(args: list[str], cwd: str, out_fd: int, err_fd: int) -> None:
    """In the forked process: become ``fedsynth ARGS`` and exit with its code."""
    code = 1
    try:
        os.chdir(cwd)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.argv = ["fedsynth", *args]
        from fedsynth.cli import main

        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run(args: list[str], cwd: str) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            child(args, cwd, out.fileno(), err.fileno())
        status = None
        while status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = raw
            elif time.monotonic() - started > TIMEOUT:
                os.kill(pid, signal.SIGKILL)
                status = os.waitpid(pid, 0)[1]
            else:
                time.sleep(0.01)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return {
            "returncode": os.waitstatus_to_exitcode(status),
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
            "seconds": seconds,
        }


def main() -> None:
    cases = json.load(sys.stdin)
    preload()
    results = [run(case["args"], case["cwd"]) for case in cases]
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
