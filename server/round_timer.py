"""Where the seconds of a round go on the server: named parts, for the report and the benchmarks.

A round is: the exchange with the sites (sending the model, the sites' work,
receiving the replies), aggregation, the checkpoint, the validator's sample and
scores, and saving the run state. ``exchange`` includes the sites' own compute;
each site reports its handler's seconds (``site-seconds``) so the messaging
cost can be told apart from the work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class RoundTimer:
    """Wall seconds per named part of one round; ``other`` is what no part covered."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - began

    def finish(self) -> dict[str, float]:
        """The parts, ``other`` and ``total`` (seconds since the timer started)."""
        total = time.perf_counter() - self._started
        return {**self.parts, "other": max(0.0, total - sum(self.parts.values())), "total": total}
