"""The server side of the validator: participation, collapse watch, site feedback, release gate.

The server never holds real data, so it splits the work:

- what needs no real data it does itself: after every round it samples the
  global generator and scores the sample's health (category coverage, entropy,
  duplicates, spread, clusters); a collapse rule decides whether to record,
  stop (keeping the best round) or roll back with a lower learning rate;
- what needs real data it asks the sites for, with a Flower evaluate message
  carrying a synthetic sample: noisy per-column distance sums and a coverage
  count (``client.site_checks.noisy_feedback``, charged to each site's
  accountant) every ``validator-feedback-every`` rounds, which
  ``combine_feedback`` divides by the sites' public row counts; once at the end,
  DP-noised counts of the site's real rows that the released table copies or
  comes close to (``client.site_checks.noisy_release_counts``, charged to
  each site's accountant; the gate decides on their noisy sum);
- participation: sites declare a jurisdiction; updates from a site the policy
  does not admit are dropped and the site is not asked again (the site also
  refuses on its own).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import pandas as pd
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedsynth.privacy.budget import SiteBudget
from fedsynth.protocol.messages import (
    CONFIG_RECORD,
    FEEDBACK_SUM_PREFIX,
    NOISE_STD_KEY,
    PUBLIC_ROWS_KEY,
    PURPOSE_KEY,
    SITE_RECORD,
    SYNTHETIC_KEY,
    THRESHOLD_KEY,
    Purpose,
    read_failure,
    site_name,
)
from fedsynth.server.run_state import keep_ledgers
from fedsynth.sovereignty.policy import Policy, ReleaseRules
from fedsynth.sovereignty.release_gate import ReleaseDecision, apply_release_rules, prepare_release
from fedsynth.sovereignty.rules import epsilon_caps_rule, participation_rule

DEFAULT_POLICY = Policy(allowed_jurisdictions=(), release=ReleaseRules(no_copies=True), name="default",
                        description="no policy given: every site admitted; no released row may copy a real one",
                        source="<default>")  # fmt: skip


@dataclass
class Participation:
    """Who declared which jurisdiction, who is excluded, who contributed."""

    policy: Policy | None
    declared: dict[str, str | None] = field(default_factory=dict)
    excluded_nodes: dict[int, str] = field(default_factory=dict)
    contributed: set[str] = field(default_factory=set)

    def screen(self, replies: Iterable[Message]) -> tuple[list[Message], dict[str, str]]:
        """Drop replies from sites the policy does not admit; learn every site's jurisdiction."""
        kept, excluded = [], {}
        for msg in replies:
            name = site_name(msg)
            if msg.has_content() and SITE_RECORD in msg.content.config_records:
                self.declared[name] = str(msg.content.config_records[SITE_RECORD].get("jurisdiction", "")) or None
            jurisdiction = self.declared.get(name)
            if self.policy is not None and msg.has_content() and not self.policy.admits(jurisdiction):
                reason = f"jurisdiction {jurisdiction!r} not allowed by the policy"
                excluded[name] = reason
                self.excluded_nodes[msg.metadata.src_node_id] = name
                log(WARNING, "fedsynth: excluded %s: %s", name, reason)
                continue
            refusal = read_failure(msg) if msg.has_error() else None
            if refusal is not None and refusal.not_admitted:  # the site refused on its own, and says who it is
                name, jurisdiction = refusal.site or name, refusal.jurisdiction
                self.declared[name] = jurisdiction
                self.excluded_nodes[msg.metadata.src_node_id] = name
                excluded[name] = f"refused: jurisdiction {jurisdiction!r} not allowed by the policy"
                continue
            kept.append(msg)
        return kept, excluded

    def without_excluded(self, messages: Iterable[Message]) -> list[Message]:
        return [m for m in messages if m.metadata.dst_node_id not in self.excluded_nodes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "declared": self.declared,
            "excluded_nodes": {str(k): v for k, v in self.excluded_nodes.items()},
            "contributed": sorted(self.contributed),
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.declared.update(data.get("declared", {}))
        self.excluded_nodes.update({int(k): v for k, v in data.get("excluded_nodes", {}).items()})
        self.contributed.update(data.get("contributed", []))


def ask_sites(
    grid: Grid, nodes: list[int], fields: dict[str, Any], timeout: float, ledgers: dict[str, Any] | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Send an evaluate message to ``nodes``; return each site's answer and each failure.

    A site's updated privacy ledger, when it sends one, is stored in ``ledgers``.
    """
    record = ConfigRecord(fields)
    messages = [
        Message(RecordDict({CONFIG_RECORD: record}), dst_node_id=node, message_type=MessageType.EVALUATE)
        for node in nodes
    ]
    answers: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    for msg in replies:
        name = site_name(msg)
        if msg.has_error():
            failures[name] = read_failure(msg).reason
        else:
            answer: dict[str, Any] = {}
            for records in (msg.content.metric_records, msg.content.config_records):
                for key, values in records.items():
                    if key != SITE_RECORD:
                        answer.update(dict(values))
            answers[name] = answer
    if ledgers is not None:
        keep_ledgers(replies, ledgers)
    return answers, failures


def combine_feedback(answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Pooled scores from the sites' noisy feedback sums (post-processing of DP releases only).

    Each site sends, per column, a noisy n_s·distance (KS for numbers, TV for categories) and a
    noisy count of its rows covered by the sample, with its public row count n̂_s
    (``client.site_checks.noisy_feedback``). The pooled score is Σ_s sum_s / Σ_s n̂_s:
    ``shape:<column>`` = 1 − pooled distance, ``coverage`` = pooled covered share; ``noise_std``
    is the std of the noise each score carries. Values are not clipped to [0, 1], so they stay
    unbiased.
    """
    usable = {name: a for name, a in answers.items() if float(a.get(PUBLIC_ROWS_KEY, 0.0)) > 0}
    refused = sorted(set(answers) - set(usable))
    if not usable:
        return {"sites": [], "refused": refused, "values": {}}
    rows = sum(float(a[PUBLIC_ROWS_KEY]) for a in usable.values())
    noise_std = math.sqrt(sum(float(a.get(NOISE_STD_KEY, 0.0)) ** 2 for a in usable.values())) / rows
    keys = sorted({k for a in usable.values() for k in a if k.startswith(FEEDBACK_SUM_PREFIX)})
    values = {}
    for key in keys:
        pooled = sum(float(a.get(key, 0.0)) for a in usable.values()) / rows
        name = key[len(FEEDBACK_SUM_PREFIX) :]
        if name.startswith("distance:"):
            values["shape:" + name[len("distance:") :]] = 1.0 - pooled
        else:
            values["coverage" if name == "covered" else name] = pooled
    return {"sites": sorted(usable), "refused": refused, "values": values, "noise_std": noise_std}


def release_gate(
    grid: Grid,
    nodes: list[int],
    table: pd.DataFrame,
    policy: Policy,
    schema_fields: dict[str, Any],
    participation: Participation,
    epsilons: dict[str, float],
    run_epsilon: float,
    timeout: float,
    schema: Any,
    ledgers: dict[str, Any] | None = None,
) -> ReleaseDecision:
    """Ask each site for its DP counts of real rows the released table copies or comes close to; decide.

    Each site charges the check to its own accountant and sends its ledger with the reply; pass
    ``ledgers`` (the run's copy of the sites' ledgers) to keep that spending on record.
    """
    released, _ = prepare_release(table, policy, schema)
    fields = {
        **schema_fields,
        PURPOSE_KEY: Purpose.RELEASE_CHECK,
        SYNTHETIC_KEY: released.to_csv(index=False),
        THRESHOLD_KEY: float(policy.release.min_distance),
    }
    counts, failures = ask_sites(grid, nodes, fields, timeout, ledgers)
    for name, reason in failures.items():
        log(WARNING, "fedsynth: release check failed at %s: %s", name, reason)
    if ledgers:  # the caps hold after the check's own charge, which the sites' ledgers now include
        epsilons = {**epsilons, **{name: SiteBudget.from_state(entry).spent for name, entry in ledgers.items()}}
    expected = sorted(set(counts) | set(failures))
    other_rules = {}
    if policy is not DEFAULT_POLICY:
        other_rules["participation"] = participation_rule(policy, participation.declared, participation.contributed)
        other_rules["epsilon_caps"] = epsilon_caps_rule(policy, participation.declared, epsilons, run_epsilon)
    decision = apply_release_rules(table, policy, schema, counts, expected_sites=expected, other_rules=other_rules)
    log(INFO, "fedsynth: release %s%s", "approved" if decision.approved else "WITHHELD",
        "" if decision.approved else ": " + "; ".join(decision.reasons))  # fmt: skip
    return decision
