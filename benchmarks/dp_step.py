"""What differential privacy costs per training step, on the default HI setup.

Setup: the codec of ``tabular/datasets/hi.yaml``, the ``Discriminator`` and
``Generator`` of ``models/gan.py`` with the hidden sizes of ``RunConfig()``, a
discriminator batch of ``RunConfig().batch_size`` real HI rows plus the same
number of generated rows, ``torch.set_num_threads(1)`` (a simulated site gets one
CPU). Every variant starts from the same initial weights.

Rows of the first table, per step, in milliseconds:

- ``D step, no DP``: the baseline. Plain Adam, ``BCEWithLogitsLoss`` on real and
  fake rows concatenated, forward + backward + optimizer step.
- ``D step, DP ghost (ours)``: ``privacy.dp_training.make_private_discriminator``
  + ``discriminator_step``: Opacus fast gradient ("ghost") clipping, secret noise
  (ChaCha20 from the OS CSPRNG, four Gaussians summed) and the accountant's step,
  i.e. what a site runs.
- ``D step, DP ghost (Opacus)``: the same step through ``PrivacyEngine.make_private``,
  with Opacus's own noise from torch's generator (not secret): against the row above,
  what secret noise costs.
- ``D step, DP <mode> (Opacus)``: the same shapes through
  ``PrivacyEngine.make_private(grad_sample_mode=<mode>)`` with the per-sample
  gradient modes ``hooks``, ``functorch`` and ``ew``; a mode that fails on these
  layers is skipped with its reason printed.
- ``G step``: one generator step, without DP (through the plain discriminator,
  frozen) and ours (``privacy.dp_training.generator_step`` through the wrapped
  discriminator with its hooks off).

The fixed batches are prepared before timing: the D rows do not include making
the fake rows (``fake batch`` shows that cost on its own).

Then the same D step split into its phases (forward, ``loss.backward()``,
``optimizer.step()``), no DP against ours: the profile of where DP's cost sits.

The last table is a full local round: ``client.task.train_round`` with
``RunConfig()`` defaults (``local_steps`` DP discriminator steps on Poisson
batches, a generator step every ``d_steps``, Opacus set-up included) on one HI
region, against a non-DP loop of the same number of D and G steps on uniform
batches of the same size. The site's budget is planned once, outside the timing.

How to read it: "median" is the median over ``--repeats`` repeats, each the mean
of a block of steps after warm-up; "min"/"max" are the extreme repeats. "x no-DP"
is median / median of the matching no-DP row: the price of privacy per step.
"wall/CPU" is the timed blocks' wall time over this process's CPU time: near
1.00 nothing else took the CPU from us; well above it, another program shared
the machine and the row is inflated (the script warns; rerun when idle).
Absolute numbers depend on the machine; the ratios are what carry over.

    python benchmarks/dp_step.py [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import opacus
import torch
from cpu_load import cpu_busy  # benchmarks/ sits first on sys.path when a script runs
from opacus import PrivacyEngine
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from fedsynth.client.task import train_round
from fedsynth.core.config import RunConfig
from fedsynth.models.gan import Discriminator, GanShape, Generator, build_gan
from fedsynth.privacy.budget import SiteBudget
from fedsynth.privacy.dp_training import (
    discriminator_step,
    fake_batch,
    generator_step,
    make_private_discriminator,
    sample_rate_for,
)
from fedsynth.privacy.secret_noise import NoiseSource
from fedsynth.privacy.site_plan import plan_for_rate
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.datasets import DEFAULT_DATA, DEFAULT_SCHEMA
from fedsynth.tabular.loading import load_table
from fedsynth.tabular.schema import load_schema

PER_SAMPLE_MODES = ("ghost", "hooks", "functorch", "ew")
BLOCK_SECONDS = 0.15  # aim for blocks of about this long, so slow modes do not dominate the run


# ---- timing helpers ---------------------------------------------------------------------------


def time_steps(
    step: Callable[[], object], warmup: int, repeats: int, max_block: int, baseline: dict | None = None
) -> dict:
    """Milliseconds per call of ``step``: one mean per repeat, over a block sized from the warm-up.

    ``wall_over_cpu`` is the timed blocks' wall time over this process's CPU time: near 1.0
    when nothing else took the CPU from us while we were timing.
    """
    started = time.perf_counter()
    for _ in range(warmup):
        step()
    per_call = (time.perf_counter() - started) / max(1, warmup)
    block = max(1, min(max_block, math.ceil(BLOCK_SECONDS / max(per_call, 1e-6))))
    samples = []
    wall = cpu = 0.0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(block):
            step()
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        samples.append((time.perf_counter() - t0) / block * 1000.0)
    row = {
        "median_ms": statistics.median(samples),
        "min_ms": min(samples),
        "max_ms": max(samples),
        "samples_ms": samples,
        "steps_per_repeat": block,
        "wall_over_cpu": wall / max(cpu, 1e-9),
    }
    if baseline is not None:
        row["ratio_vs_no_dp"] = row["median_ms"] / baseline["median_ms"]
    return row


def print_table(title: str, rows: dict[str, dict], unit: str = "ms") -> None:
    width = max(len(name) for name in rows) + 2
    print(f"\n{title}")
    print(f"{'':{width}}{'median ' + unit:>14}{'min':>11}{'max':>11}{'x no-DP':>10}{'wall/CPU':>10}")
    for name, row in rows.items():
        if "skipped" in row:
            print(f"{name:{width}}  skipped: {row['skipped']}")
            continue
        ratio = f"{row['ratio_vs_no_dp']:.2f}x" if "ratio_vs_no_dp" in row else "-"
        print(
            f"{name:{width}}{row['median_ms']:>14.3f}{row['min_ms']:>11.3f}{row['max_ms']:>11.3f}{ratio:>10}"
            f"{row['wall_over_cpu']:>10.2f}"
        )


# ---- the steps --------------------------------------------------------------------------------


def plain_d_step(module: nn.Module, optimizer: torch.optim.Optimizer, rows: torch.Tensor, labels: torch.Tensor):
    criterion = nn.BCEWithLogitsLoss()

    def step() -> None:
        optimizer.zero_grad()
        loss = criterion(module(rows), labels)
        loss.backward()
        optimizer.step()

    return step


def plain_g_step(generator: Generator, optimizer: torch.optim.Optimizer, discriminator: nn.Module, size: int):
    """The non-DP twin of ``generator_step``: through the frozen discriminator."""

    def step() -> None:
        params = list(discriminator.parameters())
        for p in params:
            p.requires_grad_(False)
        try:
            logits = discriminator(generator(torch.randn(size, generator.noise_dim)))
            loss = F.binary_cross_entropy_with_logits(logits, torch.ones(size))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        finally:
            for p in params:
                p.requires_grad_(True)

    return step


def opacus_d_step(mode: str, base: Discriminator, data: torch.Tensor, rows, labels, config: RunConfig, noise: float):
    """A D step through ``PrivacyEngine.make_private`` with a per-sample gradient mode."""
    module = copy.deepcopy(base)
    engine = PrivacyEngine(accountant=config.accountant)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr_discriminator, betas=(0.5, 0.9))
    out = engine.make_private(
        module=module,
        optimizer=optimizer,
        data_loader=DataLoader(TensorDataset(data), batch_size=config.batch_size),
        criterion=nn.BCEWithLogitsLoss(),
        noise_multiplier=noise,
        max_grad_norm=config.max_grad_norm,
        grad_sample_mode=mode,
        poisson_sampling=True,
    )
    private_module, dp_optimizer = out[0], out[1]
    criterion = out[2] if mode == "ghost" else nn.BCEWithLogitsLoss()  # ghost: the two-pass DP loss

    def step() -> None:
        dp_optimizer.zero_grad()
        loss = criterion(private_module(rows), labels)
        loss.backward()
        dp_optimizer.step()

    return step


PHASES = {
    "forward": "forward (DP: hooks keep each layer's activations)",
    "backward": "loss.backward() (DP: per-row norms, then a 2nd backward)",
    "step": "optimizer.step() (DP: clip, accumulate, noise, accountant)",
}


def phase_times(
    module: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module, rows, labels, steps: int
) -> dict[str, float]:
    """Median ms of the three phases of a D step; the DP one mirrors ``discriminator_step``."""
    samples: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for i in range(steps + 10):
        optimizer.zero_grad()
        t0 = time.perf_counter()
        loss = criterion(module(rows), labels)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if i >= 10:  # warm-up
            for phase, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                samples[phase].append(seconds)
    return {phase: 1000 * statistics.median(values) for phase, values in samples.items()}


def plain_round(generator: Generator, discriminator: Discriminator, real: torch.Tensor, config: RunConfig) -> None:
    """``train_round`` without DP: same step counts, uniform real batches of ``batch_size`` rows."""
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=config.lr_discriminator, betas=(0.5, 0.9))
    g_opt = torch.optim.Adam(generator.parameters(), lr=config.lr_generator, betas=(0.5, 0.9))
    size = config.batch_size
    labels = torch.cat([torch.ones(size), torch.zeros(size)])
    criterion = nn.BCEWithLogitsLoss()
    g_step = plain_g_step(generator, g_opt, discriminator, size)
    for step in range(config.local_steps):
        fake = fake_batch(generator, size, config.noise_dim)
        batch = real[torch.randint(len(real), (size,))]
        d_opt.zero_grad()
        criterion(discriminator(torch.cat([batch, fake])), labels).backward()
        d_opt.step()
        if (step + 1) % config.d_steps == 0:
            g_step()


# ---- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per step variant (default 7)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up steps per variant (default 10)")
    parser.add_argument("--max-block", type=int, default=50, help="most steps in one timed repeat (default 50)")
    parser.add_argument("--round-repeats", type=int, default=5, help="timed repeats of the full round (default 5)")
    parser.add_argument("--region", default="northcentral", help="HI region for the full round")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    busy_before = cpu_busy()
    if busy_before > 0.15:
        print(f"WARNING: {busy_before:.0%} of the CPUs busy before start: other processes will skew the timings")
    wall = time.perf_counter()

    config = RunConfig()
    schema = load_schema(DEFAULT_SCHEMA)
    codec = TableCodec(schema)
    table = load_table(DEFAULT_DATA, schema)
    data = torch.from_numpy(codec.encode(table))
    shape = GanShape.for_run(config, codec.dim)
    generator, base_d = build_gan(codec, shape, seed=config.seed)
    size = config.batch_size
    real = data[torch.randperm(len(data))[:size]]
    fake = fake_batch(generator, size, config.noise_dim)
    rows = torch.cat([real, fake])
    labels = torch.cat([torch.ones(size), torch.zeros(size)])
    # A fixed noise level: the step's cost does not depend on it, and planning it is not timed here.
    noise = 1.0
    sample_rate = sample_rate_for(len(data), size)

    print(
        f"D step on HI: {size} real + {size} fake rows of {codec.dim} columns; "
        f"D {codec.dim}-{shape.discriminator_hidden}-{shape.discriminator_hidden}-1, "
        f"G {shape.noise_dim}-{shape.generator_hidden}-{shape.generator_hidden}-{codec.dim}; "
        f"torch {torch.__version__}, opacus {opacus.__version__}, 1 thread"
    )
    timing = {"warmup": args.warmup, "repeats": args.repeats, "max_block": args.max_block}

    step_rows: dict[str, dict] = {}
    d_plain = copy.deepcopy(base_d)
    d_opt = torch.optim.Adam(d_plain.parameters(), lr=config.lr_discriminator, betas=(0.5, 0.9))
    no_dp = time_steps(plain_d_step(d_plain, d_opt, rows, labels), **timing)
    step_rows["D step, no DP"] = no_dp

    budget = SiteBudget(config.epsilon, config.delta, config.accountant, noise, sample_rate, max_steps=10**9)
    private = make_private_discriminator(
        copy.deepcopy(base_d), data, budget, size, config.max_grad_norm, config.lr_discriminator,
        NoiseSource.secret_source(),
    )  # fmt: skip
    step_rows["D step, DP ghost (ours)"] = time_steps(
        lambda: discriminator_step(private, real, fake), **timing, baseline=no_dp
    )

    skipped: dict[str, str] = {}
    for mode in PER_SAMPLE_MODES:
        name = f"D step, DP {mode} (Opacus)"
        try:
            step = opacus_d_step(mode, base_d, data, rows, labels, config, noise)
            step_rows[name] = time_steps(step, **timing, baseline=no_dp)
        except Exception as exc:  # a mode that cannot handle these layers: report and go on
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
            skipped[mode] = reason
            step_rows[name] = {"skipped": reason}

    step_rows["fake batch (G forward, no grad)"] = time_steps(
        lambda: fake_batch(generator, size, config.noise_dim), **timing
    )
    g_plain = copy.deepcopy(generator)
    g_plain_opt = torch.optim.Adam(g_plain.parameters(), lr=config.lr_generator, betas=(0.5, 0.9))
    g_no_dp = time_steps(plain_g_step(g_plain, g_plain_opt, copy.deepcopy(base_d), size), **timing)
    step_rows["G step, no DP"] = g_no_dp
    g_dp = copy.deepcopy(generator)
    g_dp_opt = torch.optim.Adam(g_dp.parameters(), lr=config.lr_generator, betas=(0.5, 0.9))
    step_rows["G step, through DP D (ours)"] = time_steps(
        lambda: generator_step(g_dp, g_dp_opt, private, size, config.noise_dim), **timing, baseline=g_no_dp
    )
    print_table("Per step (ms; x no-DP against the matching no-DP row)", step_rows)
    for mode, reason in skipped.items():
        print(f"  skipped {mode}: {reason}")

    phase_steps = args.repeats * 20
    phases = {
        "no DP": phase_times(d_plain, d_opt, nn.BCEWithLogitsLoss(), rows, labels, phase_steps),
        "DP ghost (ours)": phase_times(private.module, private.optimizer, private.criterion, rows, labels, phase_steps),
    }
    print("Where a D step's time goes (ms, median over steps; same rows as above)")
    print(f"  {'phase':<58}{'no DP':>10}{'DP ghost':>10}{'x':>8}")
    for phase in PHASES:
        plain, dp = phases["no DP"][phase], phases["DP ghost (ours)"][phase]
        print(f"  {PHASES[phase]:<58}{plain:>10.3f}{dp:>10.3f}{dp / plain:>8.2f}")

    # ---- a full local round on one region ----
    region = data[torch.from_numpy((table["region"] == args.region).to_numpy())]
    if len(region) == 0:
        parser.error(f"no HI rows with region={args.region!r}")
    planned = plan_for_rate(config, sample_rate_for(len(region), size))
    g_steps = config.local_steps // config.d_steps

    def dp_round() -> None:
        g, d = copy.deepcopy(generator), copy.deepcopy(base_d)
        outcome = train_round(
            g, d, region, dataclasses.replace(planned, history=[]), config, NoiseSource.secret_source()
        )
        if outcome.trained_steps != config.local_steps:
            raise RuntimeError(f"train_round took {outcome.trained_steps} steps, expected {config.local_steps}")

    def no_dp_round() -> None:
        plain_round(copy.deepcopy(generator), copy.deepcopy(base_d), region, config)

    round_timing = {"warmup": 1, "repeats": args.round_repeats, "max_block": 1}
    round_no_dp = time_steps(no_dp_round, **round_timing)
    round_rows = {
        f"round, no DP ({config.local_steps} D + {g_steps} G steps)": round_no_dp,
        "round, DP: client.task.train_round": time_steps(dp_round, **round_timing, baseline=round_no_dp),
    }
    print_table(
        f"Full local round on region={args.region} ({len(region)} rows, local_steps={config.local_steps}, "
        f"d_steps={config.d_steps}, batch {size}, noise {planned.noise_multiplier:.3f}) (ms per round)",
        round_rows,
    )
    elapsed = time.perf_counter() - wall
    busy_after = cpu_busy()
    worst = max(r["wall_over_cpu"] for r in [*step_rows.values(), *round_rows.values()] if "wall_over_cpu" in r)
    if worst > 1.1:
        print(f"\nWARNING: wall/CPU up to {worst:.2f}: other programs shared the CPUs; rerun when idle")
    print(
        f"\n{args.repeats} repeats per step row ({args.round_repeats} per round row); total {elapsed:.1f}s; "
        f"CPUs busy with other work before {busy_before:.0%}, after {busy_after:.0%}"
    )

    if args.json:
        payload = {
            "benchmark": "dp_step",
            "setup": {
                "data": DEFAULT_DATA,
                "schema": DEFAULT_SCHEMA,
                "data_dim": codec.dim,
                "batch_real": size,
                "batch_fake": size,
                "discriminator_hidden": shape.discriminator_hidden,
                "generator_hidden": shape.generator_hidden,
                "noise_dim": shape.noise_dim,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "opacus": opacus.__version__,
                "python": platform.python_version(),
                "region": args.region,
                "region_rows": len(region),
                "local_steps": config.local_steps,
                "d_steps": config.d_steps,
                "round_noise_multiplier": planned.noise_multiplier,
                **timing,
                "round_repeats": args.round_repeats,
                "cpu_busy_before": busy_before,
                "cpu_busy_after": busy_after,
            },
            "steps": step_rows,
            "round": round_rows,
            "skipped_modes": skipped,
            "seconds": elapsed,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
