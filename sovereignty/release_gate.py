"""The release gate: the final synthetic table is released only if every policy rule passes.

Two steps, both deterministic, on the server (no real data):

1. ``prepare_release`` turns the sampled table into the form that would be released:
   forbidden columns dropped; rows holding a forbidden value removed; small cells
   (quasi-identifier combinations occurring fewer than k times) suppressed (rows
   removed) or generalised. Generalising replaces quasi-identifier values of the rows
   in small cells by ``"*"``, one column at a time in the policy's order, until every
   combination occurs at least k times; rows still in a small cell once every
   quasi-identifier is ``"*"`` are removed. ``"*"`` is *not* a category of the schema:
   the released table is a released form outside the schema's domain, and the file
   says so by holding the literal value ``*``.
2. The sites check that form against their own rows
   (``client.site_checks.noisy_release_counts``): each releases, under DP and once
   per run, a noisy count of its real rows that the released form copies
   (``copied_noisy``) and, with a distance threshold, of those with a released row
   closer than it (``close_noisy``), with the noise's std (``noise_std``). Then
   ``apply_release_rules`` decides: approved only if every rule passes; otherwise the
   table is withheld and every failing rule is listed with its figures.

The two site rules (``no_copies``, ``min_distance``) decide on the sum of the sites'
noisy counts. Its noise std is sqrt(sum of the sites' ``noise_std``²), and the rule
passes when the noisy total is at most ``TOLERANCE_STDS`` (3) of those: a total of
zero exact copies passes with probability about 99.9%, and a table that copies
many real rows is withheld. The figures are DP estimates: the gate can withhold a
table that clearly copies real rows, but it cannot certify that no row is copied
(a handful of copies hide in the noise).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fedsynth.sovereignty.policy import GENERALISED, Policy
from fedsynth.tabular.schema import DISCRETE_TYPES, Schema

TOLERANCE_STDS = 3.0  # a site rule passes when the noisy total is at most this many noise std above zero


@dataclass
class ReleaseDecision:
    """The gate's verdict: ``table`` is the released form, to be written only when ``approved``."""

    approved: bool
    reasons: list[str]
    rules: dict[str, dict[str, Any]]
    table: pd.DataFrame = field(repr=False)


# ---------------------------------------------------------------------------------------------------------------------
# Step 1: the released form
# ---------------------------------------------------------------------------------------------------------------------
def _cell_sizes(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """For every row, how many rows share its combination of ``columns``."""
    return frame.groupby(columns, sort=False, dropna=False)[columns[0]].transform("size")


def _drop_forbidden_values(frame: pd.DataFrame, policy: Policy) -> tuple[pd.DataFrame, dict[str, int]]:
    hits = pd.Series(False, index=frame.index)
    by_value = {}
    for column, values in policy.release.forbidden_values.items():
        if column not in frame.columns:
            continue
        for value in values:
            mask = frame[column].astype(str) == value
            if mask.any():
                by_value[f"{column}={value}"] = int(mask.sum())
            hits |= mask
    return frame.loc[~hits], by_value


def _small_cells(frame: pd.DataFrame, policy: Policy) -> tuple[pd.DataFrame, dict[str, Any]]:
    cells = policy.release.small_cells
    if cells is None or frame.empty:
        return frame, {}
    qis, k = list(cells.quasi_identifiers), cells.k
    sizes = _cell_sizes(frame, qis)
    figures: dict[str, Any] = {
        "small_cells_found": int(frame.loc[sizes < k, qis].drop_duplicates().shape[0]),
        "rows_in_small_cells": int((sizes < k).sum()),
        "rows_generalised": 0,
        "rows_suppressed": 0,
    }
    if cells.action == "generalise":
        frame = frame.copy()
        frame[qis] = frame[qis].astype(object)
        generalised = pd.Series(False, index=frame.index)
        for column in qis:
            small = _cell_sizes(frame, qis) < k
            if not small.any():
                break
            frame.loc[small, column] = GENERALISED
            generalised |= small
        sizes = _cell_sizes(frame, qis)
        figures["rows_generalised"] = int((generalised & (sizes >= k)).sum())
    small = sizes < k
    figures["rows_suppressed"] = int(small.sum())
    return frame.loc[~small], figures


def prepare_release(table: pd.DataFrame, policy: Policy, schema: Schema) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The table in the form that would be released, and what was done to it (figures)."""
    policy.check_schema(schema)
    dropped = [c for c in policy.release.forbidden_columns if c in table.columns]
    frame = table[[c for c in schema.names if c in table.columns and c not in dropped]]
    frame, by_value = _drop_forbidden_values(frame, policy)
    frame, cell_figures = _small_cells(frame, policy)
    figures = {
        "rows_in": len(table),
        "rows_out": len(frame),
        "columns_dropped": dropped,
        "forbidden_value_rows_removed": int(sum(by_value.values())),
        "forbidden_values_found": by_value,
        "small_cells": cell_figures,
    }
    return frame.reset_index(drop=True), figures


# ---------------------------------------------------------------------------------------------------------------------
# Step 2: the rules
# ---------------------------------------------------------------------------------------------------------------------
def _meaning(name: str, threshold: float | None) -> str:
    what = "an identical row" if name == "no_copies" else f"a row closer than {threshold} (encoded distance)"
    return (
        f"A differentially private estimate, summed over the sites, of how many of their real rows have {what} "
        "in the released table. The gate withholds the table when the estimate is clearly above zero (above the "
        f"tolerance of {TOLERANCE_STDS:g} noise std); it cannot certify that no real row is copied, since a few "
        "copies hide in the noise."
    )


def _site_rule(
    name: str,
    required: bool,
    released: pd.DataFrame,
    site_counts: Mapping[str, Mapping[str, Any]],
    expected: list[str],
    key: str,
    threshold: float | None = None,
) -> dict[str, Any]:
    """A rule checked on the sites: the sum of their noisy ``key`` counts, computed on this exact released
    form by every expected site, is within ``TOLERANCE_STDS`` noise std of zero."""
    if not required:
        return {"required": False, "passed": True}
    answered = {site: c for site, c in sorted(site_counts.items()) if key in c and "noise_std" in c}
    by_site = {site: int(c[key]) for site, c in answered.items()}
    variance = sum(float(c["noise_std"]) ** 2 for c in answered.values())
    missing = sorted({s for s in expected if s not in answered} | {s for s in site_counts if s not in answered})
    stale = sorted(
        site
        for site, c in site_counts.items()
        if c.get("synthetic_rows") != len(released) or list(c.get("columns_compared", [])) != list(released.columns)
    )
    mismatch = (
        sorted(s for s, c in site_counts.items() if c.get("distance_threshold") != threshold)
        if threshold is not None
        else []
    )
    total = sum(by_site.values())
    noise_std = math.sqrt(variance)
    tolerance = TOLERANCE_STDS * noise_std
    rule = {
        "required": True,
        "passed": total <= tolerance and not missing and not stale and not mismatch and bool(answered),
        "noisy_total": total,
        "noise_std": noise_std,
        "tolerance": tolerance,
        "by_site": by_site,
        "missing_sites": missing,
        "checked_other_table": stale,
        "meaning": _meaning(name, threshold),
    }
    if threshold is not None:
        rule["threshold"] = threshold
        rule["threshold_mismatch"] = mismatch
    return rule


def _reason(name: str, rule: Mapping[str, Any]) -> str:
    """One plain line for a failing rule."""
    if name in ("no_copies", "min_distance"):
        what = "an identical synthetic row"
        if name == "min_distance":
            what = f"a synthetic row closer than {rule.get('threshold')}"
        parts = []
        if rule["noisy_total"] > rule["tolerance"]:
            sites = ", ".join(f"{s}: {n}" for s, n in rule["by_site"].items())
            parts.append(
                f"noisy total {rule['noisy_total']} (DP estimate of real rows with {what}) is above the tolerance "
                f"{rule['tolerance']:.1f} ({TOLERANCE_STDS:g} x noise std {rule['noise_std']:.1f}; by site: {sites})"
            )
        if rule["missing_sites"] or not rule["by_site"]:
            parts.append(f"no counts from site(s) {', '.join(rule['missing_sites']) or '(none reported)'}")
        if rule["checked_other_table"]:
            parts.append(f"site(s) {', '.join(rule['checked_other_table'])} checked a different table")
        if rule.get("threshold_mismatch"):
            parts.append(f"site(s) {', '.join(rule['threshold_mismatch'])} used another distance threshold")
        why = ""
        if "possible_rows" in rule:  # set by apply_release_rules when no faithful table could pass
            why = (
                f" (every column is discrete: only {rule['possible_rows']} different rows exist, so any faithful "
                "table repeats real rows; a policy with no_copies: false and small_cells releases it)"
            )
        return f"{name}: " + "; ".join(parts) + why
    if name == "small_cells":
        return f"small_cells: smallest combination occurs {rule['smallest_cell']} time(s), k = {rule['k']}"
    if name == "forbidden_columns":
        return f"forbidden_columns: still present: {', '.join(rule['present'])}"
    if name == "forbidden_values":
        return f"forbidden_values: still present: {rule['present']}"
    if name == "non_empty":
        return "non_empty: no row is left to release after suppression"
    if name == "epsilon_caps":
        over = [f"{s} spent ε {v['epsilon']:.3f} over its cap {v['cap']:.3f}" for s, v in rule["sites"].items()
                if not v["passed"]]  # fmt: skip
        return f"epsilon_caps: {'; '.join(over)}"
    if name == "participation":
        return f"participation: excluded site(s) contributed: {', '.join(rule['excluded_but_contributed'])}"
    return f"{name}: failed ({rule.get('reason', 'see figures')})"


def apply_release_rules(
    table: pd.DataFrame,
    policy: Policy,
    schema: Schema,
    site_counts: Mapping[str, Mapping[str, Any]],
    expected_sites: Iterable[str] | None = None,
    other_rules: Mapping[str, Mapping[str, Any]] | None = None,
) -> ReleaseDecision:
    """Prepare the released form of ``table`` and decide whether it may be released.

    ``site_counts``: site name -> ``noisy_release_counts(...)`` computed by that site on exactly
    ``prepare_release(table, policy, schema)[0]`` with ``policy.release.min_distance``.
    ``expected_sites``: every site whose counts are required (default: those in
    ``site_counts``). ``other_rules``: rules checked elsewhere (participation, ε caps, each
    ``{"passed": bool, ...}``) that also gate the release.
    """
    released, figures = prepare_release(table, policy, schema)
    release = policy.release
    expected = sorted(expected_sites) if expected_sites is not None else sorted(site_counts)
    rules: dict[str, dict[str, Any]] = {
        "no_copies": _site_rule("no_copies", release.no_copies, released, site_counts, expected, "copied_noisy"),
        "min_distance": _site_rule(
            "min_distance",
            release.min_distance > 0,
            released,
            site_counts,
            expected,
            "close_noisy",
            release.min_distance,
        ),
    }
    present = [c for c in release.forbidden_columns if c in released.columns]
    rules["forbidden_columns"] = {
        "required": bool(release.forbidden_columns),
        "passed": not present,
        "forbidden": list(release.forbidden_columns),
        "dropped": figures["columns_dropped"],
        "present": present,
    }
    _, still = _drop_forbidden_values(released, policy)
    rules["forbidden_values"] = {
        "required": bool(release.forbidden_values),
        "passed": not still,
        "rows_removed": figures["forbidden_value_rows_removed"],
        "removed_by_value": figures["forbidden_values_found"],
        "present": still,
    }
    cells = release.small_cells
    if cells is None:
        rules["small_cells"] = {"required": False, "passed": True}
    else:
        smallest = int(_cell_sizes(released, list(cells.quasi_identifiers)).min()) if len(released) else 0
        rules["small_cells"] = {
            "required": True,
            "passed": len(released) == 0 or smallest >= cells.k,
            "k": cells.k,
            "quasi_identifiers": list(cells.quasi_identifiers),
            "action": cells.action,
            "smallest_cell": smallest,
            **figures["small_cells"],
        }
    rules["non_empty"] = {"required": True, "passed": len(released) > 0, "rows": len(released)}
    for name, rule in (other_rules or {}).items():
        rules[name] = {"required": True, **rule}
    if not rules["no_copies"]["passed"]:
        possible = possible_rows(schema, list(released.columns))
        if possible is not None and possible <= len(released):
            # Not a reason to release, only what a user needs to know: no faithful table can pass the rule here.
            rules["no_copies"]["possible_rows"] = possible
    reasons = [_reason(name, rule) for name, rule in rules.items() if not rule["passed"]]
    return ReleaseDecision(approved=not reasons, reasons=reasons, rules=rules, table=released)


def possible_rows(schema: Schema, columns: list[str]) -> int | None:
    """How many different rows ``columns`` allow when all are discrete (from the public schema); else None."""
    count = 1
    for column in schema.columns:
        if column.name not in columns:
            continue
        if column.type not in DISCRETE_TYPES:
            return None
        count *= len(column.categories) + int(column.nullable)
    return count
