"""The simulation runner's reader thread ends quietly when Flower's output is closed under it (Ctrl-C)."""

from __future__ import annotations

import io
import queue
import threading
from types import SimpleNamespace

from fedsynth.simulations.runner import _pump


def test_the_reader_ends_with_a_marker_when_the_stream_is_closed_under_it():
    stream = io.StringIO("first line\nsecond line\n")
    stream.close()  # what Ctrl-C's clean-up does while the thread still reads: ValueError on the next read
    lines: queue.Queue = queue.Queue()
    errors = []
    previous = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        thread = threading.Thread(target=_pump, args=(SimpleNamespace(stdout=stream), lines))
        thread.start()
        thread.join(5)
    finally:
        threading.excepthook = previous
    assert not errors and lines.get_nowait() is None


def test_the_reader_passes_every_line_then_the_marker():
    lines: queue.Queue = queue.Queue()
    _pump(SimpleNamespace(stdout=io.StringIO("a\nb \n")), lines)
    assert [lines.get_nowait() for _ in range(3)] == ["a", "b", None]
