"""The server's per-round timer: named parts, and what they leave over."""

from __future__ import annotations

import time

import pytest

from fedsynth.server.round_timer import RoundTimer


def test_parts_add_up_to_the_total_with_the_rest_as_other():
    timer = RoundTimer()
    with timer.part("exchange"):
        time.sleep(0.02)
    with timer.part("exchange"):  # a part entered twice is summed
        time.sleep(0.01)
    time.sleep(0.01)
    parts = timer.finish()
    assert parts["exchange"] >= 0.03
    assert parts["other"] >= 0.01
    assert parts["exchange"] + parts["other"] == pytest.approx(parts["total"])


def test_a_part_that_raises_is_still_timed():
    timer = RoundTimer()
    with pytest.raises(ValueError), timer.part("validator"):
        raise ValueError("boom")
    assert "validator" in timer.finish()
