"""One exchange through Flower's SecAgg+ workflow: the server learns only the weighted sum.

Two uses: a training round (the sites' model updates, ``secure_sum_round``) and a selection round's
clique counts under ``secure-measurement`` (``secure_count_sum``: integer counts, each site weight 1, scaled
onto the quantisation levels so that the sum is exact).

Flower 1.42 ships secure aggregation only in its legacy stack
(``flwr.server.workflow.SecAggPlusWorkflow`` with a ``LegacyContext`` and a
legacy ``Strategy``). This module runs that workflow for one round inside
fedsynth's own round loop:

- the train messages the strategy prepared become legacy ``FitIns`` (the packed
  record as a parameter list, its keys in the config so the site can rebuild it);
- the workflow runs its four stages (setup, share keys, collect masked vectors,
  unmask); each site trains once, in the collect stage, and sends only its
  masked, quantised update (``client.secure_aggregation``);
- the workflow unmasks the SUM and hands the legacy strategy one result per site,
  each holding that same weighted mean; ``SumOnlyStrategy`` records what it was
  given and returns it.

Every reply the server receives passes through ``RecordingGrid``, which counts
the plain array elements sites sent (zero under SecAgg+: the masked vectors are
bytes in a config record). The count goes into the report, so a run can show
the server never held an individual update.

What secure aggregation rules out: per-reply checks, norm-outlier rejection,
robust aggregators and server-side clipping all need individual updates, so the
configuration refuses to combine them with ``secure-aggregation``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from fedsynth.core.errors import ConfigError
from fedsynth.protocol.messages import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    SECAGG_KEYS_FIELD,
    SECAGG_REPLY_KEYS_FIELD,
    SECAGG_REQUEST_RECORD_FIELD,
    SECAGG_SCALE_FIELD,
    SECURE_SUM_SITES_FIELD,
)

# Each site scales its update by rows / max_weight before quantisation, so the error of the mean is about
# sites x 2 x CLIPPING_RANGE / QUANTIZATION_RANGE x max_weight / total rows. max_weight is the largest site's
# row count once the sites have reported it; before that, this bound on any site's rows.
DEFAULT_MAX_WEIGHT = 1_000_000
CLIPPING_RANGE = 8.0  # |weight| bound after scaling; the GAN's weights stay far inside it
QUANTIZATION_RANGE = 2**26  # finer than Flower's default 2**22: per-site error ~1e-7 before scaling
MODULUS_RANGE = 2**32  # sums of up to MODULUS_RANGE / QUANTIZATION_RANGE = 64 sites cannot overflow
MAX_SITES = MODULUS_RANGE // QUANTIZATION_RANGE
RECONSTRUCTION_SHARE = 2 / 3  # share of a site's neighbours needed to unmask (tolerates dropouts)


@dataclass
class RecordingGrid:
    """A grid that forwards to Flower's and keeps every reply, counting plain array elements received."""

    grid: Grid
    replies: list[list[Message]] = field(default_factory=list)
    plain_elements_received: int = 0

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for msg in replies:
            if msg.has_content():
                self.plain_elements_received += sum(
                    int(np.prod(array.shape)) for record in msg.content.array_records.values()
                    for array in record.values()
                )  # fmt: skip
        self.replies.append(replies)
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)


class SumOnlyStrategy(Strategy):
    """The legacy strategy the SecAgg+ workflow drives: it sends the prepared instructions
    and keeps the unmasked aggregate, which is all the workflow gives it."""

    def __init__(self, instructions: list[tuple[ClientProxy, FitIns]]) -> None:
        self.instructions = instructions
        self.results_seen = 0
        self.distinct_parameter_sets = 0
        self.aggregate: list[np.ndarray] | None = None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return self.instructions

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Any]]:
        self.results_seen = len(results)
        # Every result carries the same unmasked mean: count the distinct ones to show it.
        self.distinct_parameter_sets = len({tuple(fitres.parameters.tensors) for _, fitres in results})
        if not results:
            return None, {}
        parameters = results[0][1].parameters
        self.aggregate = parameters_to_ndarrays(parameters)
        return parameters, {}

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


@dataclass
class SecureRound:
    """What one secure round gave the server."""

    aggregate: ArrayRecord | None
    replies: list[Message]  # the collect stage's replies: metrics and site records, no arrays
    results_seen: int
    distinct_parameter_sets: int
    plain_elements_received: int
    max_weight: int

    def summary(self, server_round: int) -> dict[str, Any]:
        return {
            "round": server_round,
            "sites_in_sum": self.results_seen,
            "distinct_updates_seen_by_strategy": self.distinct_parameter_sets,
            "plain_array_elements_received": self.plain_elements_received,
            "max_weight": self.max_weight,
        }


def check_site_count(sites: int) -> None:
    """Refuse a secure sum over more sites than the modulus holds: the sum would wrap around silently."""
    if sites > MAX_SITES:
        raise ConfigError(
            f"secure-aggregation sums at most {MAX_SITES} sites without overflow (modulus 2^32, quantisation "
            f"2^26); this federation has {sites}: turn secure-aggregation off or use fewer sites"
        )


# Counts enter the secure sum as count * 2**-20: on the quantisation grid (2**22 levels per unit) an integer
# count lands exactly on a level, so the sum is exact (no stochastic rounding) for |count| < 8 * 2**20.
COUNT_SCALE = 2.0**-20


def secure_count_sum(
    grid: Grid, messages: list[Message], request_record: str, layout: dict[str, int], timeout: float | None
) -> tuple[dict[str, np.ndarray] | None, SecureRound]:
    """The exact sum over the sites of the integer count vectors they reply with (``layout``: key -> length).

    Each site enters with weight 1, so the workflow's weighted mean times the number of sites in the sum is
    the sum; the sites scale by ``COUNT_SCALE`` so that every count is a quantisation level (no rounding).
    """
    reference = ArrayRecord({key: Array(np.zeros(size, dtype=np.float64)) for key, size in layout.items()})
    outcome = secure_sum_round(grid, messages, 0, reference, timeout, max_weight=1, request_record=request_record,
                               scale=COUNT_SCALE)  # fmt: skip
    if outcome.aggregate is None or outcome.results_seen == 0:
        return None, outcome
    sums = {key: np.rint(outcome.aggregate[key].numpy() * outcome.results_seen / COUNT_SCALE) for key in layout}
    return sums, outcome


def secure_sum_round(
    grid: Grid,
    messages: list[Message],
    server_round: int,
    reference: ArrayRecord,
    timeout: float | None,
    max_weight: int = DEFAULT_MAX_WEIGHT,
    request_record: str = ARRAYS_RECORD,
    scale: float = 1.0,
) -> SecureRound:
    """Run the SecAgg+ workflow over ``messages`` (one per site) and return the unmasked weighted mean.

    Each site receives the arrays of its message's ``request_record`` and replies with arrays laid out
    as ``reference`` (its keys and shapes), multiplied by ``scale`` before quantisation.
    """
    check_site_count(len(messages))
    recording = RecordingGrid(grid)
    keys = list(reference.keys())
    proxies, instructions = SimpleClientManager(), []
    for msg in messages:
        proxy = GridClientProxy(msg.metadata.dst_node_id, grid, run_id=0)
        proxies.register(proxy)
        arrays = msg.content[request_record]
        request_keys = list(arrays.keys())
        config = {k: v for k, v in msg.content[CONFIG_RECORD].items() if k != SECURE_SUM_SITES_FIELD}
        config[SECAGG_KEYS_FIELD] = json.dumps(request_keys)
        if request_record != ARRAYS_RECORD:
            config[SECAGG_REQUEST_RECORD_FIELD] = request_record
        if request_keys != keys:
            config[SECAGG_REPLY_KEYS_FIELD] = json.dumps(keys)
        if scale != 1.0:
            config[SECAGG_SCALE_FIELD] = scale
        parameters = ndarrays_to_parameters([np.asarray(arrays[k].numpy(), dtype=np.float32) for k in request_keys])
        instructions.append((proxy, FitIns(parameters, config)))
    strategy = SumOnlyStrategy(instructions)
    context = LegacyContext(_server_context(reference, server_round), strategy=strategy, client_manager=proxies)
    workflow = SecAggPlusWorkflow(
        num_shares=1.0,  # every site shares its keys with every other: SecAgg+ over the full graph
        reconstruction_threshold=RECONSTRUCTION_SHARE,
        max_weight=max_weight,
        clipping_range=CLIPPING_RANGE,
        quantization_range=QUANTIZATION_RANGE,
        modulus_range=MODULUS_RANGE,
        timeout=timeout,
    )
    workflow(recording, context)
    aggregate = None
    if strategy.aggregate is not None:
        aggregate = ArrayRecord(
            {
                key: Array(np.asarray(value, dtype=reference[key].numpy().dtype).reshape(reference[key].shape))
                for key, value in zip(keys, strategy.aggregate, strict=True)
            }
        )
    return SecureRound(
        aggregate=aggregate,
        replies=_collect_stage_replies(recording.replies),
        results_seen=strategy.results_seen,
        distinct_parameter_sets=strategy.distinct_parameter_sets,
        plain_elements_received=recording.plain_elements_received,
        max_weight=max_weight,
    )


def _server_context(reference: ArrayRecord, server_round: int) -> Context:
    state = RecordDict(
        {
            MAIN_PARAMS_RECORD: reference,
            MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round}),
        }
    )
    return Context(run_id=0, node_id=0, node_config={}, state=state, run_config={})


def _collect_stage_replies(batches: list[list[Message]]) -> list[Message]:
    """The replies of the stage where sites trained (the third exchange), plus the errors of sites
    that failed in an earlier stage and so never trained."""
    trained = list(batches[2]) if len(batches) >= 3 else []
    seen = {m.metadata.src_node_id for m in trained}
    for batch in batches[:2]:
        for msg in batch:
            if msg.has_error() and msg.metadata.src_node_id not in seen:
                trained.append(msg)
                seen.add(msg.metadata.src_node_id)
    return trained


def secure_aggregation_section(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's account of secure aggregation: protocol, parameters, and what the server received."""
    return {
        "protocol": "SecAgg+ (Flower SecAggPlusWorkflow and secaggplus_mod)",
        "reconstruction_share": RECONSTRUCTION_SHARE,
        "quantization_range": QUANTIZATION_RANGE,
        "clipping_range": CLIPPING_RANGE,
        "plain_array_elements_received": sum(r["plain_array_elements_received"] for r in rounds),
        "rounds": rounds,
        "note": "the server received masked, quantised vectors and unmasked only their weighted sum; "
        "per-update checks and outlier rejection do not run under secure aggregation",
    }
