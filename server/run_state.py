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
STATE_FORMAT = "fedsynth-run-state/2"
EARLIER_FORMATS = ("fedsynth-run-state/1",)  # kept other components' state in an untyped "extra" mapping


@dataclass
class ClientLevelState:
    """Client-level DP across the run: the fixed divisor m and how many noised aggregates were released."""

    sites: int
    releases: int = 0


@dataclass
class RunState:
    """Everything a resumed run needs, one named field per component."""

    completed_round: int = 0
    checkpoint: str = ""
    ledgers: dict[str, dict[str, Any]] = field(default_factory=dict)  # each site's ledger, as it last sent it
    history: list[RoundLog] = field(default_factory=list)  # the round log (the strategy appends to it)
    round_seconds: list[float] = field(default_factory=list)
    round_parts: list[dict[str, float]] = field(default_factory=list)  # each round's seconds by part
    resumed_at: list[int] = field(default_factory=list)
    measurement: dict[str, Any] | None = None  # the DP histogram release (server.measurement); never repeated
    validator: dict[str, Any] | None = None  # the collapse history, participation and site feedback
    client_level: ClientLevelState | None = None
    secure_rounds: list[dict[str, Any]] = field(default_factory=list)  # per-round SecAgg+ summaries

    def save(self, folder: Path) -> None:
        payload = {"format": STATE_FORMAT, **asdict(self)}
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
        if not isinstance(raw, dict) or raw.get("format") not in (STATE_FORMAT, *EARLIER_FORMATS):
            raise CheckpointError(f"{path}: not a fedsynth run state (field 'format')")
        if raw["format"] in EARLIER_FORMATS:
            extra = dict(raw.get("extra", {}))
            raw = {**raw, "measurement": extra.get("marginals"), "validator": extra.get("validator"),
                   "client_level": extra.get("client_dp"), "secure_rounds": extra.get("secure_aggregation", []),
                   "round_parts": extra.get("round_parts", [])}  # fmt: skip
        try:
            level = raw.get("client_level")
            return cls(
                completed_round=int(raw["completed_round"]),
                checkpoint=str(raw["checkpoint"]),
                ledgers=dict(raw["ledgers"]),
                history=[RoundLog(**entry) for entry in raw["history"]],
                round_seconds=[float(x) for x in raw["round_seconds"]],
                round_parts=[dict(x) for x in raw.get("round_parts", [])],
                resumed_at=[int(x) for x in raw.get("resumed_at", [])],
                measurement=dict(raw["measurement"]) if raw.get("measurement") else None,
                validator=dict(raw["validator"]) if raw.get("validator") else None,
                client_level=ClientLevelState(int(level["sites"]), int(level["releases"])) if level else None,
                secure_rounds=[dict(x) for x in raw.get("secure_rounds", [])],
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
