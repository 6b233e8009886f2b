"""report.md: written with its plots for an older report.json and for one with every validator section."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from fedsynth.core.config import RunConfig
from fedsynth.reporting.markdown import epsilon_series, write_markdown_report
from fedsynth.reporting.run_report import build_report, write_json
from fedsynth.sovereignty.policy import parse_policy
from fedsynth.sovereignty.release_gate import apply_release_rules
from fedsynth.sovereignty.rules import release_section, sovereignty_section
from fedsynth.strategies.gan_fedavg import RoundLog
from fedsynth.tabular.schema import parse_schema
from fedsynth.validator.collapse import ValidatorHistory, synthetic_health

PNG = b"\x89PNG\r\n\x1a\n"
SCHEMA = parse_schema(
    {
        "columns": [
            {"name": "x", "type": "continuous", "min": 0, "max": 1},
            {"name": "region", "type": "categorical", "categories": ["north", "south"]},
        ]
    },
    source="md.yaml",
)


def run_report(tmp_path) -> dict:
    """A report.json as ``reporting.run_report.build_report`` writes it, read back from disk."""
    config = RunConfig(rounds=3)
    history = []
    for r in (1, 2, 3):
        sites = {name: {"epsilon": 0.3 * r + bump, "num-examples": 100, "steps": 10 * r} for name, bump in
                 (("site-a", 0.0), ("site-b", 0.05))}  # fmt: skip
        history.append(RoundLog(round=r, sites=sites, aggregated=sorted(sites)))
    final = {name: {**m, "delta": 1e-5, "budget-exhausted": 0} for name, m in history[-1].sites.items()}
    report = build_report(config, final, history, {"rounds_seconds": [1.0, 1.1, 0.9]}, {"synthetic": "synthetic.csv"})
    write_json(tmp_path / "report.json", report)
    return json.loads((tmp_path / "report.json").read_text())


def test_older_report_without_validator_sections(tmp_path):
    report = run_report(tmp_path)
    assert epsilon_series(report)["site-b"] == ([1, 2, 3], [0.35, 0.65, 0.95])
    path = write_markdown_report(report, tmp_path / "md")
    text = path.read_text()
    assert path == tmp_path / "md" / "report.md"
    assert (tmp_path / "md" / "plots" / "epsilon.png").read_bytes().startswith(PNG)
    assert not (tmp_path / "md" / "plots" / "validator.png").exists()
    assert "| site-b | 0.950 |" in text
    assert "![ε spent per site and round](plots/epsilon.png)" in text
    assert "not monitored in this run" in text
    assert "Not recorded: this run had no data-sovereignty policy." in text
    assert "no release decision recorded" in text


def test_full_report_with_collapse_rules_and_a_withheld_release(tmp_path):
    report = run_report(tmp_path)
    rng = np.random.default_rng(0)
    healthy = pd.DataFrame({"x": rng.uniform(0, 1, 200), "region": rng.choice(["north", "south"], 200)})
    collapsed = pd.DataFrame({"x": [0.5] * 200, "region": ["north"] * 200})
    validator = ValidatorHistory(action="rollback")
    for r, table in ((1, healthy), (2, healthy), (3, collapsed)):
        validator.observe(r, synthetic_health(table, SCHEMA))
    policy = parse_policy(
        {"allowed_jurisdictions": ["j1"], "release": {"small_cells": {"quasi_identifiers": ["region"], "k": 2}}},
        source="policy.yaml",
    )
    answer = {"copied_noisy": 75, "noise_std": 20.0, "synthetic_rows": 200, "columns_compared": ["x", "region"]}
    counts = {"site-a": answer}
    decision = apply_release_rules(healthy, policy, SCHEMA, counts)
    feedback = {"2": {"sites": ["site-a"], "refused": [], "values": {"shape:x": 0.91, "coverage": 0.5},
                      "noise_std": 0.02, "failed": {}}}  # fmt: skip
    report.update(
        validator={**validator.to_dict(), "site_feedback": feedback},
        sovereignty=sovereignty_section(policy, decision),
        release=release_section(decision, "synthetic.csv"),
    )
    write_json(tmp_path / "report.json", report)  # every section must survive JSON
    text = write_markdown_report(json.loads((tmp_path / "report.json").read_text()), tmp_path).read_text()
    assert (tmp_path / "plots" / "validator.png").read_bytes().startswith(PNG)
    assert (tmp_path / "plots" / "epsilon.png").read_bytes().startswith(PNG)
    assert "![Training health per round](plots/validator.png)" in text
    assert "| 3 | 50.0% | 99.5% | 1 |" in text  # round 3: one of two regions, 199 of 200 rows repeated
    assert "- Round 3: column 'region': entropy 0.000 < 0.050" in text
    assert "rolled back to round 2" in text
    assert "### Fidelity at the sites (DP feedback)" in text
    assert "| 2 | 0.500 | 0.910 | 0.020 | 1 |" in text  # coverage, shape:x, noise std, one site
    assert "Model kept: the last round's. Best round by health score: 2" in text
    assert policy.digest in text
    assert (
        "| No sign that synthetic rows copy real rows (DP estimate) | FAILED | DP estimate: 75 real row(s) (noisy sum "
        "over the sites: site-a: 75; noise std 20.0, passes at or below 60.0; cannot show that no row is copied) |"
    ) in text
    assert "**WITHHELD.**" in text
    assert (
        "- no_copies: noisy total 75 (DP estimate of real rows with an identical synthetic row) is above the "
        "tolerance 60.0 (3 x noise std 20.0; by site: site-a: 75)"
    ) in text
    assert "Shared without differential privacy" not in text


def test_a_collapsed_generator_and_an_approved_table_are_both_explained(tmp_path):
    from fedsynth.server.federation import _released_health
    from fedsynth.validator.collapse import CollapseRule

    report = run_report(tmp_path)
    rng = np.random.default_rng(1)
    collapsed = pd.DataFrame({"x": [0.5] * 200, "region": ["north"] * 200})  # the raw generator's sample
    released = pd.DataFrame({"x": rng.uniform(0, 1, 500), "region": rng.choice(["north", "south"], 500)})
    validator = ValidatorHistory(action="record")
    for r in (1, 2, 3):
        validator.observe(r, synthetic_health(collapsed, SCHEMA))
    policy = parse_policy({"allowed_jurisdictions": ["j1"]}, source="policy.yaml")
    decision = apply_release_rules(released, policy, SCHEMA, {"site-a": {"copied_noisy": 0, "noise_std": 20.0,
                                   "synthetic_rows": 500, "columns_compared": ["x", "region"]}})  # fmt: skip
    assert decision.approved
    report["privacy"]["measurement"] = {"released": True, "sites": ["site-a", "site-b"], "budget_fraction": 0.5}
    report.update(
        validator={**validator.to_dict(), "released_table": _released_health(released, SCHEMA, CollapseRule(), 0)},
        sovereignty=sovereignty_section(policy, decision),
        release=release_section(decision, "synthetic.csv"),
    )
    text = write_markdown_report(report, tmp_path).read_text()
    summary = text.split("## Privacy spent per site")[0]
    assert "Mode collapse of the **raw generator** (its sample after each round, before calibration)" in summary
    assert "final verdict **collapsed**" in summary
    assert "Mode collapse of the **released table** (after calibration and the policy): **healthy**" in summary
    assert "Both hold: the generator on its own collapsed" in summary
    assert "**APPROVED** (judged on the table as released" in summary
    assert "DP histograms: 2 site(s) released their one-way histograms in round 0;" in summary
    report["privacy"]["measurement"]["secure_one_way_noise_std_per_count"] = 12.5
    text = write_markdown_report(report, tmp_path).read_text()
    assert "in round 0 and again inside a SecAgg+ sum in the first selection round;" in text
    # A released table that itself collapsed is approved only with a warning that says so.
    report["validator"]["released_table"] = _released_health(collapsed, SCHEMA, CollapseRule(), 0)
    text = write_markdown_report(report, tmp_path).read_text()
    assert "**The released table itself shows signs of collapse.**" in text and "Both hold" not in text


def test_the_html_report_is_one_self_contained_file(tmp_path):
    from fedsynth.reporting.html import write_html_report

    report = run_report(tmp_path)
    validator = ValidatorHistory(action="record")
    rng = np.random.default_rng(2)
    sample = pd.DataFrame({"x": rng.uniform(0, 1, 200), "region": rng.choice(["north", "south"], 200)})
    validator.observe(1, synthetic_health(sample, SCHEMA))
    report.update(validator=validator.to_dict())
    markdown = write_markdown_report(report, tmp_path)
    page = write_html_report(markdown).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<h1>Synthetic data run report</h1>" in page
    assert page.count('src="data:image/png;base64,') == 2  # ε per site and training health, embedded
    assert 'src="plots/' not in page and "](plots/" not in page  # nothing refers to another file
    assert "<table>" in page and "<th>site</th>" in page and "<strong>" in page
    # Markdown special characters in a value stay text.
    (tmp_path / "odd.md").write_text("# a <script>x</script>\n\n- **ε** < 1 & `a|b`\n", encoding="utf-8")
    odd = write_html_report(tmp_path / "odd.md").read_text(encoding="utf-8")
    assert "<script>" not in odd and "&lt;script&gt;" in odd and "&lt; 1 &amp;" in odd
