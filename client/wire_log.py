"""A site's own log of what it sends: every reply's records and keys, never a value.

A privacy officer at a site may want to see, not just read in ``docs/privacy.md``, what leaves
the site. With ``--node-config 'wire-log="/path/wire.jsonl"'`` (or, for a simulation on one
machine, the environment variable ``FEDSYNTH_WIRE_LOG``), every reply the site sends is logged
as one JSON line: the message type, and for each record its name, its kind and its keys (for
arrays, the number of values). A failed reply logs the reason the coordinator receives. The
log is written after any other mod (SecAgg+ included), so it shows what really goes out.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

WIRE_LOG_ENV = "FEDSYNTH_WIRE_LOG"
WIRE_LOG_KEY = "wire-log"


def describe_reply(reply: Message) -> dict:
    """What a reply carries, by record and key, without a single value."""
    if reply.has_error():
        return {"message_type": reply.metadata.message_type, "error": reply.error.reason}
    content = reply.content
    records: dict[str, dict] = {}
    for name, record in content.array_records.items():
        records[name] = {"kind": "arrays", "keys": {key: int(array.numpy().size) for key, array in record.items()}}
    for name, record in content.metric_records.items():
        records[name] = {"kind": "metrics", "keys": sorted(record.keys())}
    for name, record in content.config_records.items():
        records[name] = {"kind": "config", "keys": sorted(record.keys())}
    return {"message_type": reply.metadata.message_type, "records": records}


def wire_log_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Pass the message on; log the reply's shape to the site's wire log, if it keeps one."""
    reply = call_next(msg, context)
    target = context.node_config.get(WIRE_LOG_KEY) or os.environ.get(WIRE_LOG_ENV)
    if target:
        entry = {"time": time.time(), "node": context.node_id, **describe_reply(reply)}
        path = Path(str(target))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:  # one short line per reply: appends do not interleave
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
    return reply
