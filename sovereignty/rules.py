"""The ``sovereignty`` and ``release`` sections of ``report.json``.

Participation and the per-jurisdiction ε caps are rules too: they are checked
here from what the server already knows (each site's declared jurisdiction and
the ε its accountant reports), and can be passed to
``sovereignty.release_gate.apply_release_rules(other_rules=...)`` so that a breach also
withholds the release.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fedsynth.sovereignty.policy import Policy
from fedsynth.sovereignty.release_gate import ReleaseDecision

EPSILON_TOLERANCE = 1e-9  # accountants' rounding; a site at exactly its cap passes


def participation_rule(
    policy: Policy, declared: Mapping[str, str | None], contributed: Iterable[str]
) -> dict[str, Any]:
    """Passed when no site outside the allowed jurisdictions contributed an update.

    ``declared``: every site that connected -> its declared jurisdiction (None if none).
    ``contributed``: sites whose updates were aggregated in any round.
    """
    screen = policy.screen_sites(declared)
    breached = sorted(set(screen["excluded"]) & set(contributed))
    return {
        "passed": not breached,
        "admitted": screen["admitted"],
        "excluded": screen["excluded"],
        "jurisdictions": screen["jurisdictions"],
        "excluded_but_contributed": breached,
    }


def epsilon_caps_rule(
    policy: Policy, jurisdictions: Mapping[str, str | None], epsilons: Mapping[str, float], run_epsilon: float
) -> dict[str, Any]:
    """Passed when every site spent at most its cap: min(run ε, the policy's cap for its jurisdiction)."""
    sites = {}
    for site, spent in sorted(epsilons.items()):
        jurisdiction = jurisdictions.get(site)
        cap = min(run_epsilon, policy.epsilon_cap(jurisdiction, run_epsilon)) if jurisdiction else run_epsilon
        sites[site] = {
            "jurisdiction": jurisdiction,
            "epsilon": float(spent),
            "cap": float(cap),
            "passed": float(spent) <= cap + EPSILON_TOLERANCE,
        }
    return {"passed": all(s["passed"] for s in sites.values()), "sites": sites}


def sovereignty_section(policy: Policy, decision: ReleaseDecision) -> dict[str, Any]:
    """Report section: the policy in force (source, digest, content) and every rule with its figures."""
    return {
        "policy": {"source": policy.source, "digest": policy.digest, "content": policy.to_dict()},
        "rules": decision.rules,
        "passed": all(rule["passed"] for rule in decision.rules.values()),
    }


def release_section(decision: ReleaseDecision, path: str | None = None) -> dict[str, Any]:
    """Report section: approved or withheld, the reasons, and what was (or would have been) written."""
    return {
        "approved": decision.approved,
        "reasons": decision.reasons,
        "rows": len(decision.table),
        "columns": list(decision.table.columns),
        "file": path if decision.approved else None,
    }
