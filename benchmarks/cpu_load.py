"""How busy the CPUs are: benchmarks check it so that figures taken beside other work are flagged."""

from __future__ import annotations

import time
from pathlib import Path


def cpu_busy(seconds: float = 0.5) -> float:
    """Share of all CPUs busy over ``seconds`` (from /proc/stat): other work skews the timings."""

    def sample() -> tuple[int, int]:
        values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)
