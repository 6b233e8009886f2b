"""Private virtual environments for the benchmark's peer synthesizers.

The peers are never project dependencies: each lives in its own venv under
``benchmarks/.peer-envs/<kind>/`` (git-ignored), created on first use with
``python3.11 -m venv`` and run through ``benchmarks/peer_worker.py`` in a
subprocess, so nothing of theirs is imported into the benchmark's process.

Kinds
-----
``smartnoise``  MST and AIM from smartnoise-synth 1.0.8 (differentially private).
    smartnoise-synth pins ``opacus<0.15`` (torch) and ``pac-synth`` for its GAN and
    aggregate-seeded synthesizers; MST and AIM import neither (they use mbi/JAX,
    opendp through smartnoise-sql, scipy, networkx, disjoint-set and Faker), so
    snsynth is installed with ``--no-deps`` and the MST/AIM requirements are pinned
    explicitly: no torch, ~1 GB on disk, well under a minute to install.
``ctgan``  CTGAN 0.12.1, non-private reference.  ``torch==2.13.0`` is pinned first:
    on this project's machines pip takes the CPU build that lies in its find-links
    directory (``/opt/wheels``); an unpinned torch would pull a multi-GB CUDA build.

Usage::

    python benchmarks/peer_envs.py ensure [smartnoise|ctgan|all]
    python benchmarks/peer_envs.py run mst train.csv meta.json out.csv --epsilon 1 --delta 1e-5 --rows 20000
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV_ROOT = HERE / ".peer-envs"
WORKER = HERE / "peer_worker.py"
MARKER = ".installed.json"

# Each kind: a list of pip install steps (argument lists), run in order in a fresh venv.
SPECS: dict[str, dict] = {
    "smartnoise": {
        "steps": [
            ["--no-deps", "smartnoise-synth==1.0.8"],
            [
                "smartnoise-sql==1.0.10",
                "mbi==1.1.0",
                "disjoint-set==0.9.0",
                "Faker==40.63.0",
                "opendp==0.14.2",
                "jax==0.10.2",
                "jaxlib==0.10.2",
                "chex==0.1.92",
                "optax==0.2.8",
                "networkx==3.6.1",
                "numpy==2.4.6",
                "scipy==1.17.1",
                "pandas==2.3.3",
                "SQLAlchemy==2.1.9",
            ],
        ],
        "check": "import snsynth.mst.mst, snsynth.aim.aim, mbi, opendp; print('ok')",
        "what": "smartnoise-synth 1.0.8 (MST/AIM, no torch), ~1 GB, ~1 min",
    },
    "ctgan": {
        "steps": [
            ["torch==2.13.0"],
            [
                "ctgan==0.12.1",
                "rdt==2.0.0",
                "torch==2.13.0",
                "numpy==2.4.6",
                "pandas==2.3.3",
                "scipy==1.17.1",
                "scikit-learn==1.9.1",
            ],
        ],
        "check": "import torch, ctgan; print(torch.__version__)",
        "what": "ctgan 0.12.1 + CPU torch 2.13.0, ~1.3 GB, ~2 min",
    },
}

METHOD_KIND = {"mst": "smartnoise", "aim": "smartnoise", "ctgan": "ctgan"}


def _spec_hash(kind: str) -> str:
    spec = SPECS[kind]
    blob = json.dumps({"steps": spec["steps"], "check": spec["check"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _env_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def _base_python() -> str:
    found = shutil.which("python3.11")
    if found:
        return found
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    raise RuntimeError("python3.11 not found on PATH; the peer environments need Python 3.11")


def _tail(text: str, n: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


@contextlib.contextmanager
def _lock(kind: str):
    ENV_ROOT.mkdir(parents=True, exist_ok=True)
    with open(ENV_ROOT / f".{kind}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_ready(kind: str, env_dir: Path) -> bool:
    marker = env_dir / MARKER
    if not marker.is_file() or not _env_python(env_dir).exists():
        return False
    try:
        return json.loads(marker.read_text()).get("spec") == _spec_hash(kind)
    except (OSError, ValueError):
        return False


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def ensure_env(kind: str) -> Path:
    """Create (if missing) the peer venv ``kind`` ("smartnoise" or "ctgan"); return its python.

    A marker file written after a successful install (and import check) makes later calls
    instant; a changed pin set in SPECS invalidates it and the venv is rebuilt from scratch.
    """
    if kind not in SPECS:
        raise ValueError(f"unknown peer env kind {kind!r}; expected one of {sorted(SPECS)}")
    env_dir = ENV_ROOT / kind
    if _is_ready(kind, env_dir):
        return _env_python(env_dir)
    with _lock(kind):
        if _is_ready(kind, env_dir):  # another process finished it meanwhile
            return _env_python(env_dir)
        spec = SPECS[kind]
        print(f"[peer_envs] installing {kind} peer venv: {spec['what']} -> {env_dir}", flush=True)
        t0 = time.perf_counter()
        if env_dir.exists():
            shutil.rmtree(env_dir)
        env_dir.parent.mkdir(parents=True, exist_ok=True)
        log_path = env_dir.parent / f"{kind}.install.log"
        py = _env_python(env_dir)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        cmds = [[_base_python(), "-m", "venv", str(env_dir)]]
        cmds.append([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"])
        cmds += [[str(py), "-m", "pip", "install", "-q", *step] for step in spec["steps"]]
        cmds.append([str(py), "-I", "-c", spec["check"]])
        with open(log_path, "w") as log:
            for cmd in cmds:
                log.write("$ " + " ".join(cmd) + "\n")
                log.flush()
                res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
                log.write(res.stdout)
                log.flush()
                if res.returncode != 0:
                    raise RuntimeError(
                        f"peer env {kind!r}: command failed (exit {res.returncode}): {' '.join(cmd)}\n"
                        f"{_tail(res.stdout)}\n(full log: {log_path})"
                    )
        elapsed = time.perf_counter() - t0
        freeze = subprocess.run(
            [str(py), "-m", "pip", "freeze"], capture_output=True, text=True, env=env, check=False
        ).stdout.split()
        info = {
            "kind": kind,
            "spec": _spec_hash(kind),
            "install_seconds": round(elapsed, 1),
            "size_bytes": _dir_size(env_dir),
            "freeze": freeze,
        }
        (env_dir / MARKER).write_text(json.dumps(info, indent=1))
        return py


def _split_kind_method(kind_method: str) -> tuple[str, str]:
    s = kind_method.strip().lower()
    for sep in (":", "/", "-", "."):
        if sep in s:
            kind, method = s.split(sep, 1)
            break
    else:
        kind, method = METHOD_KIND.get(s, ""), s
    if method not in METHOD_KIND or kind != METHOD_KIND[method]:
        raise ValueError(
            f"unknown peer {kind_method!r}; use 'mst', 'aim', 'ctgan' (or 'smartnoise:mst', "
            "'smartnoise:aim', 'ctgan:ctgan')"
        )
    return kind, method


def run_peer(
    kind_method: str,
    train_csv: Path,
    meta_json: Path,
    out_csv: Path,
    epsilon: float,
    delta: float,
    rows: int,
    seed: int,
    timeout_s: int = 900,
    *,
    extra_args: Sequence[str] = (),
) -> float:
    """Run one peer synthesizer in its own venv; return the wall time in seconds.

    ``kind_method`` is "mst", "aim" or "ctgan" (or "smartnoise:mst", "smartnoise:aim",
    "ctgan:ctgan").  epsilon/delta are ignored by CTGAN (no DP).  ``extra_args`` are passed
    to peer_worker.py as they are (e.g. ``["--epochs", "100"]``).  The wall time is
    measured around the worker process (interpreter start and imports included).
    Raises RuntimeError with the worker's last stderr lines on failure or timeout.
    """
    kind, method = _split_kind_method(kind_method)
    py = ensure_env(kind)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(py),
        "-I",  # isolated: neither the project nor PYTHON* variables leak into the peer
        str(WORKER),
        "--method",
        method,
        "--train",
        str(Path(train_csv).resolve()),
        "--meta",
        str(Path(meta_json).resolve()),
        "--out",
        str(out_csv.resolve()),
        "--epsilon",
        repr(float(epsilon)),
        "--delta",
        repr(float(delta)),
        "--rows",
        str(int(rows)),
        "--seed",
        str(int(seed)),
        *[str(a) for a in extra_args],
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(out_csv.parent),
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise RuntimeError(f"peer {kind}:{method} timed out after {timeout_s}s\n{_tail(stderr or '', 20)}") from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"peer {kind}:{method} failed (exit {proc.returncode})\n{_tail(stderr or '', 20)}")
    if not out_csv.is_file():
        raise RuntimeError(f"peer {kind}:{method} wrote no {out_csv}\n{_tail(stdout or '', 10)}")
    return wall


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Create peer venvs / run a peer synthesizer.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("ensure", help="create the peer venv(s)")
    e.add_argument("kind", nargs="?", default="all", choices=[*SPECS, "all"])
    r = sub.add_parser("run", help="run one peer synthesizer")
    r.add_argument("method", help="mst | aim | ctgan")
    r.add_argument("train_csv", type=Path)
    r.add_argument("meta_json", type=Path)
    r.add_argument("out_csv", type=Path)
    r.add_argument("--epsilon", type=float, default=1.0)
    r.add_argument("--delta", type=float, default=1e-5)
    r.add_argument("--rows", type=int, required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--timeout", type=int, default=900)
    args, extra = ap.parse_known_args(argv)
    if args.cmd == "ensure":
        for kind in SPECS if args.kind == "all" else [args.kind]:
            py = ensure_env(kind)
            info = json.loads((py.parent.parent / MARKER).read_text())
            print(f"{kind}: {py} (install {info['install_seconds']} s, {info['size_bytes'] / 2**20:.0f} MiB)")
        return 0
    wall = run_peer(
        args.method,
        args.train_csv,
        args.meta_json,
        args.out_csv,
        args.epsilon,
        args.delta,
        args.rows,
        args.seed,
        args.timeout,
        extra_args=extra,
    )
    print(f"{args.method}: {wall:.1f} s -> {args.out_csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
