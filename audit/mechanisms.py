"""The canary audit of every DP mechanism a site runs, each beside a deliberately broken variant.

For each mechanism, the audit runs the project's own code many times on two neighbouring tables:
the site's rows D, and D plus one canary row (worst case: every numeric column at its upper bound,
the last category of every discrete column). A white-box attacker who knows D, the models and the
generated rows scores each output; ``audit.statistics`` turns the scores into a lower bound on ε with a
Clopper–Pearson interval. The bound must stay at or under the ε the accountant reports for the
audited instance of the mechanism. Then the same audit runs on a broken variant (noise regenerable
from the seed, or no noise at all), where it must find a bound far above the claim: an audit that
cannot fail is not an audit.

Mechanisms (the instance audited, and its broken variant):

- ``histograms``: one DP histogram release at the planned noise multiplier (``measure-fraction`` of
  ε). Attack: the Gaussian likelihood-ratio statistic on the canary's cells. Broken: noise drawn
  from the seed, which the attacker regenerates.
- ``dp-sgd``: one discriminator step (Poisson sampling at the planned rate, clipping, noise) at the
  planned noise multiplier; the attacker sees the privatised gradient (white-box, as in Nasr et al.
  2021). Attack: the gradient's projection on the canary's clipped gradient, after removing the
  generated rows' known contribution. Broken: noise and batch drawn from the seed.
- ``client-level``: one round of client-level DP over ``m`` sites (clipped update sum, noise,
  fixed divisor), the canary being one site's whole update. Broken: noise drawn from the seed.
- ``distributed``: one clique count summed under SecAgg+ over 4 sites, each adding its share of the
  noise; the attacker sees the sum and knows every site's rows. Broken: the shares drawn from the seed.
- ``feedback``: one validator feedback release (noisy per-column distance sums and coverage count)
  on a sample that holds a copy of the canary. Attack: the output's projection on the difference of
  the exact sums in the two worlds. Broken: the sums without noise.
- ``release-check``: the site's noisy count of real rows copied by the released table, the released
  table holding a copy of the canary. Broken: the count without noise (the gate fedsynth had before;
  the audit reaches the site module's exact count for that, as only an auditor may).

The attack on a seeded variant is the same for all: regenerate the mechanism's output on D (the seed
is in the report) and say "canary" when the observed output differs from it.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from flwr.app import Array, ArrayRecord
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsynth.audit.statistics import AuditResult, audit_mechanism
from fedsynth.client.site_checks import _real_row_counts, feedback_sums, noisy_feedback, noisy_release_counts
from fedsynth.core.config import RunConfig
from fedsynth.marginals.bins import count, count_pairs, pair_layout, parse_pairs, schema_bins
from fedsynth.marginals.cliques import Clique, clique_counts, codes, model_layout
from fedsynth.marginals.release import add_noise, one_way_weight
from fedsynth.marginals.selection import selection_scores
from fedsynth.models.gan import GanShape, build_gan
from fedsynth.privacy.budget import SiteBudget, epsilon_of, measurement_noise
from fedsynth.privacy.distributed_noise import noise_shares, secure_sum_shares
from fedsynth.privacy.dp_training import discriminator_step, make_private_discriminator, sample_rate_for
from fedsynth.privacy.measurement_schedule import MeasurementSchedule
from fedsynth.privacy.mechanisms import histogram_noise_std
from fedsynth.privacy.secret_noise import NoiseSource
from fedsynth.server.secure_round import RECONSTRUCTION_SHARE
from fedsynth.strategies.client_dp import GanClientDP
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.schema import Schema
from fedsynth.tabular.table import validate_frame

CLIENT_LEVEL_SITES = 4  # m in the client-level audit
CLIENT_LEVEL_DIM = 512  # length of the audited update vector
CLIENT_LEVEL_DEFAULT_NOISE = 4.0  # audited at this z when the configuration has client-level DP off


@dataclass(frozen=True)
class MechanismAudit:
    """One mechanism's audit: the claim, the honest bound and the broken variant's bound."""

    mechanism: str
    instance: str  # which release was audited, with its parameters
    epsilon: float  # the accountant's ε for that instance
    honest: AuditResult
    broken_variant: str
    broken: AuditResult

    def to_json(self) -> dict[str, Any]:
        broken_bound = self.broken.epsilon_lower_bound
        return {
            "mechanism": self.mechanism,
            "instance": self.instance,
            "epsilon": self.epsilon,
            "epsilon_lower_bound": self.honest.epsilon_lower_bound,
            "interval": list(self.honest.interval) if math.isfinite(self.honest.interval[1]) else
            [self.honest.interval[0], None],
            "broken_variant": self.broken_variant,
            "broken_epsilon_lower_bound": broken_bound if math.isfinite(broken_bound) else None,
            "passed": self.passed,
            "honest": self.honest.to_json(),
            "broken": self.broken.to_json(),
        }  # fmt: skip

    @property
    def passed(self) -> bool:
        """The honest bound stays at or under the claim, and the broken variant's is above it."""
        return self.honest.epsilon_lower_bound <= self.epsilon < self.broken.epsilon_lower_bound


def canary_row(schema: Schema) -> pd.DataFrame:
    """The worst-case canary: every numeric column at its upper bound, every discrete one at its last value."""
    values: dict[str, Any] = {}
    for col in schema.columns:
        if col.is_numeric:
            values[col.name] = col.max
        elif col.type == "boolean":
            values[col.name] = "true"
        else:
            values[col.name] = col.categories[-1]
    return validate_frame(pd.DataFrame([values]), schema, source="canary")


def _regenerated_distance(observed: np.ndarray, regenerated: np.ndarray) -> float:
    """The seeded-noise attack: how far the output is from the one regenerated for the table without the canary."""
    return float(np.linalg.norm(np.asarray(observed, dtype=float) - np.asarray(regenerated, dtype=float)))


# ---------------------------------------------------------------------------------------------------------------------
# DP histograms
# ---------------------------------------------------------------------------------------------------------------------
def audit_histograms(
    table: pd.DataFrame, schema: Schema, config: RunConfig, trials: int, confidence: float
) -> MechanismAudit:
    canary = canary_row(schema)
    layout = schema_bins(schema, config.histogram_bins)
    pairs = pair_layout(layout, parse_pairs(config.measure_pairs, schema), config.measure_pair_bins)
    weight = one_way_weight(config.measure_one_way_weight, len(layout), len(pairs))
    z = measurement_noise(config.epsilon, config.delta, max(config.measure_fraction, 0.5), config.accountant)
    one_std, pair_std = histogram_noise_std(z, len(layout), len(pairs), weight)
    with_canary = pd.concat([table, canary], ignore_index=True)
    # (histograms without the canary, with it, noise std) for the one-way and the two-way part.
    groups = [(count(table, layout), count(with_canary, layout), one_std)]
    if pairs:
        groups.append((count_pairs(table, pairs), count_pairs(with_canary, pairs), pair_std))
    flat = lambda hists: np.concatenate([h.ravel() for h in hists])  # noqa: E731

    def release(canary_in: bool, noise: NoiseSource) -> list[np.ndarray]:
        return [flat(add_noise(after if canary_in else before, std, noise)) for before, after, std in groups]

    def likelihood_ratio(canary_in: bool) -> float:
        # The optimal test for a Gaussian shift: the noisy excess in the canary's cells, weighted by 1/σ².
        out = release(canary_in, NoiseSource.secret_source())
        return sum(
            float(((o - flat(before)) * (flat(after) - flat(before))).sum()) / std**2
            for o, (before, after, std) in zip(out, groups, strict=True)
        )

    seeded = lambda: NoiseSource.reproducible(config.seed, "audit-site", "measure")  # noqa: E731
    regenerated = np.concatenate(release(False, seeded()))

    def seeded_attack(canary_in: bool) -> float:
        return _regenerated_distance(np.concatenate(release(canary_in, seeded())), regenerated)

    return MechanismAudit(
        mechanism="histograms",
        instance=f"one release of {len(layout)} one-way and {len(pairs)} two-way histograms, noise multiplier {z:.4g}",
        epsilon=epsilon_of([(z, 1.0, 1)], config.delta, "rdp"),
        honest=audit_mechanism(likelihood_ratio, trials, config.delta, confidence),
        broken_variant="noise drawn from the seed (reproducible-noise), regenerated by the attacker",
        broken=audit_mechanism(seeded_attack, trials, config.delta, confidence),
    )


# ---------------------------------------------------------------------------------------------------------------------
# DP-SGD
# ---------------------------------------------------------------------------------------------------------------------
def _clipped_gradients(disc: nn.Module, rows: torch.Tensor, labels: torch.Tensor, clip: float) -> torch.Tensor:
    """Each row's clipped gradient of its own loss, flattened in ``disc.parameters()`` order (rows × parameters)."""
    params = {k: v.detach() for k, v in disc.named_parameters()}

    def row_loss(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(
            functional_call(disc, p, (x.unsqueeze(0),)), y.unsqueeze(0)
        )

    grads = vmap(grad(row_loss), in_dims=(None, 0, 0))(params, rows, labels)
    flat = torch.cat([grads[name].reshape(len(rows), -1) for name, _ in disc.named_parameters()], dim=1)
    return flat * (clip / (flat.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0)


def audit_dp_sgd(
    table: pd.DataFrame, schema: Schema, config: RunConfig, trials: int, confidence: float
) -> MechanismAudit:
    codec = TableCodec(schema)
    real = torch.from_numpy(codec.encode(table))
    canary = torch.from_numpy(codec.encode(canary_row(schema)))
    worlds = [real, torch.cat([real, canary])]
    rate = sample_rate_for(float(len(table)), config.batch_size)  # the audit's public row count: |D|
    plan = SiteBudget.plan(config.epsilon, config.delta, rate, config.rounds * config.local_steps, config.accountant,
                           config.measure_fraction)  # fmt: skip
    budget = SiteBudget(config.epsilon, config.delta, "rdp", plan.noise_multiplier, rate, max_steps=1)
    torch.manual_seed(config.seed)
    generator, discriminator = build_gan(codec, GanShape.for_run(config, codec.dim))
    with torch.no_grad():
        fake = generator(torch.randn(config.batch_size, config.noise_dim))
    fake_sum = _clipped_gradients(discriminator, fake, torch.zeros(len(fake)), config.max_grad_norm).sum(dim=0)
    direction = _clipped_gradients(discriminator, canary, torch.ones(1), config.max_grad_norm)[0]
    direction = direction / direction.norm()

    def step(with_canary: bool, noise: NoiseSource) -> torch.Tensor:
        disc = copy.deepcopy(discriminator)
        rows = worlds[int(with_canary)]
        private = make_private_discriminator(
            disc, rows, budget, config.batch_size, config.max_grad_norm, config.lr_discriminator, noise
        )
        discriminator_step(private, next(private.real_batches()), fake)
        # p.grad holds the privatised gradient: (clipped sum + noise) / B.
        return torch.cat([p.grad.reshape(-1) for p in private.module.parameters()]) * config.batch_size

    def projection(with_canary: bool) -> float:
        return float((step(with_canary, NoiseSource.secret_source()) - fake_sum) @ direction)

    seeded = lambda: NoiseSource.reproducible(config.seed, "audit-site", 1, "dp-sgd")  # noqa: E731
    regenerated = step(False, seeded()).numpy()

    def seeded_attack(with_canary: bool) -> float:
        return _regenerated_distance(step(with_canary, seeded()).numpy(), regenerated)

    return MechanismAudit(
        mechanism="dp-sgd",
        instance=f"one discriminator step, noise multiplier {budget.noise_multiplier:.4g}, sampling rate {rate:.4g}, "
        f"clipping norm {config.max_grad_norm:g}",
        epsilon=epsilon_of([(budget.noise_multiplier, rate, 1)], config.delta, "rdp"),
        honest=audit_mechanism(projection, trials, config.delta, confidence),
        broken_variant="noise and Poisson batch drawn from the seed (reproducible-noise), regenerated by the attacker",
        broken=audit_mechanism(seeded_attack, trials, config.delta, confidence),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Client-level DP
# ---------------------------------------------------------------------------------------------------------------------
def audit_client_level(config: RunConfig, trials: int, confidence: float) -> MechanismAudit:
    z = config.client_dp_noise or CLIENT_LEVEL_DEFAULT_NOISE
    clip = config.client_dp_clip
    rng = np.random.default_rng(config.seed)  # the other sites' updates: known to the attacker, not private
    others = rng.normal(0.0, 1.0, (CLIENT_LEVEL_SITES - 1, CLIENT_LEVEL_DIM))
    others *= 0.5 * clip / np.linalg.norm(others, axis=1, keepdims=True)
    direction = np.zeros(CLIENT_LEVEL_DIM)
    direction[0] = 1.0
    canary_update = 3.0 * clip * direction  # beyond the clip: the mechanism must clip it to C
    origin = ArrayRecord({"w": Array(np.zeros(CLIENT_LEVEL_DIM, dtype=np.float64))})

    def release(with_canary: bool, noise_for_round: Callable[[int], NoiseSource]) -> np.ndarray:
        flower_log = logging.getLogger("flwr")
        level, flower_log.level = flower_log.level, logging.ERROR  # one warning per strategy, thousands of times
        try:
            strategy = GanClientDP(noise_multiplier=z, clipping_norm=clip, noise_for_round=noise_for_round)
        finally:
            flower_log.setLevel(level)
        strategy.admit(CLIENT_LEVEL_SITES)
        strategy._global = origin
        rows = [*others, canary_update] if with_canary else list(others)
        combined, _ = strategy.combine(np.stack(rows), [1.0] * len(rows))
        return combined

    def projection(with_canary: bool) -> float:
        out = release(with_canary, lambda _round: NoiseSource.secret_source())
        return float((out * CLIENT_LEVEL_SITES - others.sum(axis=0)) @ direction)

    seeded = lambda _round: NoiseSource.reproducible(config.seed, "client-dp", 1)  # noqa: E731
    regenerated = release(False, seeded)

    def seeded_attack(with_canary: bool) -> float:
        return _regenerated_distance(release(with_canary, seeded), regenerated)

    return MechanismAudit(
        mechanism="client-level",
        instance=f"one round over m={CLIENT_LEVEL_SITES} sites, noise multiplier {z:g}, clipping norm {clip:g}"
        + ("" if config.client_dp_noise else " (client-level DP is off in this configuration; audited at z=4)"),
        epsilon=epsilon_of([(z, 1.0, 1)], config.delta, "rdp"),
        honest=audit_mechanism(projection, trials, config.delta, confidence),
        broken_variant="noise drawn from the seed (reproducible-noise), regenerated by the attacker",
        broken=audit_mechanism(seeded_attack, trials, config.delta, confidence),
    )


# ---------------------------------------------------------------------------------------------------------------------
# The release check
# ---------------------------------------------------------------------------------------------------------------------
def audit_release_check(
    table: pd.DataFrame, schema: Schema, config: RunConfig, trials: int, confidence: float
) -> MechanismAudit:
    canary = canary_row(schema)
    released = canary  # the worst case: the released table holds an exact copy of the canary
    worlds = [table, pd.concat([table, canary], ignore_index=True)]
    z = config.release_check_noise

    def noisy_count(with_canary: bool) -> float:
        counts = noisy_release_counts(released, worlds[int(with_canary)], schema, 0.0, z, NoiseSource.secret_source())
        return float(counts["copied_noisy"])

    def exact_count(with_canary: bool) -> float:
        return float(_real_row_counts(released, worlds[int(with_canary)], schema, 0.0)[0])

    return MechanismAudit(
        mechanism="release-check",
        instance=f"one noisy count of real rows copied by the released table, noise multiplier {z:g}",
        epsilon=epsilon_of([(z, 1.0, 1)], config.delta, "rdp"),
        honest=audit_mechanism(noisy_count, trials, config.delta, confidence),
        broken_variant="the count without noise (the release gate before it was made DP)",
        broken=audit_mechanism(exact_count, trials, config.delta, confidence),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Validator feedback
# ---------------------------------------------------------------------------------------------------------------------
def audit_feedback(
    table: pd.DataFrame, schema: Schema, config: RunConfig, trials: int, confidence: float
) -> MechanismAudit:
    canary = canary_row(schema)
    sample = pd.concat([canary, table.head(50)], ignore_index=True)  # the validator's sample holds a copy of the canary
    worlds = [table, pd.concat([table, canary], ignore_index=True)]
    z = config.validator_feedback_noise
    # The white-box attacker knows D: it computes the exact sums in both worlds and projects the output on
    # their difference (the likelihood-ratio test for Gaussian noise of equal variance).
    exact = [np.array(list(feedback_sums(sample, world, schema).values())) for world in worlds]
    direction = exact[1] - exact[0]

    def projection(with_canary: bool) -> float:
        released = noisy_feedback(sample, worlds[int(with_canary)], schema, z, NoiseSource.secret_source())
        return float(np.dot(np.array(list(released["values"].values())) - exact[0], direction))

    def exact_projection(with_canary: bool) -> float:
        return float(np.dot(exact[int(with_canary)] - exact[0], direction))

    return MechanismAudit(
        mechanism="feedback",
        instance=f"one validator feedback release ({len(direction)} noisy sums), noise multiplier {z:g}",
        epsilon=epsilon_of([(z, 1.0, 1)], config.delta, "rdp"),
        honest=audit_mechanism(projection, trials, config.delta, confidence),
        broken_variant="the sums without noise",
        broken=audit_mechanism(exact_projection, trials, config.delta, confidence),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Selection votes
# ---------------------------------------------------------------------------------------------------------------------
SELECTION_AUDIT_SCALE = 1.5  # Gumbel scale audited when the run plans no selection rounds


def audit_selection(
    table: pd.DataFrame, schema: Schema, config: RunConfig, trials: int, confidence: float
) -> MechanismAudit:
    """The vote of one selection round, on the worst case a hostile coordinator can set up.

    The coordinator chooses the model tables and the public penalty. Two candidates on disjoint
    columns: A's table is the site's exact distribution (the canary's cell is then over-full by one
    row, its score rises by 1), B's has one extra row in the canary's cell (adding the canary fills
    it, the score falls by about 1); the penalty offsets make B win on D by 1. Adding the canary then
    turns the noiseless argmax from B to A; the noisy max may not reveal more than its ρ allows.
    """
    if len(schema.columns) < 4:
        raise ValueError("the selection audit needs a table of at least 4 columns (two disjoint pairs)")
    rounds = config.selection_rounds(len(schema.columns))
    reserved = measurement_noise(config.epsilon, config.delta, max(config.measure_fraction, 0.5), config.accountant)
    scale = MeasurementSchedule(reserved, rounds).select_noise if rounds else SELECTION_AUDIT_SCALE
    coarse = model_layout(schema_bins(schema, config.histogram_bins), config.measure_pair_bins)
    canary = canary_row(schema)
    worlds = [table, pd.concat([table, canary], ignore_index=True)]
    rows = float(len(table))
    cliques = [Clique((0, 1), (coarse[0].size, coarse[1].size)), Clique((2, 3), (coarse[2].size, coarse[3].size))]
    exact = [clique_counts(codes(table, coarse), c) for c in cliques]
    canary_cells = [int(np.flatnonzero(clique_counts(codes(canary, coarse), c))[0]) for c in cliques]
    table_a = exact[0] / rows
    extra = exact[1].copy()
    extra[canary_cells[1]] += 1
    table_b = extra * (1.0 / rows)  # expected counts: the site's counts plus the canary's row
    # One-way margins equal to each table's own, so that raking leaves the tables as they are.
    one_way = [np.zeros(spec.size) for spec in coarse]
    for clique, joint in zip(cliques, (table_a, table_b), strict=True):
        grid = joint.reshape(clique.shape)
        for axis, column in enumerate(clique.columns):
            one_way[column] = grid.sum(axis=1 - axis)
    scores = [selection_scores(codes(w, coarse), cliques, [table_a, table_b], one_way, rows, 0.0) for w in worlds]
    offsets = np.array([-scores[0][0], 1.0 - scores[0][1]])  # on D: A at 0, B at 1

    def noisy_vote(with_canary: bool) -> float:
        return float(NoiseSource.secret_source().noisy_max(scores[int(with_canary)] + offsets, scale) == 0)

    def noiseless_vote(with_canary: bool) -> float:
        return float(np.argmax(scores[int(with_canary)] + offsets) == 0)

    return MechanismAudit(
        mechanism="selection",
        instance=f"one selection vote (noisy max over 2 worst-case candidates), Gumbel scale {scale:.4g}",
        epsilon=epsilon_of([(scale, 1.0, 1)], config.delta, "rdp"),
        honest=audit_mechanism(noisy_vote, trials, config.delta, confidence),
        broken_variant="the vote without noise (the argmax of the scores)",
        broken=audit_mechanism(noiseless_vote, trials, config.delta, confidence),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Distributed noise (selection counts in a secure sum)
# ---------------------------------------------------------------------------------------------------------------------
DISTRIBUTED_AUDIT_SITES = 4  # k sites in the audited secure sum (SecAgg+ threshold 3: three shares counted on)
DISTRIBUTED_AUDIT_NOISE = 4.0  # noise multiplier audited when the run plans no selection rounds


def audit_distributed(
    table: pd.DataFrame, schema: Schema, config: RunConfig, trials: int, confidence: float
) -> MechanismAudit:
    """One clique measurement summed under SecAgg+, each of k sites adding its share of the noise.

    The canary is in one site's rows; the attacker knows every site's rows and sees only the sum (what
    the coordinator unmasks). The claim is the ε of one Gaussian release at the planned noise multiplier,
    which the sum of the shares must carry (``privacy.distributed_noise``).
    """
    rounds = config.selection_rounds(len(schema.columns))
    reserved = measurement_noise(config.epsilon, config.delta, max(config.measure_fraction, 0.5), config.accountant)
    z = MeasurementSchedule(reserved, rounds).clique_noise if rounds else DISTRIBUTED_AUDIT_NOISE
    coarse = model_layout(schema_bins(schema, config.histogram_bins), config.measure_pair_bins)
    clique = Clique((0, 1), (coarse[0].size, coarse[1].size))
    before = clique_counts(codes(table, coarse), clique)
    after = clique_counts(codes(pd.concat([table, canary_row(schema)], ignore_index=True), coarse), clique)
    sites = DISTRIBUTED_AUDIT_SITES
    shares = noise_shares(z, secure_sum_shares(sites, RECONSTRUCTION_SHARE), clique.size)
    share_std = z / math.sqrt(shares)
    known = (sites - 1) * before  # the other sites' counts, known to the white-box attacker

    def secure_sum(canary_in: bool, noise_for_site: Callable[[int], NoiseSource]) -> np.ndarray:
        counts = [after if canary_in else before] + [before] * (sites - 1)
        return np.sum([add_noise([c], share_std, noise_for_site(i))[0] for i, c in enumerate(counts)], axis=0)

    def likelihood_ratio(canary_in: bool) -> float:
        observed = secure_sum(canary_in, lambda _site: NoiseSource.secret_source())
        return float(((observed - known - before) * (after - before)).sum())

    seeded = lambda site: NoiseSource.reproducible(config.seed, f"audit-site-{site}", "counts")  # noqa: E731
    regenerated = secure_sum(False, seeded)

    def seeded_attack(canary_in: bool) -> float:
        return _regenerated_distance(secure_sum(canary_in, seeded), regenerated)

    return MechanismAudit(
        mechanism="distributed",
        instance=f"one {clique.size}-cell clique count summed over {sites} sites, each adding 1/{shares} of the "
        f"variance (share std {share_std:.4g}; the sum's noise multiplier {z * math.sqrt(sites / shares):.4g}, "
        f"claimed at {z:.4g}, the {shares} shares SecAgg+ guarantees)",
        epsilon=epsilon_of([(z, 1.0, 1)], config.delta, "rdp"),
        honest=audit_mechanism(likelihood_ratio, trials, config.delta, confidence),
        broken_variant="noise shares drawn from the seed, regenerated by the attacker",
        broken=audit_mechanism(seeded_attack, trials, config.delta, confidence),
    )


# ---------------------------------------------------------------------------------------------------------------------
# All of them
# ---------------------------------------------------------------------------------------------------------------------
AUDITS = ("histograms", "selection", "distributed", "dp-sgd", "client-level", "feedback", "release-check")


def run_audits(
    table: pd.DataFrame,
    schema: Schema,
    config: RunConfig,
    trials: int = 1000,
    confidence: float = 0.95,
    only: tuple[str, ...] = AUDITS,
    progress: Callable[[str], None] = lambda _line: None,
) -> list[MechanismAudit]:
    """Audit every mechanism in ``only`` on ``table`` (the site's rows D) with ``trials`` runs per world."""
    runners: dict[str, Callable[[], MechanismAudit]] = {
        "histograms": lambda: audit_histograms(table, schema, config, trials, confidence),
        "dp-sgd": lambda: audit_dp_sgd(table, schema, config, trials, confidence),
        "client-level": lambda: audit_client_level(config, trials, confidence),
        "feedback": lambda: audit_feedback(table, schema, config, trials, confidence),
        "selection": lambda: audit_selection(table, schema, config, trials, confidence),
        "distributed": lambda: audit_distributed(table, schema, config, trials, confidence),
        "release-check": lambda: audit_release_check(table, schema, config, trials, confidence),
    }
    results = []
    for name in only:
        progress(f"auditing {name} ({trials} runs with and {trials} without the canary, twice)")
        result = runners[name]()
        verdict = "ok" if result.passed else "FAILED"
        honest, broken = result.honest.epsilon_lower_bound, result.broken.epsilon_lower_bound
        progress(
            f"  {name}: reported ε {result.epsilon:.3f}, empirical lower bound {honest:.3f}; "
            f"broken variant {broken:.3f}: {verdict}"
        )
        results.append(result)
    return results
