"""Where a site's spent budget is remembered, so that ε never resets.

A site's spending can be known from three places, and the site takes whichever
records the MOST privacy spent, by ε (spending only grows, so the largest record
is the safe one; nobody can make a site forget what it spent, only remind it).
Only the history is taken from such a record: the plan (target ε, noise, sampling
rate) is always the site's own, computed from public inputs, so a forged record
can add spending but never loosen the plan.

- ``context.state`` on its node, which Flower keeps for the length of one run;
- a ledger file on the site's own disk (``--node-config 'ledger="..."'`` in a
  deployment), which survives restarts of the node and of the server;
- the ledger the server saved with its checkpoints and hands back on
  ``--resume``, which restores simulated sites after a server crash.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fedsynth.privacy.budget import SiteBudget, epsilon_of


def most_spent(delta: float, accountant: str, *candidates: SiteBudget | None) -> SiteBudget | None:
    """The record whose history spends the most ε at the site's own δ and accountant (ties: the most
    releases on record); ``None`` when there is none. A record's own δ is not trusted."""
    known = [c for c in candidates if c is not None]
    if not known:
        return None
    return max(known, key=lambda b: (epsilon_of(b.history, delta, accountant), sum(s for _, _, s in b.history)))


def budget_from_json(text: str | None) -> SiteBudget | None:
    if not text:
        return None
    return SiteBudget.from_state(json.loads(text))


def budget_to_json(budget: SiteBudget) -> str:
    return json.dumps(budget.to_state(), sort_keys=True)


def read_ledger_file(path: str | Path) -> SiteBudget | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return budget_from_json(path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError) as exc:
        # A damaged ledger must stop the site: guessing would risk overspending.
        raise RuntimeError(f"{path}: privacy ledger is unreadable ({exc}); refusing to train") from None


def write_ledger_file(path: str | Path, budget: SiteBudget) -> None:
    """Atomic write (temporary file, fsync, rename): never a half-written ledger."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(budget_to_json(budget))
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def server_ledger(ledgers_json: str | None, site: str) -> SiteBudget | None:
    """This site's entry in the ledger map the server sends on resume."""
    if not ledgers_json:
        return None
    entries: dict[str, Any] = json.loads(ledgers_json)
    entry = entries.get(site)
    return SiteBudget.from_state(entry) if entry else None
