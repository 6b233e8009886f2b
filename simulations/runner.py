"""Run the Flower app in Flower's simulation runtime, exactly as ``flwr run .`` does.

``fedsynth simulate`` is a thin, careful wrapper around ``flwr run``:

- a private ``FLWR_HOME`` and a free port, so the detached local SuperLink that
  ``flwr run`` starts is ours alone (two SuperLinks on one port would share runs);
- the full run configuration passed as a TOML file, so the ServerApp and every
  ClientApp see the same validated values;
- a neutral working directory, so simulation workers import the app from the
  installed FAB and not from whatever folder the user stands in;
- no runtime dependency installation (this machine is offline);
- and, whatever happens, the SuperLink and its SuperExec are stopped by PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from fedsynth.core.config import RunConfig
from fedsynth.core.errors import UserError

APP_DIR = Path(__file__).resolve().parent.parent
PROGRESS_MARK = "fedsynth:"


@dataclass
class SimulationResult:
    returncode: int
    seconds: float
    errors: list[str]  # fedsynth's own one-line errors, from the ServerApp
    flower_errors: list[str]  # other error lines in Flower's log


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flower_env(flwr_home: Path, port: int) -> dict[str, str]:
    """Environment for ``flwr``: the SuperLink it starts inherits all of it."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            "PYTHONWARNINGS": "ignore",
            "RAY_DEDUP_LOGS": "0",
        }
    )
    return env


def write_flower_home(flwr_home: Path) -> None:
    """A local simulation connection, state kept in memory."""
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local-in-memory:"\n', encoding="utf-8"
    )


def processes_matching(*needles: str) -> list[int]:
    """PIDs whose command line contains every needle (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in cmdline for n in needles):
            pids.append(int(entry.name))
    return pids


def stop_processes(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after ``grace`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + grace
    alive = list(pids)
    while alive and time.time() < deadline:
        time.sleep(0.1)
        reap_children()
        alive = [pid for pid in alive if is_alive(pid)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    reap_children()


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descendants(roots: list[int]) -> list[int]:
    """Every live process below ``roots`` in the process tree."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux), so the detached SuperLink is reaped by us, not left a zombie."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_children() -> None:
    """Collect the exit status of any child that has ended."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def stop_local_superlink(flwr_home: Path, port: int) -> None:
    """Stop the detached SuperLink ``flwr run`` left behind, its SuperExec and their children."""
    superlinks = processes_matching("flower-superlink", str(port))
    superexecs = [pid for sl in superlinks for pid in processes_matching("flower-superexec", f"--parent-pid {sl}")]
    roots = superlinks + superexecs
    # Children first are found now: once a parent dies they are re-parented and lost from view.
    stop_processes(roots + [pid for pid in descendants(roots) if pid not in roots])
    reap_children()


LOCK_FILE = ".fedsynth-run.lock"
SERVER_APP_GRACE_SECONDS = 10  # a finished ServerApp's log stream closes well within this


def claim_output_folder(out: Path, port: int) -> None:
    """Mark ``out`` as in use; stop what an earlier, killed run left running there.

    If ``fedsynth simulate`` itself was killed, its detached SuperLink (and the
    ServerApp under it) may still be running and writing into ``out``. A new run
    in the same folder stops them first, by the PIDs and port the lock recorded.
    """
    lock = out / LOCK_FILE
    if lock.exists():
        try:
            held = json.loads(lock.read_text(encoding="utf-8"))
        except ValueError:
            held = {}
        owner = int(held.get("pid", 0))
        if owner and owner != os.getpid() and is_alive(owner):
            raise UserError(f"{out}: in use by a running fedsynth (pid {owner}); stop it or choose another --out")
        if held.get("port"):
            stop_local_superlink(Path(held.get("flwr_home", "")), int(held["port"]))
    out.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": os.getpid(), "port": port}), encoding="utf-8")


def release_output_folder(out: Path) -> None:
    with contextlib.suppress(OSError):
        (out / LOCK_FILE).unlink()


def _server_app_pids(port: int) -> list[int]:
    """Live ServerApp (``flwr-simulation``) processes under our SuperLink."""
    simulations = set(processes_matching("flwr-simulation"))
    below = descendants(processes_matching("flower-superlink", str(port)))
    return [pid for pid in below if pid in simulations and is_alive(pid)]


def run_simulation(
    config: RunConfig,
    num_sites: int,
    echo: Callable[[str], None] = print,
    verbose: bool = False,
    app_dir: Path = APP_DIR,
) -> SimulationResult:
    """Run the app with ``num_sites`` virtual SuperNodes; returns after every process is stopped.

    A watchdog notices when the ServerApp process dies (killed, out of memory):
    Flower's log stream would otherwise wait for it forever.
    """
    flwr_home = Path(tempfile.mkdtemp(prefix="fedsynth-flwr-"))
    port = free_port()
    out = Path(config.out)
    become_subreaper()
    claim_output_folder(out, port)
    started = time.time()
    errors: list[str] = []
    flower_errors: list[str] = []
    try:
        write_flower_home(flwr_home)
        run_config = flwr_home / "run-config.toml"
        run_config.write_text(tomli_w.dumps(config.to_mapping()), encoding="utf-8")
        command = [
            "flwr", "run", str(app_dir), "local",
            "--run-config", str(run_config),
            "--federation-config", f"num-supernodes={num_sites} client-resources-num-cpus=1",
            "--stream",
        ]  # fmt: skip
        env = flower_env(flwr_home, port)
        with subprocess.Popen(
            command, cwd=flwr_home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            lines: queue.Queue[str | None] = queue.Queue()
            threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
            try:
                _follow(proc, lines, port, echo, verbose, errors, flower_errors)
            except BaseException:
                proc.terminate()  # Ctrl-C or SIGTERM reached us alone: `flwr run` would stream on
                raise
        return SimulationResult(proc.returncode, time.time() - started, errors, flower_errors)
    finally:
        stop_local_superlink(flwr_home, port)
        release_output_folder(out)
        shutil.rmtree(flwr_home, ignore_errors=True)


def _pump(proc: subprocess.Popen, lines: queue.Queue) -> None:
    """Flower's output, line by line, into ``lines``; None at the end."""
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.put(line.rstrip())
    except (ValueError, OSError):
        pass  # the stream was closed under us (Ctrl-C ends the run while this thread reads): nothing more to read
    lines.put(None)


def _follow(
    proc: subprocess.Popen,
    lines: queue.Queue,
    port: int,
    echo: Callable[[str], None],
    verbose: bool,
    errors: list[str],
    flower_errors: list[str],
) -> None:
    """Echo progress lines; stop the run if its ServerApp process has died."""
    previous, seen, dead_checks, last_check = "", False, 0, 0.0
    while True:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            line = ""
        if line is None:
            proc.wait()
            return
        if PROGRESS_MARK in line:
            text = line[line.index(PROGRESS_MARK) + len(PROGRESS_MARK) :].strip()
            if text != previous:  # the streamed log carries each ServerApp line twice
                previous = text
                if "ERROR" in line:
                    errors.append(text)
                echo(text)
        elif line and verbose:
            echo(line)
        elif "ERROR" in line or "Traceback" in line:
            flower_errors.append(line)
        if time.time() - last_check >= 1.0:
            last_check = time.time()
            if _server_app_pids(port):
                seen, dead_checks = True, 0
            elif seen:
                dead_checks += 1
            if dead_checks >= SERVER_APP_GRACE_SECONDS:
                errors.append("the ServerApp process ended unexpectedly; continue with --resume")
                proc.terminate()
                proc.wait()
                return
