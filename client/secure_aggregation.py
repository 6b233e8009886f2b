"""The site's half of secure aggregation: Flower's SecAgg+ around the ordinary training handler.

SecAgg+ lives in Flower's legacy stack: its client mod (``secaggplus_mod``) runs
the key agreement and secret sharing, and masks the site's update before it
leaves, but it speaks the legacy ``FitIns``/``FitRes`` record layout. This mod
lets the same ``train`` handler serve both kinds of run:

- a train message without SecAgg+ configs (an ordinary round) goes straight to
  the handler;
- a SecAgg+ message goes through ``secaggplus_mod``; in the one stage where the
  site trains (collect masked vectors), the legacy ``FitIns`` is turned into the
  handler's own message (``arrays`` + ``config``) and the handler's reply back
  into a ``FitRes``, which ``secaggplus_mod`` then quantises, masks and sends
  without the plain arrays.

The same path carries the selection rounds' clique counts when secure
aggregation is on (``server.secure_round.secure_count_sum``): the request's
arrays may come from another record (the model's tables), the reply's keys
differ from the request's, and the counts are scaled onto the quantisation grid.
In the collect stage the mod tells the handler the SecAgg+ threshold of the
exchange (``SECURE_SUM_SITES_FIELD``, read from the mod's own state, and
stripped from any plain message): no sum of fewer sites can be unmasked, so
the handler may add a share of the noise (``privacy.distributed_noise``).

The site's metrics (its ε among them, its vote in a selection round) and its
``site`` record (name, jurisdiction, privacy ledger) still travel in the clear:
they say what the site spent or chose under DP, not what it counted.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE
from flwr.compat.common.recorddict_compat import fitres_to_recorddict, recorddict_to_fitins

from fedsynth.protocol.messages import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    SECAGG_REPLY_KEYS_FIELD,
    SECAGG_REQUEST_RECORD_FIELD,
    SECAGG_SCALE_FIELD,
    SECURE_SUM_SITES_FIELD,
    TRAINED_KEY,
    WEIGHT_KEY,
    read_failure,
)
from fedsynth.protocol.messages import SECAGG_KEYS_FIELD as KEYS_FIELD


class UnsafeUpdateError(RuntimeError):
    """The site's own update is not fit to enter the secure sum (it could not be rejected later)."""


class RefusedInSecureRoundError(RuntimeError):
    """The handler refused (or failed) inside a SecAgg+ exchange, whose replies cannot carry a structured
    failure: raised with the failure's public reason, which Flower reports as the site's error."""


def is_secure(msg: Message) -> bool:
    """Whether a message belongs to a SecAgg+ exchange."""
    return msg.has_content() and RECORD_KEY_CONFIGS in msg.content.config_records


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run SecAgg+ when the server asks for it; otherwise pass the message through unchanged."""
    if not is_secure(msg):
        if msg.has_content() and CONFIG_RECORD in msg.content.config_records:
            # Only this mod may say a reply enters a secure sum; from the coordinator it would be a forgery.
            msg.content[CONFIG_RECORD].pop(SECURE_SUM_SITES_FIELD, None)
        return call_next(msg, context)

    def train_then_hand_back(legacy: Message, ctx: Context) -> Message:
        sent = legacy.content
        state = ctx.state.config_records[RECORD_KEY_STATE]
        transport = dict(recorddict_to_fitins(sent, keep_input=True).config)
        legacy.content = _native_content(sent, int(state["threshold"]))  # same message, the handler's own layout
        keys = _reply_keys(legacy.content, transport)  # the server's order, for the reply
        scale = float(transport.get(SECAGG_SCALE_FIELD, 1.0))
        try:
            reply = call_next(legacy, ctx)
        finally:
            legacy.content = sent
        if reply.has_error():
            # secaggplus_mod would read the error reply's (absent) content; the site drops out of this sum.
            raise RefusedInSecureRoundError(read_failure(reply).reason)
        content = _legacy_content(reply.content, keys, scale, float(state["clipping_range"]))
        return Message(content, reply_to=legacy)

    return secaggplus_mod(msg, context, train_then_hand_back)


# Fields of the secure exchange itself; the handler sees none of them but the threshold this mod adds.
_TRANSPORT_FIELDS = (KEYS_FIELD, SECAGG_REQUEST_RECORD_FIELD, SECAGG_REPLY_KEYS_FIELD, SECAGG_SCALE_FIELD)


def _native_content(content: RecordDict, threshold: int) -> RecordDict:
    """Legacy ``FitIns`` (a parameter list + a flat config) as the handler's own records: the arrays under
    the record the server took them from, the config with the exchange's SecAgg+ ``threshold`` added."""
    fitins = recorddict_to_fitins(content, keep_input=True)
    keys = json.loads(str(fitins.config[KEYS_FIELD]))
    values = parameters_to_ndarrays(fitins.parameters)
    if len(keys) != len(values):
        raise ValueError(f"secure aggregation: {len(values)} arrays for {len(keys)} keys")
    arrays = ArrayRecord({key: Array(np.asarray(value)) for key, value in zip(keys, values, strict=True)})
    config = {k: v for k, v in fitins.config.items() if k not in _TRANSPORT_FIELDS}
    config[SECURE_SUM_SITES_FIELD] = threshold  # overrides any value the coordinator put there
    record = str(fitins.config.get(SECAGG_REQUEST_RECORD_FIELD, ARRAYS_RECORD))
    return RecordDict({record: arrays, CONFIG_RECORD: ConfigRecord(config)})


def _reply_keys(native: RecordDict, transport: dict) -> list[str]:
    """The keys of the summed vector, in the server's order: the request's, unless the server named others."""
    if SECAGG_REPLY_KEYS_FIELD in transport:
        return list(json.loads(str(transport[SECAGG_REPLY_KEYS_FIELD])))
    return list(next(iter(native.array_records.values())).keys())


def _legacy_content(reply: RecordDict, keys: list[str], scale: float, clipping_range: float) -> RecordDict:
    """The handler's reply as a legacy ``FitRes``, arrays in ``keys`` order (the server's) times ``scale``,
    plus the ``site`` record."""
    arrays = next(iter(reply.array_records.values()))
    metrics: MetricRecord = next(iter(reply.metric_records.values()))
    # float64: Flower quantises in the array's own dtype, and float32 cannot hold 2**26 levels exactly.
    values = [np.asarray(arrays[key].numpy(), dtype=np.float64) * scale for key in keys]
    if not all(np.all(np.isfinite(v)) for v in values):
        # Inside a secure sum a NaN would poison everyone's model and could not be traced back.
        raise UnsafeUpdateError("the update holds NaN or Inf; not sending it into the secure sum")
    if scale != 1.0 and any(np.any(np.abs(v) > clipping_range) for v in values):
        # Flower would clip silently, and a clipped count makes the sum wrong without anyone noticing.
        raise UnsafeUpdateError("a count is too large for the secure sum's range; not sending it")
    # A site that took no step (budget spent) enters with weight 0: it adds nothing to the sum.
    weight = int(metrics[WEIGHT_KEY]) if int(metrics.get(TRAINED_KEY, 1)) > 0 else 0
    legacy_metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    fitres = FitRes(Status(Code.OK, "ok"), ndarrays_to_parameters(values), weight, legacy_metrics)
    out = fitres_to_recorddict(fitres, keep_input=False)
    for name, record in reply.config_records.items():
        out.config_records[name] = record
    return out
