"""``report.json``: the run's contract with the tools that read it.

The privacy section states, per site, the ε that Opacus's accountant computed
for what the site actually spent, with the δ, noise, sampling rate and steps
behind it, the neighbouring relation it holds under, where the noise came from,
and what the coordinator learns without DP. A run with reproducible noise says
in words that it is NOT differentially private and gives no ε as a guarantee.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedsynth.core import __version__
from fedsynth.core.config import RunConfig
from fedsynth.strategies.gan_fedavg import RoundLog

NOISE_SECRET = "ChaCha20 keyed from the operating system's CSPRNG per mechanism; counts: OpenDP discrete Gaussian"
NOISE_REPRODUCIBLE = "derived from the run's seed (reproducible-noise = true)"
NOT_DP_WARNING = (
    "NOT differentially private: this run drew its noise from its seed (reproducible-noise = true), so anyone "
    "who knows the configuration can regenerate the noise and remove it; no ε holds"
)

SITE_FIELDS = {
    "epsilon": "epsilon",
    "delta": "delta",
    "steps": "steps",
    "max-steps": "max_steps",
    "noise-multiplier": "noise_multiplier",
    "sample-rate": "sample_rate",
    "num-examples": "num_examples",
    "budget-exhausted": "budget_exhausted",
    "epsilon-if-sums-opened": "epsilon_if_secure_sums_opened",
}

DISTRIBUTED_NOISE_TRUST = (
    "the selection rounds' clique counts entered SecAgg+ sums, each site adding a share of the noise "
    "(distributed discrete Gaussian, Kairouz et al. 2021): the ε above holds while the coordinator sees only "
    "those sums and at least the SecAgg+ threshold of sites in each sum added their shares honestly (the "
    "threshold is the fewest sites whose sum can be unmasked); epsilon_if_secure_sums_opened is a site's ε "
    "if a sum were opened and its own share were all that protected its counts"
)


def json_safe(value: Any) -> Any:
    """NaN and Inf become null; numpy scalars become plain numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def privacy_section(config: RunConfig, site_metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    sites = {}
    for name, metrics in sorted(site_metrics.items()):
        site = {out: metrics[key] for key, out in SITE_FIELDS.items() if key in metrics}
        site["budget_exhausted"] = bool(site.get("budget_exhausted", 0))
        site["max_grad_norm"] = config.max_grad_norm
        sites[name] = site
    epsilons = [s["epsilon"] for s in sites.values() if "epsilon" in s]
    section = {
        "differentially_private": not config.reproducible_noise,
        "unit": "record",
        "neighbouring": "add or remove one row at one site; every setting of the mechanism (sampling rate, "
        "batch sizes, noise, sensitivities) comes from public values or the site's DP row count, never its exact count",
        "mechanism": "DP histograms (discrete Gaussian) and DP-SGD on the discriminator (Opacus ghost clipping, "
        "Poisson sampling); the generator and everything the server does are post-processing",
        "release_check": "the release gate's check is DP: each site releases once per run noisy counts of its real "
        "rows that the released table copies or comes close to (sensitivity 1 each), with discrete Gaussian noise "
        f"at noise multiplier release-check-noise = {config.release_check_noise:g}, charged to its accountant",
        "noise_source": NOISE_SECRET if not config.reproducible_noise else NOISE_REPRODUCIBLE,
        "delta": config.delta,
        "epsilon_target": config.epsilon,
        "accountant": config.accountant,
        "max_grad_norm": config.max_grad_norm,
        "sites": sites,
        "epsilon_max": max(epsilons) if epsilons else 0.0,
        "disclosed_without_dp": [],
    }
    if any("epsilon_if_secure_sums_opened" in s for s in sites.values()):
        section["distributed_noise"] = DISTRIBUTED_NOISE_TRUST
    if config.reproducible_noise:
        # The accountant's figure describes noise nobody can predict; this run's noise is predictable.
        section["warning"] = NOT_DP_WARNING
        section["epsilon_if_noise_were_secret"] = section.pop("epsilon_max")
        section["epsilon_max"] = None
    return section


def rounds_section(history: list[RoundLog], round_seconds: list[float]) -> list[dict[str, Any]]:
    out = []
    for entry, seconds in zip(history, round_seconds, strict=False):
        out.append(
            {
                "round": entry.round,
                "seconds": seconds,
                "aggregated": entry.aggregated,
                "idle": entry.idle,
                "rejected": entry.rejected,
                "failed": entry.failed,
                "missing": entry.missing,
                "sites": entry.sites,
            }
        )
    return out


def build_report(
    config: RunConfig,
    site_metrics: dict[str, dict[str, Any]],
    history: list[RoundLog],
    timings: dict[str, Any],
    outputs: dict[str, Any],
) -> dict[str, Any]:
    return json_safe(
        {
            "fedsynth_version": __version__,
            "privacy": privacy_section(config, site_metrics),
            "rounds_completed": len(history),
            "rounds": rounds_section(history, timings.get("rounds_seconds", [])),
            "config": config.to_mapping(),
            "timings": timings,
            "outputs": outputs,
        }
    )


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
