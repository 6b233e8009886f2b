"""What Flower's simulation runtime adds to a federated round, at 4 natural HI sites.

The same local work is timed two ways:

(i) In one process, no Flower. For each of the 4 region sites, the work the
    ClientApp does in a round without its messaging: read the site's rows
    (``client.site_data.load_site``, cached as in a simulation worker), build
    G+D and load the global weights (``models.packing.unpack``),
    ``client.task.train_round`` with the run's config, and pack the update.
    Each site's budget is planned once beforehand (``privacy.site_plan.plan_for_rate``,
    not timed; its cost is shown on its own line). Run for the 4 sites
    sequentially, then on a 2-worker ``multiprocessing`` pool (spawned, one torch
    thread each), which mirrors the simulation: 2 CPUs, one CPU per ClientApp.
    A warm-up round comes first; each repeat is one round of 4 sites.
(ii) Flower: ``simulations.setup.prepare_simulation`` and
    ``simulations.runner.run_simulation`` on a ``RunConfig`` with ``rounds=R``,
    as ``fedsynth simulate`` does. Per-round seconds come from the ServerApp's
    ``OUT/report.json`` ``timings.rounds_seconds``. Round 1 also pays first-use
    costs (Ray workers, sites planning their budgets, unless a DP measurement
    phase before round 1 already did); rounds 2..R are the steady state.

How to read it: "wall" is the whole ``run_simulation`` call; "start-up +
teardown" is wall minus the sum of the rounds, split with the ServerApp's own
timings into its work before round 1, its work after the last round (sampling,
report) and the rest (launching and stopping the SuperLink, simulation and Ray).
"Flower overhead per round" is the steady-state round minus the in-process
2-worker round, and the ratio is steady-state / in-process (2 workers): near
1.0x means Flower costs little per round beyond the work itself.
"Update size" is one site's reply (or the global model the server sends): the
parameter count x 4 bytes, the bytes of the packed ``ArrayRecord``'s arrays, and
Flower's serialised objects (record + arrays + deduplicated chunks, as sent).
Checks for a shared machine: "site wall / CPU time" near 1.0x means nothing
else competed with the in-process work; the last lines give the CPU seconds
other programs used during each phase (sampled from /proc). If either is
noticeable the script warns: the figures are inflated, rerun when idle.

Median, min and max are over the repeats (in-process) or rounds 2..R (Flower).
The script starts real Flower processes. It finds them afterwards by an
environment tag and by their working directory (the run's private Flower home),
reports those still alive when ``run_simulation`` returns, waits ``--linger``
seconds and stops by PID any that remain. It never touches other processes.

    python benchmarks/round_overhead.py [--rounds 4] [--local-steps 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
from cpu_load import cpu_busy  # benchmarks/ sits first on sys.path when a script runs

from fedsynth.client.site_data import load_site, schema_from_text
from fedsynth.client.task import train_round
from fedsynth.core.config import RunConfig
from fedsynth.models.gan import GanShape, build_gan
from fedsynth.models.packing import pack, unpack
from fedsynth.privacy.budget import SiteBudget, clear_epsilon_cache
from fedsynth.privacy.dp_training import sample_rate_for
from fedsynth.privacy.secret_noise import NoiseSource
from fedsynth.privacy.site_plan import plan_for_rate
from fedsynth.simulations.runner import is_alive, run_simulation, stop_processes
from fedsynth.simulations.setup import prepare_simulation
from fedsynth.tabular.codec import TableCodec
from fedsynth.tabular.datasets import resolve_schema_path
from fedsynth.tabular.schema import dump_schema_text, load_schema

TAG_VAR = "FEDSYNTH_BENCHMARK_TAG"
WORKERS = 2
NAME_WIDTH = 58

# Per-process state for the site work (set by ``init_worker`` in the parent and in each pool worker).
W = SimpleNamespace()


# ---- the local work of one site ----------------------------------------------------------------


def init_worker(config_map: dict, schema_text: str, budgets: list[dict], num_sites: int) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    W.config = RunConfig.from_mapping(config_map)
    W.config_map = config_map
    W.schema_text = schema_text
    W.budgets = [SiteBudget.from_state(b) for b in budgets]
    codec = TableCodec(schema_from_text(schema_text))
    W.codec = codec
    W.shape = GanShape.for_run(W.config, codec.dim)
    W.global_arrays = pack(*build_gan(codec, W.shape, seed=W.config.seed))
    for site_id in range(num_sites):  # fill the per-process cache, as a simulation worker's first round does
        load_site({"partition-id": site_id}, config_map, schema_text)


def site_work(args: tuple[int, int]) -> tuple[float, float]:
    """One site's round, as the ClientApp does it minus Flower; returns (wall, CPU) seconds."""
    site_id, round_no = args
    # Every repeat replays the same first round, whose ε the accountant cache would then answer for
    # free; in a federation each round's history is new, so the baseline computes it every time.
    clear_epsilon_cache()
    started = time.perf_counter()
    cpu_started = time.process_time()
    site = load_site({"partition-id": site_id}, W.config_map, W.schema_text)
    torch.manual_seed(1000 * round_no + site_id)
    generator, discriminator = build_gan(W.codec, W.shape)
    unpack(W.global_arrays, generator, discriminator)
    budget = dataclasses.replace(W.budgets[site_id], history=[])
    outcome = train_round(generator, discriminator, site.encoded, budget, W.config, NoiseSource.secret_source())
    if outcome.trained_steps != W.config.local_steps:
        raise RuntimeError(f"site {site_id} trained {outcome.trained_steps} steps, expected {W.config.local_steps}")
    pack(generator, discriminator)
    _ = outcome.budget.spent  # the ε the ClientApp reports in its reply (one accountant evaluation)
    return time.perf_counter() - started, time.process_time() - cpu_started


# ---- helpers ---------------------------------------------------------------------------------------


def print_round_parts(parts: list[dict], in_process: float) -> None:
    """Where a steady-state round's seconds go, from the ServerApp's own timers (medians over rounds)."""
    if not parts:
        return
    med = {key: statistics.median(p.get(key, 0.0) for p in parts) for key in parts[0]}
    site_work = max(med["site_seconds_max"], med["site_seconds_sum"] / WORKERS)
    print("Steady-state round, split by the ServerApp's timers (medians)")
    for name, value in (
        ("exchange: send, sites' work, receive", med["exchange"]),
        (f"  sites' own handler seconds (sum / {WORKERS} workers, or the slowest)", site_work),
        ("  messaging, serialisation, scheduling (the rest)", med["exchange"] - site_work),
        ("aggregation (checks, FedAvg, ledgers)", med.get("aggregate", 0.0)),
        ("checkpoint (write + sha256)", med["checkpoint"]),
        ("validator (sample + health scores)", med["validator"]),
        ("other (config, progress line)", med["other"]),
        ("saving the run state (after the round's clock)", med.get("state_save_after", 0.0)),
    ):
        print(f"  {name:<{NAME_WIDTH + 8}}{value:>10.3f} s")
    label = f"in-process round ({WORKERS} processes), for comparison"
    print(f"  {label:<{NAME_WIDTH + 8}}{in_process:>10.3f} s")


def stats(samples: list[float]) -> dict:
    if not samples:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0, "samples": []}
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
        "samples": samples,
    }


class OtherCpu:
    """CPU seconds used by programs other than this benchmark while it runs (sampled from /proc).

    A process is ours when it is this one, carries our environment tag (pool workers,
    flwr and its children) or works under ``root`` (Ray renames its processes over
    their environment). Processes that start and end between two samples are missed,
    so this is a lower bound.
    """

    def __init__(self, tag: str, root: str, interval: float = 0.5) -> None:
        self.needle = f"{TAG_VAR}={tag}".encode()
        self.root = root
        self.interval = interval
        self.ticks = os.sysconf("SC_CLK_TCK")
        self._ours: dict[tuple[int, int], bool] = {}
        self._stop = threading.Event()

    def _is_ours(self, pid: int, start: int) -> bool:
        key = (pid, start)
        if key not in self._ours:
            entry = Path(f"/proc/{pid}")
            try:
                ours = pid == os.getpid() or self.needle in (entry / "environ").read_bytes().split(b"\0")
                ours = ours or os.readlink(entry / "cwd").startswith(self.root)
            except OSError:
                ours = False
            self._ours[key] = ours
        return self._ours[key]

    def _snapshot(self) -> dict[int, tuple[int, int]]:
        """pid -> (start time, CPU ticks) of the other programs' processes."""
        snap = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            pid, start = int(entry.name), int(fields[19])
            if not self._is_ours(pid, start):
                snap[pid] = (start, int(fields[11]) + int(fields[12]))
        return snap

    def _run(self) -> None:
        boot_ticks = float(Path("/proc/uptime").read_text().split()[0]) * self.ticks
        previous = self._snapshot()
        while not self._stop.wait(self.interval):
            current = self._snapshot()
            for pid, (start, cpu) in current.items():
                if pid in previous and previous[pid][0] == start:
                    self.seconds += (cpu - previous[pid][1]) / self.ticks
                elif start >= boot_ticks:  # started during the window: all its CPU is new
                    self.seconds += cpu / self.ticks
            previous = current

    def start(self) -> OtherCpu:
        self.seconds = 0.0
        self.started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> OtherCpu:
        self._stop.set()
        self._thread.join()
        self.elapsed = time.perf_counter() - self.started
        return self

    @property
    def share(self) -> float:
        """Other programs' CPU as a share of all CPUs over the window."""
        return self.seconds / max(1e-9, self.elapsed * (os.cpu_count() or 1))


def run_processes(tag: str, root: str) -> list[tuple[int, str]]:
    """(pid, command line) of live processes of our run: our tag in their environment, or a
    working directory under ``root`` (Ray renames its processes over their environment)."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            ours = needle in (entry / "environ").read_bytes().split(b"\0")
            ours = ours or os.readlink(entry / "cwd").startswith(root)
            if not ours or not is_alive(int(entry.name)):
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append((int(entry.name), cmd))
    return found


def update_sizes(arrays) -> dict:
    params = sum(int(a.numpy().size) for a in arrays.values())
    array_bytes = sum(len(a.data) for a in arrays.values())
    seen: dict[str, int] = {}

    def walk(obj) -> None:
        if obj.object_id in seen:
            return
        seen[obj.object_id] = len(obj.deflate())
        for child in (obj.children or {}).values():
            walk(child)

    walk(arrays)
    return {
        "parameters": params,
        "arrays": len(arrays),
        "param_bytes_float32": params * 4,
        "array_record_bytes": array_bytes,
        "flower_object_bytes": sum(seen.values()),
        "flower_objects": len(seen),
    }


def row(name: str, s: dict, unit: str = "s") -> str:
    return f"{name:<{NAME_WIDTH}}{s['median']:>10.3f}{s['min']:>10.3f}{s['max']:>10.3f}{s['n']:>5}  {unit}"


# ---- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    defaults = RunConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="Flower rounds (default 4; rounds 2.. are steady state)")
    parser.add_argument("--local-steps", type=int, default=defaults.local_steps,
                        help=f"DP discriminator steps per site per round (default {defaults.local_steps})")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="in-process rounds timed per mode (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--verbose", action="store_true", help="show the simulation's progress lines")
    parser.add_argument("--linger", type=float, default=10.0,
                        help="seconds the run's processes may take to exit before they are killed")  # fmt: skip
    parser.add_argument("--keep-out", action="store_true", help="keep the simulation's output folder")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (round 1 is start-up)")

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    busy_before = cpu_busy()
    if busy_before > 0.15:
        print(f"WARNING: {busy_before:.0%} of the CPUs busy before start: other processes will skew the timings")
    tag = uuid.uuid4().hex
    os.environ[TAG_VAR] = tag  # inherited by pool workers, flwr, the SuperLink, the simulation and Ray
    # run_simulation makes its FLOWER_HOME (the processes' working directory) with mkdtemp: put it under ours.
    proc_root = tempfile.mkdtemp(prefix="fedsynth-bench-procs-")
    out_dir = Path(tempfile.mkdtemp(prefix="fedsynth-bench-"))
    config = RunConfig(rounds=args.rounds, local_steps=args.local_steps, out=str(out_dir))
    plan = prepare_simulation(config, echo=print)
    config = plan.config
    sites = plan.num_sites
    schema_text = dump_schema_text(load_schema(resolve_schema_path(config.data, config.schema)))
    config_map = config.to_mapping()

    # ---- (i) in-process ----
    other_in_process = OtherCpu(tag, proc_root).start()
    plan_seconds = []
    budgets = []
    for n in plan.site_rows.values():
        t0 = time.perf_counter()
        budgets.append(plan_for_rate(config, sample_rate_for(n, config.batch_size)).to_state())
        plan_seconds.append(time.perf_counter() - t0)
    init_worker(config_map, schema_text, budgets, sites)
    tasks = lambda r: [(s, r) for s in range(sites)]  # noqa: E731
    for job in tasks(0):  # warm-up
        site_work(job)
    sequential, site_seconds, seq_stretch, par_stretch = [], [], [], []
    for r in range(1, args.repeats + 1):
        t0 = time.perf_counter()
        done = [site_work(job) for job in tasks(r)]
        sequential.append(time.perf_counter() - t0)
        site_seconds += [wall for wall, _ in done]
        seq_stretch += [wall / cpu for wall, cpu in done]

    parallel = []
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(WORKERS, initializer=init_worker, initargs=(config_map, schema_text, budgets, sites)) as pool:
        pool.map(site_work, tasks(0), chunksize=1)  # warm-up
        for r in range(1, args.repeats + 1):
            t0 = time.perf_counter()
            done = pool.map(site_work, tasks(r), chunksize=1)
            parallel.append(time.perf_counter() - t0)
            par_stretch += [wall / cpu for wall, cpu in done]
        pool.close()
        pool.join()

    other_in_process.stop()

    # ---- (ii) Flower ----
    other_flower = OtherCpu(tag, proc_root).start()
    lines: list[str] = []
    print(f"Flower simulation: {sites} sites, {config.rounds} rounds, local_steps={config.local_steps} ...")
    # Our own helpers already running (multiprocessing's resource tracker) are not the run's.
    already = {pid for pid, _ in run_processes(tag, proc_root)}
    saved_tempdir, tempfile.tempdir = tempfile.tempdir, proc_root
    t0 = time.perf_counter()
    try:
        result = run_simulation(config, sites, echo=lines.append, verbose=False)
    finally:
        wall = time.perf_counter() - t0
        tempfile.tempdir = saved_tempdir
        other_flower.stop()
    if args.verbose:
        print("\n".join(f"  {line}" for line in lines))
    # Processes of this run still alive when run_simulation returned; give them --linger seconds to exit.
    leftovers = [p for p in run_processes(tag, proc_root) if p[0] not in already]
    deadline = time.time() + args.linger
    lingering = leftovers
    while lingering and time.time() < deadline:
        time.sleep(0.2)
        lingering = [p for p in run_processes(tag, proc_root) if p[0] not in already]
    if lingering:
        print(
            f"WARNING: {len(lingering)} process(es) of this run alive {args.linger:g}s after it; stopping them by PID:"
        )
        for pid, cmd in lingering:
            print(f"  {pid} {cmd[:120]}")
        stop_processes([pid for pid, _ in lingering])
    still = [p for p in run_processes(tag, proc_root) if p[0] not in already]
    shutil.rmtree(proc_root, ignore_errors=True)
    report_path = out_dir / "report.json"
    if result.returncode != 0 or not report_path.exists():
        print("\n".join(lines[-20:]))
        print(f"simulation failed (flwr exit {result.returncode}); errors: {result.errors[-3:]}")
        return 1
    report = json.loads(report_path.read_text())
    rounds_seconds = [float(x) for x in report["timings"]["rounds_seconds"]]
    steady = stats(rounds_seconds[1:])
    startup = wall - sum(rounds_seconds)
    timings = report["timings"]
    server_total = float(timings.get("total_seconds", float("nan")))
    server_training = float(timings.get("training_seconds", float("nan")))
    server_before = server_training - sum(rounds_seconds)  # the ServerApp's clock starts when it does
    server_after = server_total - server_training
    launch = wall - server_total
    seq, par = stats(sequential), stats(parallel)
    sizes = update_sizes(W.global_arrays)

    # ---- print ----
    def one(name: str, value: float, unit: str = "s") -> None:
        print(f"  {name:<{NAME_WIDTH - 2}}{value:>10.3f}{'':>25}  {unit}")

    print(
        f"\nRound overhead: HI, {sites} region sites {dict(plan.site_rows)}, local_steps={config.local_steps}, "
        f"d_steps={config.d_steps}, batch {config.batch_size}, 1 torch thread per site, {os.cpu_count()} CPUs"
    )
    print(f"{'':<{NAME_WIDTH}}{'median':>10}{'min':>10}{'max':>10}{'n':>5}")
    print(f"In-process, no Flower (one round = {sites} sites)")
    print(row("  one site's work (train_round, pack/unpack, ε)", stats(site_seconds)))
    print(row("  round, sequential (1 process)", seq))
    print(row(f"  round, parallel ({WORKERS} processes)", par))
    print(row("  budget planning, one site (not in rounds)", stats(plan_seconds)))
    print(row("  site wall / CPU time, sequential (1 = no contention)", stats(seq_stretch), "x"))
    print(row(f"  site wall / CPU time, {WORKERS} processes", stats(par_stretch), "x"))
    print(f"Flower simulation ({config.rounds} rounds, one run_simulation call)")
    one("wall time of run_simulation", wall)
    one("start-up + teardown (wall - sum of rounds)", startup)
    one("  ServerApp before round 1 (set-up, DP measurement)", server_before)
    one("  ServerApp after the rounds (sampling, report)", server_after)
    one("  launching + stopping Flower and Ray (the rest)", launch)
    one("round 1 (first-round costs: workers, budgets)", rounds_seconds[0])
    print(row(f"  steady-state round (rounds 2..{config.rounds})", steady))
    overhead = steady["median"] - par["median"]
    print("Ratios (medians)")
    one(f"steady-state round / in-process ({WORKERS} processes)", steady["median"] / par["median"], "x")
    one("steady-state round / in-process (sequential)", steady["median"] / seq["median"], "x")
    one(f"in-process sequential / {WORKERS} processes", seq["median"] / par["median"], "x")
    one("Flower overhead per steady-state round", overhead)
    one("round 1 / steady-state round", rounds_seconds[0] / steady["median"], "x")
    print_round_parts(timings.get("round_parts", [])[1:], par["median"])
    per_round = 2 * sites * sizes["flower_object_bytes"]
    base = sizes["param_bytes_float32"]
    print(f"Update size per message (G+D, {sizes['arrays']} arrays, {sizes['parameters']:,} parameters)")
    for name, value in (
        ("parameters x 4 bytes", base),
        ("packed ArrayRecord (models.packing.pack), array bytes", sizes["array_record_bytes"]),
        (f"Flower objects as sent ({sizes['flower_objects']}: record, arrays, chunks)", sizes["flower_object_bytes"]),
        (f"per round: {sites} sites x (down + up), Flower objects", per_round),
    ):
        print(f"  {name:<{NAME_WIDTH + 8}}{value:>10,} B  {value / base:>6.3f}x")
    print(
        f"Processes of this run alive when run_simulation returned: {len(leftovers)}; "
        f"after {args.linger:g}s: {len(lingering)} (stopped by PID); after cleanup: {len(still)}"
    )
    busy_after = cpu_busy()
    print(
        f"Other programs' CPU use: in-process phase {other_in_process.seconds:.1f} s "
        f"({other_in_process.share:.0%} of the CPUs), Flower phase {other_flower.seconds:.1f} s "
        f"({other_flower.share:.0%}); CPUs busy before start {busy_before:.0%}, after {busy_after:.0%}"
    )
    if max(other_in_process.share, other_flower.share) > 0.05:
        print("WARNING: other programs used the CPUs during the benchmark: the timings are inflated; rerun when idle")

    if args.json:
        payload = {
            "benchmark": "round_overhead",
            "setup": {
                "data": config.data,
                "partition": config.partition,
                "sites": sites,
                "site_rows": dict(plan.site_rows),
                "rounds": config.rounds,
                "local_steps": config.local_steps,
                "d_steps": config.d_steps,
                "batch_size": config.batch_size,
                "workers": WORKERS,
                "cpus": os.cpu_count(),
                "repeats": args.repeats,
                "torch": torch.__version__,
                "cpu_busy_before": busy_before,
                "cpu_busy_after": busy_after,
                "other_cpu_seconds_in_process": other_in_process.seconds,
                "other_cpu_share_in_process": other_in_process.share,
                "other_cpu_seconds_flower": other_flower.seconds,
                "other_cpu_share_flower": other_flower.share,
            },
            "in_process": {
                "site_seconds": stats(site_seconds),
                "round_sequential_seconds": seq,
                "round_parallel_seconds": par,
                "budget_planning_seconds": stats(plan_seconds),
                "site_wall_over_cpu_sequential": stats(seq_stretch),
                "site_wall_over_cpu_parallel": stats(par_stretch),
            },
            "flower": {
                "wall_seconds": wall,
                "startup_teardown_seconds": startup,
                "server_before_round1_seconds": server_before,
                "server_after_rounds_seconds": server_after,
                "launch_and_stop_seconds": launch,
                "rounds_seconds": rounds_seconds,
                "round1_seconds": rounds_seconds[0],
                "steady_round_seconds": steady,
                "server_timings": report["timings"],
            },
            "ratios": {
                "steady_over_in_process_parallel": steady["median"] / par["median"],
                "steady_over_in_process_sequential": steady["median"] / seq["median"],
                "sequential_over_parallel": seq["median"] / par["median"],
                "flower_overhead_seconds_per_round": overhead,
            },
            "update_size": {**sizes, "per_round_bytes": per_round},
            "processes_alive_at_return": [{"pid": pid, "cmd": cmd[:200]} for pid, cmd in leftovers],
            "processes_alive_after_linger": [{"pid": pid, "cmd": cmd[:200]} for pid, cmd in lingering],
            "linger_seconds": args.linger,
            "processes_alive_after_cleanup": len(still),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"JSON: {args.json}")
    if not args.keep_out:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        print(f"Simulation output: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
