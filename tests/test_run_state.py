"""The run state a resume starts from: named fields that survive a save, and earlier state files still read."""

from __future__ import annotations

import json

import pytest

from fedsynth.core.errors import CheckpointError
from fedsynth.server.run_state import STATE_FILE, ClientLevelState, RunState
from fedsynth.strategies.gan_fedavg import RoundLog


def test_every_field_survives_a_save(tmp_path):
    state = RunState(completed_round=3, checkpoint="round-003.pt", ledgers={"a": {"epsilon": 1.0}},
                     history=[RoundLog(round=1, aggregated=["a"])], round_seconds=[1.5], round_parts=[{"x": 1.0}],
                     resumed_at=[2], measurement={"sites": ["a"]}, validator={"lr_scale": 0.5},
                     client_level=ClientLevelState(sites=4, releases=3), secure_rounds=[{"round": 1}])  # fmt: skip
    state.save(tmp_path)
    assert RunState.load(tmp_path) == state
    assert json.loads((tmp_path / STATE_FILE).read_text())["format"] == "fedsynth-run-state/2"


def test_a_state_written_before_the_named_fields_still_resumes(tmp_path):
    old = {"format": "fedsynth-run-state/1", "completed_round": 2, "checkpoint": "round-002.pt", "ledgers": {},
           "history": [], "round_seconds": [1.0, 1.0], "resumed_at": [],
           "extra": {"marginals": {"sites": ["a"]}, "validator": {"lr_scale": 1.0}, "round_parts": [{"x": 1.0}],
                     "client_dp": {"sites": 3, "releases": 2}, "secure_aggregation": [{"round": 1}]}}  # fmt: skip
    (tmp_path / STATE_FILE).write_text(json.dumps(old))
    state = RunState.load(tmp_path)
    assert state.measurement == {"sites": ["a"]} and state.validator == {"lr_scale": 1.0}
    assert state.client_level == ClientLevelState(3, 2) and state.secure_rounds == [{"round": 1}]
    assert state.round_parts == [{"x": 1.0}] and state.completed_round == 2


def test_a_foreign_or_broken_state_is_a_one_line_error(tmp_path):
    (tmp_path / STATE_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a fedsynth run state"):
        RunState.load(tmp_path)
    (tmp_path / STATE_FILE).write_text(json.dumps({"format": "fedsynth-run-state/2", "checkpoint": "x"}))
    with pytest.raises(CheckpointError, match="missing or invalid"):
        RunState.load(tmp_path)
