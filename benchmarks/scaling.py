"""Round time and memory at 2, 10 and 50 simulated sites, with a fixed total amount of data.

The HI table (22,272 rows) is split IID into N sites, so every configuration
trains on the same rows; only how many sites hold them changes. Each run goes
through ``fedsynth simulate``'s own path (``prepare_simulation`` +
``run_simulation``: Flower's simulation runtime, 2 CPUs, one per ClientApp).

Reported per N: wall time of the whole run, the median steady-state round
(rounds 2..R, from the ServerApp's ``report.json``), and the peak resident memory
of all Flower and Ray processes together (sampled every 0.25 s from /proc), plus
that peak divided by N. Memory that grows with N while the work stays fixed would
mean each idle site costs memory.

    python benchmarks/scaling.py [--sites 2 10 50] [--rounds 4] [--local-steps 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from fedsynth.core.config import RunConfig
from fedsynth.simulations.runner import run_simulation
from fedsynth.simulations.setup import prepare_simulation

WATCHED = ("flower-", "flwr-", "ray::", "raylet", "gcs_server")


def _rss_of_flower_processes() -> int:
    """Resident bytes of every Flower/Ray process on the machine."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not any(w in cmdline for w in WATCHED):
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class PeakSampler:
    """Samples total RSS in a thread; ``peak`` holds the largest value seen."""

    def __init__(self, every: float = 0.25) -> None:
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_of_flower_processes())
            time.sleep(self.every)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_one(sites: int, rounds: int, local_steps: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"fedsynth-scaling-{sites}-"))
    config = RunConfig(partition="iid", clients=sites, rounds=rounds, local_steps=local_steps, out=str(out))
    plan = prepare_simulation(config, echo=lambda _: None)
    config = dataclasses.replace(plan.config, min_sites=sites)
    started = time.time()
    with PeakSampler() as sampler:
        result = run_simulation(config, plan.num_sites, echo=lambda _: None)
    wall = time.time() - started
    report_path = out / "report.json"
    if not report_path.exists():
        return {"sites": sites, "error": (result.errors or result.flower_errors or ["no report"])[-1]}
    timings = json.loads(report_path.read_text())["timings"]
    rounds_seconds = timings["rounds_seconds"]
    steady = rounds_seconds[1:] or rounds_seconds
    parts = timings.get("round_parts", [])[1:] or timings.get("round_parts", [])
    median = lambda key: statistics.median(p.get(key, 0.0) for p in parts) if parts else float("nan")  # noqa: E731
    return {
        "sites": sites,
        "rows_per_site": min(plan.site_rows.values()),
        "wall_seconds": wall,
        "round1_seconds": rounds_seconds[0],
        "steady_round_median": statistics.median(steady),
        "steady_round_min": min(steady),
        "steady_round_max": max(steady),
        "peak_rss_mib": sampler.peak / 2**20,
        "peak_rss_per_site_mib": sampler.peak / 2**20 / sites,
        # The steady round split by the ServerApp's timers: each site's own handler seconds (its work,
        # including building the model, Opacus set-up and its ε), the exchange's rest (messaging,
        # scheduling: the exchange minus the sites' work on 2 CPUs), and the server's own parts.
        "site_handler_seconds": median("site_seconds_sum") / sites,
        "exchange_rest_seconds": median("exchange") - median("site_seconds_sum") / 2,
        "server_parts_seconds": median("aggregate") + median("checkpoint") + median("validator") + median("other"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[2, 10, 50])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-steps", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    for sites in args.sites:
        print(f"running {sites} sites ...", flush=True)
        results.append(run_one(sites, args.rounds, args.local_steps))
    print()
    print(f"{'sites':>5} {'rows/site':>9} {'wall s':>7} {'round1 s':>8} {'steady round s (min-max)':>26} "
          f"{'peak RSS MiB':>12} {'MiB/site':>9} {'site s':>7} {'msg s':>6} {'server s':>8}")  # fmt: skip
    for r in results:
        if "error" in r:
            print(f"{r['sites']:>5} error: {r['error']}")
            continue
        print(f"{r['sites']:>5} {r['rows_per_site']:>9} {r['wall_seconds']:>7.1f} {r['round1_seconds']:>8.1f} "
              f"{r['steady_round_median']:>10.2f} ({r['steady_round_min']:.2f}-{r['steady_round_max']:.2f})"
              f"{'':>6} {r['peak_rss_mib']:>12.0f} {r['peak_rss_per_site_mib']:>9.1f} "
              f"{r['site_handler_seconds']:>7.3f} {r['exchange_rest_seconds']:>6.2f} "
              f"{r['server_parts_seconds']:>8.2f}")  # fmt: skip
    print(
        "site s: one site's handler seconds per round (its work); msg s: the exchange minus the sites' work on "
        "2 CPUs (messaging, scheduling); server s: aggregation + checkpoint + validator per round"
    )
    ok = [r for r in results if "error" not in r]
    if len(ok) >= 2:
        first, last = ok[0], ok[-1]
        print(f"\nfrom {first['sites']} to {last['sites']} sites: steady round x"
              f"{last['steady_round_median'] / first['steady_round_median']:.2f}, peak memory x"
              f"{last['peak_rss_mib'] / first['peak_rss_mib']:.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
