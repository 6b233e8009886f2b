"""``report.md``: the run's report in plain language, with PNG plots, for a privacy officer.

Reads the dictionary written as ``report.json`` (``reporting.run_report.build_report``, plus the
optional ``validator``, ``sovereignty`` and ``release`` sections) and writes
``out_dir/report.md`` and ``out_dir/plots/*.png``. Every optional section may be
missing (a report from an older run): the text then says it was not recorded.
Plots use Matplotlib's Agg canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PLOTS = "plots"


# ---------------------------------------------------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------------------------
def epsilon_series(report: Mapping[str, Any]) -> dict[str, tuple[list[int], list[float]]]:
    """Per site: the rounds it reported in and its cumulative ε after each."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for entry in report.get("rounds") or []:
        for site, metrics in (entry.get("sites") or {}).items():
            if isinstance(metrics, Mapping) and metrics.get("epsilon") is not None:
                rounds, values = series.setdefault(site, ([], []))
                rounds.append(int(entry["round"]))
                values.append(float(metrics["epsilon"]))
    return dict(sorted(series.items()))


def _plot_epsilon(report: Mapping[str, Any], path: Path) -> bool:
    series = epsilon_series(report)
    if not series:
        return False
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    styles = ("-", "--", "-.", ":")
    markers = ("o", "s", "^", "D", "v", "P", "X", "*")
    width = 0.3  # sites that spend alike would draw one line: each is shifted a little sideways
    for i, (site, (rounds, values)) in enumerate(series.items()):
        shift = (i - (len(series) - 1) / 2) * width / max(len(series), 1)
        ax.plot([r + shift for r in rounds], values, linestyle=styles[i % len(styles)],
                marker=markers[i % len(markers)], label=site)  # fmt: skip
    target = (report.get("privacy") or {}).get("epsilon_target")
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", label=f"budget ε = {target:g}")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("ε spent so far")
    ax.set_title("Privacy spent per site")
    ax.legend(fontsize="small")
    _save(fig, path)
    return True


def _plot_validator(records: Sequence[Mapping[str, Any]], path: Path) -> bool:
    if not records:
        return False
    rounds = [r["round"] for r in records]
    # Every metric the collapse rule judges, so that a flag in the table has its curve here.
    panels = (
        ("lowest category coverage", [r["health"].get("coverage_min") for r in records], (0, 1.05)),
        ("lowest category entropy", [r["health"].get("entropy_min") for r in records], (0, 1.05)),
        ("lowest numeric spread", [r["health"].get("spread_min") for r in records], (0, 0.55)),
        ("duplicate rows (share)", [r["health"].get("duplicate_share") for r in records], (0, 1.05)),
        ("distinct clusters", [r["health"].get("clusters") for r in records], None),
        ("health score", [r.get("score") for r in records], (0, 1.05)),
    )
    fig = Figure(figsize=(11, 6))
    for i, (title, values, limits) in enumerate(panels, start=1):
        ax = fig.add_subplot(2, 3, i)
        points = [(x, y) for x, y in zip(rounds, values, strict=True) if y is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o")
        bad = [(x, y) for (x, y), r in zip(zip(rounds, values, strict=True), records, strict=True)
               if y is not None and not r["healthy"]]  # fmt: skip
        if bad:
            ax.scatter(*zip(*bad, strict=True), color="red", marker="x", s=80, zorder=3, label="collapse flagged")
            ax.legend(fontsize="small")
        if limits:
            ax.set_ylim(*limits)
        for r in records:
            if r.get("action") == "rollback":
                ax.axvline(r["round"], color="orange", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, path)
    return True


# ---------------------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------------------
def _summary(report: Mapping[str, Any]) -> list[str]:
    privacy = report.get("privacy") or {}
    validator, release = report.get("validator"), report.get("release")
    lines = ["## Summary", ""]
    lines.append(f"- Training rounds completed: {report.get('rounds_completed', 'n/a')}.")
    if privacy and privacy.get("differentially_private") is False:
        lines.append(f"- **{privacy.get('warning', 'NOT differentially private')}**.")
    elif privacy:
        lines.append(
            f"- Highest privacy loss of any site: ε = {_num(privacy.get('epsilon_max'))} "
            f"(budget ε = {_num(privacy.get('epsilon_target'))}, δ = {privacy.get('delta', 'n/a')})."
        )
    measurement = privacy.get("measurement") or {}
    if measurement.get("released"):
        again = " and again inside a SecAgg+ sum in the first selection round"
        lines.append(
            f"- DP histograms: {len(measurement.get('sites') or [])} site(s) released their one-way histograms"
            + (f" and {len(measurement.get('pairs') or [])} two-way one(s)" if measurement.get("pairs") else "")
            + " in round 0"
            + (again if measurement.get("secure_one_way_noise_std_per_count") else "")
            + f"; all DP measurements spend {_pct(measurement.get('budget_fraction'))} of ε as if alone; the released "
            "table is built from them (post-processing)."
        )
    if validator:
        lines += _collapse_summary(validator, release)
    else:
        lines.append("- Mode collapse: not monitored in this run (no validator section).")
    if release:
        lines.append(
            f"- Release of the synthetic table: **{'APPROVED' if release.get('approved') else 'WITHHELD'}** "
            "(judged on the table as released: the policy's rules and the sites' DP check for copied rows; "
            "the release rules do not judge fidelity)."
        )
    else:
        lines.append("- Release of the synthetic table: no release decision recorded (no release section).")
    return [*lines, ""]


def _collapse_summary(validator: Mapping[str, Any], release: Mapping[str, Any] | None) -> list[str]:
    """The collapse verdicts, each with the table it judged, and what they mean beside the release decision."""
    final = validator.get("final") or {}
    collapsed = final.get("collapsed_rounds") or []
    text = f"flagged in round(s) {', '.join(map(str, collapsed))}" if collapsed else "never flagged"
    lines = [
        f"- Mode collapse of the **raw generator** (its sample after each round, before calibration): {text}; "
        f"final verdict **{final.get('verdict', 'n/a')}**."
    ]
    released = validator.get("released_table") or {}
    if released.get("judged"):
        state = "healthy" if released.get("healthy") else "collapsed (" + "; ".join(released.get("reasons", [])) + ")"
        lines.append(f"- Mode collapse of the **released table** (after calibration and the policy): **{state}**.")
    approved = bool(release and release.get("approved"))
    raw_collapsed = final.get("verdict") in ("collapsed", "stopped")
    if approved and raw_collapsed and released.get("healthy"):
        lines.append(
            "- Both hold: the generator on its own collapsed, but calibration to the DP histograms spread the "
            "released table's columns again, and that table passes the collapse rule; the release was approved on "
            "its own rules. The relations between columns still come from the collapsed generator: check them "
            "(`fedsynth evaluate`) before relying on them."
        )
    elif approved and released.get("judged") and not released.get("healthy"):
        lines.append(
            "- **The released table itself shows signs of collapse.** It was approved because the release rules "
            "judge privacy and the policy, not fidelity: review it before use."
        )
    elif approved and raw_collapsed:
        lines.append(
            "- The raw generator collapsed and the release was approved: the release rules judge privacy and the "
            "policy, not fidelity; review the table before use."
        )
    return lines


def _privacy(report: Mapping[str, Any], plot: bool) -> list[str]:
    privacy = report.get("privacy") or {}
    lines = [
        "## Privacy spent per site",
        "",
        "Each site trains on its own rows under differential privacy. ε (epsilon) measures how much one person's "
        "row can change what leaves the site: lower is more private. δ is the small chance that the guarantee does "
        "not hold. Values come from each site's own privacy accountant (Opacus).",
        "",
    ]
    sites = privacy.get("sites") or {}
    shared = bool(privacy.get("distributed_noise"))
    if sites:
        lines += _table(
            ["site", "ε spent", *(["ε if a secure sum were opened"] if shared else []), "δ", "training steps",
             "budget used up"],
            [
                [name, _num(s.get("epsilon")), *([_num(s.get("epsilon_if_secure_sums_opened"))] if shared else []),
                 s.get("delta", "n/a"), s.get("steps", "n/a"), "yes" if s.get("budget_exhausted") else "no"]
                for name, s in sites.items()
            ],
        )  # fmt: skip
        lines.append("")
    if shared:
        lines += [f"Distributed noise: {privacy['distributed_noise']}.", ""]
    else:
        lines += ["No per-site privacy figures were recorded.", ""]
    if plot:
        lines += [f"![ε spent per site and round]({PLOTS}/epsilon.png)", ""]
    disclosed = privacy.get("disclosed_without_dp")
    if disclosed:
        lines += [f"Shared without differential privacy: {'; '.join(disclosed)}.", ""]
    return lines


def _validator(report: Mapping[str, Any], plot: bool) -> list[str]:
    lines = ["## Training health (mode-collapse monitor)", ""]
    validator = report.get("validator")
    if not validator:
        return [*lines, "Not recorded: this run did not use the validator.", ""]
    lines += [
        "After every round the server draws a synthetic sample and checks it for *mode collapse*: the generator "
        "producing only a few kinds of rows. It uses the synthetic sample only, never real data. "
        "*Coverage* is the share of each column's allowed categories that appear (lowest column shown); "
        "*duplicate rows* is the share of rows repeating another; *clusters* counts distinct kinds of rows; "
        "the *health score* (0 to 1, 1 = no sign of collapse) chooses which round's model is kept. "
        "In the plots, red crosses mark flagged rounds and dotted lines mark rollbacks.",
        "",
    ]
    records = validator.get("rounds") or []
    lines += _table(
        ["round", "coverage", "duplicate rows", "clusters", "health score", "verdict", "action"],
        [
            [r["round"], _pct(r["health"].get("coverage_min")), _pct(r["health"].get("duplicate_share")),
             r["health"].get("clusters", "n/a"), _num(r.get("score")), "healthy" if r["healthy"] else "collapse",
             r.get("action", "n/a")]
            for r in records
        ],
    )  # fmt: skip
    lines.append("")
    if plot:
        lines += [f"![Training health per round]({PLOTS}/validator.png)", ""]
    events = [r for r in records if not r["healthy"]]
    if events:
        lines += ["What happened:", ""]
        for r in events:
            what = {
                "rollback": f"the model was rolled back to round {r.get('rollback_to')} and training continued with "
                f"the learning rate scaled by {_num(r.get('lr_scale'))}",
                "stop": "training was stopped",
                "record": "recorded; training continued",
            }.get(r.get("action"), str(r.get("action")))
            lines.append(f"- Round {r['round']}: {'; '.join(r.get('reasons') or [])}. Action: {what}.")
        lines.append("")
    final = validator.get("final") or {}
    action = (validator.get("config") or {}).get("action", "record")
    if final.get("stopped_at") or action == "stop":
        lines += [f"Model kept (best round by health score): round {final.get('best_round', 'n/a')}.", ""]
    else:
        lines += [
            f"Model kept: the last round's. Best round by health score: {final.get('best_round', 'n/a')} "
            f"(the validator's action is '{action}', so it only records).",
            "",
        ]
    rule = (validator.get("config") or {}).get("rule")
    if rule:
        lines += ["Collapse rule in force: " + ", ".join(f"{k} = {v}" for k, v in rule.items()) + ".", ""]
    return lines + _site_feedback(validator.get("site_feedback") or {})


def _site_feedback(feedback: Mapping[str, Any]) -> list[str]:
    """The sites' DP fidelity feedback per round, as pooled scores (only when the run asked for it)."""
    if not feedback:
        return []
    lines = [
        "### Fidelity at the sites (DP feedback)",
        "",
        "Scored by the sites against their real rows and released with noise charged to their budgets "
        "(`validator-feedback-every`); 1 = the sample matches. *Shape* is 1 − the KS (numbers) or total-variation "
        "(categories) distance, *coverage* the share of real rows with a sample row nearby. Each score carries "
        "noise of the std shown, so differences smaller than about twice it mean nothing.",
        "",
    ]
    columns = sorted({k for entry in feedback.values() for k in entry.get("values", {})})
    rounds = sorted(feedback, key=int)
    lines += _table(
        ["round", *columns, "noise std", "sites"],
        [
            [r, *(_num(feedback[r].get("values", {}).get(c)) for c in columns), _num(feedback[r].get("noise_std")),
             len(feedback[r].get("sites", []))]
            for r in rounds
        ],
    )  # fmt: skip
    return [*lines, ""]


_RULE_NAMES = {
    "participation": "Only sites from allowed jurisdictions took part",
    "epsilon_caps": "Each site stayed within its jurisdiction's privacy cap",
    "no_copies": "No sign that synthetic rows copy real rows (DP estimate)",
    "min_distance": "No sign that synthetic rows come too close to real rows (DP estimate)",
    "small_cells": "Rare combinations of identifying columns removed or generalised",
    "forbidden_columns": "Forbidden columns left out",
    "forbidden_values": "Forbidden values left out",
    "non_empty": "Something is left to release",
}


def _verdict(rule: Mapping[str, Any]) -> str:
    if not rule.get("required", True):
        return "not required"
    return "PASSED" if rule.get("passed") else "FAILED"


def _figures(name: str, rule: Mapping[str, Any]) -> str:
    """The rule's figures in words."""
    if not rule.get("required", True):
        return "the policy does not ask for this check"
    if name in ("no_copies", "min_distance"):
        sites = ", ".join(f"{s}: {n}" for s, n in (rule.get("by_site") or {}).items()) or "no site reported"
        if "noisy_total" not in rule:  # a report from before the check was DP: exact counts
            text = f"{rule.get('total', 0)} row(s) found ({sites})"
        else:
            text = (
                f"DP estimate: {rule['noisy_total']} real row(s) (noisy sum over the sites: {sites}; noise std "
                f"{_num(rule.get('noise_std'), 1)}, passes at or below {_num(rule.get('tolerance'), 1)}; "
                "cannot show that no row is copied)"
            )
        if name == "min_distance":
            text += f"; threshold {rule.get('threshold')}"
        if rule.get("missing_sites"):
            text += f"; no answer from {', '.join(rule['missing_sites'])}"
        return text
    if name == "small_cells":
        return (
            f"k = {rule.get('k')} over {', '.join(rule.get('quasi_identifiers', []))}; "
            f"{rule.get('small_cells_found', 0)} rare combination(s) found, {rule.get('rows_suppressed', 0)} row(s) "
            f"removed, {rule.get('rows_generalised', 0)} row(s) generalised to '*'; smallest group now "
            f"{rule.get('smallest_cell')}"
        )
    if name == "forbidden_columns":
        return f"dropped: {', '.join(rule.get('dropped') or []) or 'none present'}"
    if name == "forbidden_values":
        removed = rule.get("removed_by_value") or {}
        detail = ", ".join(f"{k}: {v}" for k, v in removed.items()) or "none generated"
        return f"{rule.get('rows_removed', 0)} row(s) removed ({detail})"
    if name == "participation":
        excluded = rule.get("excluded") or {}
        text = f"admitted: {', '.join(rule.get('admitted') or []) or 'none'}"
        if excluded:
            text += "; excluded: " + ", ".join(f"{s} ({why})" for s, why in excluded.items())
        return text
    if name == "epsilon_caps":
        sites = rule.get("sites") or {}
        return ", ".join(f"{s}: ε {_num(v.get('epsilon'))} of cap {_num(v.get('cap'))}" for s, v in sites.items())
    if name == "non_empty":
        return f"{rule.get('rows', 0)} row(s) to release"
    return ", ".join(f"{k} = {v}" for k, v in rule.items() if k not in ("passed", "required"))


def _sovereignty(report: Mapping[str, Any]) -> list[str]:
    lines = ["## Data-sovereignty rules", ""]
    section = report.get("sovereignty")
    if not section:
        return [*lines, "Not recorded: this run had no data-sovereignty policy.", ""]
    policy = section.get("policy") or {}
    lines += [
        f"Policy file: `{policy.get('source', 'n/a')}`. Fingerprint (SHA-256 digest; identical for every party that "
        f"agreed to the same policy): `{policy.get('digest', 'n/a')}`.",
        "",
        "Checks against real data ran at each site on its own rows; only counts with differential-privacy noise "
        "left the sites.",
        "",
    ]
    rules = section.get("rules") or {}
    lines += _table(
        ["rule", "result", "figures"],
        [[_RULE_NAMES.get(name, name), _verdict(rule), _figures(name, rule)] for name, rule in rules.items()],
    )
    return [*lines, ""]


def _release(report: Mapping[str, Any]) -> list[str]:
    lines = ["## Release decision", ""]
    release = report.get("release")
    if not release:
        return [*lines, "Not recorded: this run made no release decision.", ""]
    if release.get("approved"):
        lines.append(
            f"**APPROVED.** Every rule passed; the synthetic table was released "
            f"({release.get('rows', 'n/a')} rows, file `{release.get('file') or 'n/a'}`)."
        )
    else:
        lines += ["**WITHHELD.** The synthetic table was not released because:", ""]
        lines += [f"- {reason}" for reason in release.get("reasons") or ["(no reason recorded)"]]
    cells = ((report.get("sovereignty") or {}).get("rules") or {}).get("small_cells") or {}
    if cells.get("rows_generalised"):
        lines += [
            "",
            f"Note: in {cells['rows_generalised']} row(s) rare values of "
            f"{', '.join(cells.get('quasi_identifiers', []))} "
            'were replaced by `*` (generalised). `*` means "withheld", not a category of the published schema.',
        ]
    return [*lines, ""]


def write_markdown_report(report: Mapping[str, Any], out_dir: Path) -> Path:
    """Write ``out_dir/report.md`` and its plots under ``out_dir/plots/``; returns the path of report.md."""
    out_dir = Path(out_dir)
    plots = out_dir / PLOTS
    plots.mkdir(parents=True, exist_ok=True)
    has_epsilon = _plot_epsilon(report, plots / "epsilon.png")
    records = (report.get("validator") or {}).get("rounds") or []
    has_validator = _plot_validator(records, plots / "validator.png")
    lines = [
        "# Synthetic data run report",
        "",
        f"fedsynth {report.get('fedsynth_version', 'n/a')}. This report is generated from `report.json`, "
        "which holds every figure below.",
        "",
        *_summary(report),
        *_privacy(report, has_epsilon),
        *_validator(report, has_validator),
        *_sovereignty(report),
        *_release(report),
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path
