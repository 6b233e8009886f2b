"""SIGTERM (``kill``, a scheduler's time limit, a cancelled CI job) stops a run the way Ctrl-C does.

Its default action would end ``fedsynth simulate`` at once and leave the SuperLink, the ServerApp
and the Ray workers it started running. The command handles it as an interrupt instead, so the
same clean-up stops every Flower process it started, by PID.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsynth.simulations.runner import processes_matching, stop_processes
from fedsynth.tabular.schema import dump_schema
from tests.process_marks import marked_env, marked_flower_processes, new_mark

pytestmark = pytest.mark.e2e
FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")
MARK = new_mark("FEDSYNTH_SIGTERM_TEST")


def wait_until(condition, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return condition()


def test_sigterm_stops_every_flower_process_the_run_started(tmp_path, small_table, small_schema):
    data, schema = tmp_path / "people.csv", tmp_path / "people.yaml"
    small_table.to_csv(data, index=False)
    dump_schema(small_schema, schema)
    # Far more rounds than the test waits for: the run is still going when the signal comes.
    run = subprocess.Popen(
        [FEDSYNTH, "simulate", "--data", str(data), "--schema", str(schema), "--partition", "iid", "--clients", "2",
         "--rounds", "200", "--local-steps", "2", "--out", str(tmp_path / "run"), "--set", "batch-size=32"],
        env=marked_env(MARK), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ray_started = wait_until(lambda: bool(marked_flower_processes(MARK) & set(processes_matching("raylet"))), 240)
        assert ray_started, "the run never started Ray"
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=90)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    all_stopped = wait_until(lambda: not marked_flower_processes(MARK), 20)
    left = sorted(marked_flower_processes(MARK))
    stop_processes(left)  # so that a failing run of this test leaves nothing behind either
    assert all_stopped, f"Flower or Ray processes left running after SIGTERM: {left}"
    assert run.returncode != 0 and "Traceback" not in stderr, stderr[-2000:]
