"""Wall time of the default job (`fedsynth simulate` with no arguments), start-up included.

Runs the real command several times in a row, each into a fresh output folder,
and splits each run's wall time with the ServerApp's own timings from
``report.json``: the training rounds, the ServerApp's work before the first
round and after the last (DP histograms, sampling, release checks, report), and
the rest: starting and stopping the SuperLink, the simulation process and Ray,
and `fedsynth`'s own checks before Flower starts.

    python benchmarks/default_job.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")


def run_once() -> dict:
    out = Path(tempfile.mkdtemp(prefix="fedsynth-default-")) / "out"
    started = time.time()
    result = subprocess.run([FEDSYNTH, "simulate", "--out", str(out)], capture_output=True, text=True)
    wall = time.time() - started
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    timings = json.loads((out / "report.json").read_text())["timings"]
    rounds = sum(timings["rounds_seconds"])
    server_app = timings["total_seconds"]
    return {
        "wall_seconds": wall,
        "rounds_seconds": rounds,
        "first_round_seconds": timings["rounds_seconds"][0],
        "server_app_other_seconds": server_app - rounds,
        "outside_server_app_seconds": wall - server_app,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs = []
    for i in range(args.repeats):
        runs.append(run_once())
        print(f"run {i + 1}: {runs[-1]}", flush=True)
    ok = [r for r in runs if "error" not in r]
    if not ok:
        sys.exit("every run failed")
    print(f"\n{'part':<44} {'median':>7} {'min':>7} {'max':>7}")
    for key, label in (
        ("wall_seconds", "whole command (target: under 120 s)"),
        ("rounds_seconds", "training rounds"),
        ("first_round_seconds", "  of which round 1 (warm-up of the workers)"),
        ("server_app_other_seconds", "ServerApp before/after rounds"),
        ("outside_server_app_seconds", "outside the ServerApp (Flower + Ray start/stop)"),
    ):
        values = [r[key] for r in ok]
        print(f"{label:<44} {statistics.median(values):>7.1f} {min(values):>7.1f} {max(values):>7.1f}")
    median_wall = statistics.median(r["wall_seconds"] for r in ok)
    print(f"\ntarget ratio (median wall / 120 s): {median_wall / 120:.2f}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
