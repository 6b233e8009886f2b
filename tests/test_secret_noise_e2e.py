"""End to end: the released noise is secret unless a run asks, in so many words, for reproducible noise.

Two runs with the same data, configuration and ``seed`` have identical reports and configurations
apart from timings. If the noise were any function of what the report or the configuration holds
(the seed, the site names, the round numbers), the two runs would release the same noisy histograms.
They must not. With ``reproducible-noise = true`` they must, and the run must say it is NOT DP.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedsynth.client.wire_log import WIRE_LOG_ENV
from fedsynth.server.checkpoints import load_checkpoint
from fedsynth.tabular.schema import dump_schema
from tests.process_marks import marked_env, marked_flower_processes, new_mark
from tests.test_federation_in_process import federate
from tests.test_site_messages import ALLOWED

pytestmark = pytest.mark.e2e
FEDSYNTH = str(Path(sys.executable).parent / "fedsynth")
MARK = new_mark("FEDSYNTH_SECRET_NOISE_TEST")


def run(
    tmp_path: Path, name: str, data: Path, schema: Path, *extra: str, wire_log: Path | None = None
) -> tuple[dict, np.ndarray, str]:
    out = tmp_path / name
    env = marked_env(MARK)
    if wire_log is not None:
        env[WIRE_LOG_ENV] = str(wire_log)
    result = subprocess.run(
        [FEDSYNTH, "simulate", "--data", str(data), "--schema", str(schema), "--partition", "iid",
         "--clients", "2", "--rounds", "1", "--local-steps", "2", "--seed", "7", "--rows", "50",
         "--out", str(out), "--set", "batch-size=32", *extra],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    return report, released_histograms(out), result.stdout


def released_histograms(out: Path) -> np.ndarray:
    """The pooled noisy histograms a run calibrated to, as its final checkpoint keeps them."""
    released = load_checkpoint(out / "checkpoints" / "final.pt")["extra"]["calibration"]["marginals"]
    return np.concatenate([np.asarray(p, dtype=float) for p in released["probabilities"]])


# A SecAgg+ stage reply (secure-measurement: the selection counts): Flower's stage record, and in the collect
# stage the legacy FitRes with its arrays emptied (the masked counts are bytes in the stage record).
SECURE_STAGE_ALLOWED = {
    "secaggplus_configs": {"pk1", "pk2", "ctxts", "dsts", "masked_params", "nids", "shares"},
    "fitres.metrics": ALLOWED["select"]["metrics"],
    "fitres.num_examples": {"num_examples"},
    "fitres.parameters": set(),
    "fitres.status": {"code", "message"},
    "site": ALLOWED["select"]["site"],
}


def check_secure_stage(entry: dict) -> bool:
    """Check a SecAgg+ stage reply against the list; True for the collect stage (the one holding counts)."""
    for record, described in entry["records"].items():
        allowed = SECURE_STAGE_ALLOWED[record]
        assert set(described["keys"]) <= allowed, f"secure stage/{record}: {described['keys']} not listed"
    return "fitres.metrics" in entry["records"]


def check_wire_log(path: Path, sites: int, rounds: int) -> None:
    """Everything the sites of a real federation sent, by record and key, against docs/privacy.md's list."""
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    kinds = {"query": "measure", "train": "train", "evaluate": "release-check"}
    seen = {kind: 0 for kind in kinds.values()}
    for entry in entries:
        assert "error" not in entry, entry
        if "secaggplus_configs" in entry["records"]:
            seen["select"] = seen.get("select", 0) + int(check_secure_stage(entry))
            continue
        kind = kinds[entry["message_type"].split(".")[0]]
        if kind == "measure" and "vote" in entry["records"].get("metrics", {}).get("keys", []):
            kind = "select"  # a selection round's reply (a query with purpose select)
            # the cliques asked for, and in the first round the one-way histograms again when not in a secure sum
            assert all(k.startswith(("clique:", "one-way:")) for k in entry["records"]["histograms"]["keys"]), entry
        seen[kind] = seen.get(kind, 0) + 1
        assert set(entry["records"]) == set(ALLOWED[kind]), entry
        for record, described in entry["records"].items():
            allowed = ALLOWED[kind][record]
            if allowed is None:  # the packed model
                continue
            if (kind, record) == ("train", "metrics"):
                allowed = allowed | {"site-seconds"}  # simulated sites only (docs/privacy.md)
            keys = set(described["keys"])
            assert keys <= allowed, f"{kind}/{record}: {keys - allowed} not listed in docs/privacy.md"
    selections = seen.pop("select", 0)
    assert seen == {"measure": sites, "train": sites * rounds, "release-check": sites}, seen
    assert selections % sites == 0, selections  # every site answers every selection round


def test_same_seed_same_data_releases_different_noise_unless_asked(tmp_path, small_schema, small_table):
    data, schema = tmp_path / "people.csv", tmp_path / "people.yaml"
    small_table.to_csv(data, index=False)
    dump_schema(small_schema, schema)

    wire_log = tmp_path / "wire.jsonl"
    first, first_hist, first_out = run(tmp_path, "a", data, schema, wire_log=wire_log)
    second, second_hist, _ = run(tmp_path, "b", data, schema)
    config_a, config_b = dict(first["config"]), dict(second["config"])
    assert config_a.pop("out") != config_b.pop("out")
    assert config_a == config_b  # everything a reader could regenerate noise from is the same
    assert first["privacy"]["differentially_private"] is True
    assert "ChaCha20" in first["privacy"]["noise_source"]
    assert not np.allclose(first_hist, second_hist), "two runs released the same noisy histograms"
    assert "NOT differentially private" not in first_out
    check_wire_log(wire_log, sites=2, rounds=1)

    assert not marked_flower_processes(MARK), "a Flower process was left running"


def test_reproducible_noise_repeats_and_says_not_dp(tmp_path, small_schema, small_table, caplog, monkeypatch):
    # In-process federations (tests.fake_grid): the same ServerApp and site handlers, without two more
    # Flower start-ups in the suite's time.
    monkeypatch.delenv(WIRE_LOG_ENV, raising=False)
    caplog.set_level("WARNING")
    logging.getLogger("flwr").addHandler(caplog.handler)
    for name in ("c", "d"):
        (tmp_path / name).mkdir()
    try:
        runs = [federate(tmp_path / name, small_table, small_schema, rounds=1, seed=7, **{"reproducible-noise": True})
                for name in ("c", "d")]  # fmt: skip
    finally:
        logging.getLogger("flwr").removeHandler(caplog.handler)
    hists = [released_histograms(out) for _, _, out, _ in runs]
    assert np.array_equal(hists[0], hists[1])
    for report, _, out, _ in runs:
        assert report["privacy"]["differentially_private"] is False
        assert report["privacy"]["epsilon_max"] is None
        assert report["privacy"]["warning"].startswith("NOT differentially private")
        assert "NOT differentially private" in (out / "report.md").read_text()
    assert any("NOT differentially private" in r.getMessage() for r in caplog.records)  # the console's log


def test_privacy_md_names_every_key_of_a_secure_stage_reply():
    text = (Path(__file__).resolve().parents[1] / "docs" / "privacy.md").read_text(encoding="utf-8")
    for record, keys in SECURE_STAGE_ALLOWED.items():
        assert f"`{record}`" in text, record
        for key in keys:
            assert f"`{key}`" in text, f"docs/privacy.md does not list secure stage {record}/{key}"
