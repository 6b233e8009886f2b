"""What the server must remember to resume a run after a crash.

After every round the server writes the round's checkpoint and then this state
(``checkpoints/state.json``), each atomically. The state names the checkpoint it
belongs to, so a crash between the two writes leaves the previous, consistent
pair. It holds every site's privacy ledger, the round log and the timings, so a
resumed run continues ε from where each site was, never from zero.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Message

from fedsynth.core.errors import CheckpointError
from fedsynth.protocol.messages import BUDGET_KEY, SITE_RECORD, site_name
from fedsynth.reporting.run_report import json_safe, write_json
from fedsynth.strategies.gan_fedavg import RoundLog

STATE_FILE = "state.json"
STATE_FORMAT = "fedsynth-run-state/1"


@dataclass
class RunState:
    completed_round: int = 0
    checkpoint: str = ""
    ledgers: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[RoundLog] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # other components' state (e.g. the validator)
    resumed_at: list[int] = field(default_factory=list)

    def save(self, folder: Path) -> None:
        payload = {
            "format": STATE_FORMAT,
            "completed_round": self.completed_round,
            "checkpoint": self.checkpoint,
            "ledgers": self.ledgers,
            "history": [asdict(entry) for entry in self.history],
            "round_seconds": self.round_seconds,
            "extra": self.extra,
            "resumed_at": self.resumed_at,
        }
        write_json(folder / STATE_FILE, json_safe(payload))

    @classmethod
    def load(cls, folder: Path) -> RunState:
        path = folder / STATE_FILE
        if not path.exists():
            raise CheckpointError(f"{path}: no saved run state to resume from (was the run started in this folder?)")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: run state is unreadable ({type(exc).__name__})") from None
        if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path}: not a fedsynth run state (field 'format')")
        try:
            return cls(
                completed_round=int(raw["completed_round"]),
                checkpoint=str(raw["checkpoint"]),
                ledgers=dict(raw["ledgers"]),
                history=[RoundLog(**entry) for entry in raw["history"]],
                round_seconds=[float(x) for x in raw["round_seconds"]],
                extra=dict(raw.get("extra", {})),
                resumed_at=[int(x) for x in raw.get("resumed_at", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: field {exc} is missing or invalid") from None


def keep_ledgers(replies: Iterable[Message], ledgers: dict[str, dict[str, Any]]) -> None:
    """Store the privacy ledger each site sent with its reply (sent back to it if the run resumes)."""
    for msg in replies:
        if msg.has_error() or SITE_RECORD not in msg.content.config_records:
            continue
        budget = msg.content.config_records[SITE_RECORD].get(BUDGET_KEY)
        if budget:
            ledgers[site_name(msg)] = json.loads(str(budget))
