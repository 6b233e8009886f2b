"""Crash and resume: the ServerApp process is killed with SIGKILL mid-run.

The run must stop with a clear message, and ``--resume`` must continue from the
last checkpoint with every site's ε continuing from its recorded value.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsynth.privacy.budget import SiteBudget
from fedsynth.privacy.measurement_schedule import MeasurementSchedule
from fedsynth.simulations.runner import processes_matching
from tests.process_marks import marked_env, marked_flower_processes, new_mark

pytestmark = pytest.mark.e2e
FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")
ROUNDS = 5
MARK = new_mark("FEDSYNTH_RESUME_TEST")  # in the environment of every process this test starts
ENV = marked_env(MARK)


def read_state(out: Path) -> dict | None:
    try:
        return json.loads((out / "checkpoints" / "state.json").read_text())
    except (OSError, ValueError):
        return None


def site_epsilons(state: dict) -> dict[str, float]:
    from fedsynth.privacy.budget import SiteBudget

    return {name: SiteBudget.from_state(entry).spent for name, entry in state["ledgers"].items()}


def live_server_apps() -> set[int]:
    """Live ServerApp processes this test started (a sweep or another test may run Flower beside it)."""
    return marked_flower_processes(MARK) & set(processes_matching("flwr-simulation"))


def test_kill_the_server_app_then_resume(tmp_path):
    apps_before = live_server_apps()
    out = tmp_path / "run"
    # Two selection rounds, not 13 (one per HI column): the test is about resuming. The GAN's rows are released
    # (raked to the measured pairs), the path whose raking diagnostics are checked below.
    args = ["--rounds", str(ROUNDS), "--local-steps", "20", "--out", str(out), "--set", "batch-size=128",
            "--set", "measure-pairs=whi:*", "--set", "measure-one-way-weight=2",
            "--set", "select-rounds=2", "--set", "release-from=generator"]  # fmt: skip
    first = subprocess.Popen([FEDSYNTH, "simulate", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=ENV)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline:
        state = read_state(out)
        if state and state["completed_round"] >= 2:
            break
        time.sleep(0.2)
    else:
        first.kill()
        pytest.fail("the first run never completed two rounds")
    killed = sorted(live_server_apps() - apps_before)
    assert killed, "no ServerApp process to kill"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 2, stdout + stderr
    assert "ended unexpectedly" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr

    before = read_state(out)
    crashed_at = before["completed_round"]
    assert 2 <= crashed_at < ROUNDS
    eps_before = site_epsilons(before)
    assert all(e > 0 for e in eps_before.values())

    second = subprocess.run([FEDSYNTH, "simulate", "--resume", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, env=ENV)  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["rounds_completed"] == ROUNDS
    assert report["timings"]["resumed_after_rounds"] == [crashed_at]
    assert len(report["timings"]["rounds_seconds"]) == ROUNDS
    after = {name: site["epsilon"] for name, site in report["privacy"]["sites"].items()}
    print(f"\nkilled after round {crashed_at}; ε then: {eps_before}; ε at the end: {after}")
    assert after.keys() == eps_before.keys()
    for name, eps in after.items():
        assert eps > eps_before[name], f"{name}: ε went from {eps_before[name]} to {eps} (reset?)"
        assert eps <= report["privacy"]["epsilon_target"]
    # The steps continue too: a reset would restart the count at the resumed rounds only.
    steps_per_round = 20
    assert all(site["steps"] == ROUNDS * steps_per_round for site in report["privacy"]["sites"].values())
    # Validator-free outputs are the same in form as an uninterrupted run's.
    assert (out / "synthetic.csv").is_file() and (out / "checkpoints" / "final.pt").is_file()
    assert len(list((out / "checkpoints").glob("round-*.pt"))) == ROUNDS
    # The DP histograms were measured (and paid for) once, not again on resume; the release check once, at the end.
    final_state = read_state(out)
    for ledger in final_state["ledgers"].values():
        releases = [z for z, q in zip(ledger["history-noise"], ledger["history-rate"], strict=True) if q == 1.0]
        assert releases.count(ledger["release-check-noise"]) == 1
        schedule = MeasurementSchedule(ledger["measure-noise"], 2, secure_one_way=True)
        parts = [z for z in releases if z != ledger["release-check-noise"]]
        # One-way histograms once in round 0 and once again in the first selection round (secure-measurement,
        # the default), then per selection round a vote and (from the second message on) counts.
        assert parts.count(schedule.one_way_noise) == 1 and parts.count(schedule.secure_one_way_noise) == 1
        assert parts.count(schedule.select_noise) == 2 and parts.count(schedule.clique_noise) <= 2
        assert ledger["measure-spent"] <= 1.0 + 1e-9
    # ... two-way histograms included: kept in the state, used at the end to rake the table.
    measurement = report["privacy"]["measurement"]
    assert len(measurement["pairs"]) == 12 and measurement["histograms"] == 13 + 12
    # Each site's noise per count is its planned noise multiplier x the L2 sensitivity sqrt(13 w^2 + 12)
    # (13 one-way histograms weighted by w = measure-one-way-weight, 12 two-way), divided by w for one-way.
    budgets = [SiteBudget.from_state(ledger) for ledger in final_state["ledgers"].values()]
    weight = 2.0
    schedules = [MeasurementSchedule(b.measure_noise, 2, secure_one_way=True) for b in budgets]
    per_site = [(schedule.one_way_noise * math.sqrt(13 * weight**2 + 12)) ** 2 for schedule in schedules]
    assert measurement["one_way_weight"] == weight
    assert measurement["pair_noise_std_per_count"] == pytest.approx(math.sqrt(sum(per_site)))
    # The one-way histograms measured again: each of the 4 sites adds a third of the variance (z_o sqrt(13))^2
    # (SecAgg+'s threshold: 3 sites); the report's noise is the inverse-variance combination of both releases.
    again = math.sqrt(sum((schedule.secure_one_way_noise * math.sqrt(13)) ** 2 / 3 for schedule in schedules))
    assert measurement["secure_one_way_noise_std_per_count"] == pytest.approx(again)
    round_zero = math.sqrt(sum(per_site)) / weight
    assert measurement["noise_std_per_count"] == pytest.approx((round_zero**-2 + again**-2) ** -0.5)
    # Raking fits the 12 pairs and the selected cliques at once. Independently noised, they need not agree
    # with each other, so IPF cannot meet them all exactly (a clean CI run stopped at 0.024 in one two-way
    # cell): it must at least halve the generator rows' worst two-way gap and end within 5%.
    raking = measurement["raking"]
    after, before = raking["max_marginal_error_after"]["two_way"], raking["max_marginal_error_before"]["two_way"]
    assert after < 0.05 and after < before / 2, (before, after)
    assert live_server_apps() <= apps_before, "a ServerApp process was left running"
