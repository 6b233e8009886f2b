"""Helpers for the deployment end-to-end test: real Flower processes, started and stopped by PID.

Every process is a plain ``subprocess.Popen`` child of the test (no new session,
no shell), logging to its own file. Flower's own children (a SuperLink's
SuperExec and ServerApp, a SuperNode's SuperExec and ClientApps) are found
through ``/proc`` as descendants of those PIDs and stopped with them;
``become_subreaper`` makes the test adopt any that lose their parent, so none
escapes the process tree and none is left a zombie.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd

from fedsynth.simulations.runner import (
    become_subreaper,
    descendants,
    flower_env,
    is_alive,
    processes_matching,
    reap_children,
    stop_processes,
)

CONNECTION = "fedsynth-tls"


def env_for(flwr_home: Path) -> dict[str, str]:
    """The environment every Flower command of one party (coordinator or site) runs in.

    ``flower_env`` puts the venv's ``bin`` first on PATH (the SuperLink and the
    SuperNodes start ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp``
    by name), sets a private ``FLWR_HOME`` and turns off runtime dependency
    installation, update checks and telemetry (this machine is offline).
    """
    flwr_home.mkdir(parents=True, exist_ok=True)
    return flower_env(flwr_home, port=0)


def write_connection(flwr_home: Path, address: str, root_certificates: Path, name: str = CONNECTION) -> Path:
    """``$FLWR_HOME/config.toml`` with one TLS connection to the SuperLink, as the coordinator writes it."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{name}"\n\n'
        f'[superlink.{name}]\naddress = "{address}"\nroot-certificates = "{root_certificates.resolve()}"\n',
        encoding="utf-8",
    )
    return path


def write_site_tables(table: pd.DataFrame, column: str, values: list[str], root: Path, rows: int) -> dict[str, Path]:
    """One CSV per site (``root/site-VALUE/rows.csv``): the rows with ``column == value``, subsampled."""
    paths = {}
    for value in values:
        part = table[table[column] == value]
        part = part.sample(n=min(rows, len(part)), random_state=0)
        folder = root / f"site-{value}"
        folder.mkdir(parents=True, exist_ok=True)
        part.to_csv(folder / "rows.csv", index=False)
        paths[value] = folder / "rows.csv"
    return paths


def node_config(**values: str) -> str:
    """``--node-config`` text: TOML values, so strings are quoted (``site="west"``)."""
    return " ".join(f"{key}={json.dumps(str(value))}" for key, value in values.items())


def json_payload(stdout: str) -> dict:
    """The JSON object a ``flwr ... --format json`` command printed (other lines ignored)."""
    start = stdout.find("{")
    if start < 0:
        raise ValueError(f"no JSON in output: {stdout[-2000:]}")
    return json.JSONDecoder().raw_decode(stdout[start:])[0]


class Processes:
    """Long-running Flower processes of one test, each with a log file, all stopped by PID."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.returncodes: dict[str, int] = {}
        become_subreaper()

    def start(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        if name in self.procs:
            raise ValueError(f"{name}: already started")
        with open(self.logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    def tails(self, lines: int = 40) -> str:
        """The last ``lines`` of every started process's log: what a failed deployment test shows."""
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(parts)

    def wait_exit(self, name: str, timeout: float) -> int | None:
        """The exit status, or ``None`` if still running after ``timeout`` seconds."""
        try:
            code = self.procs[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.returncodes[name] = code
        return code

    def running(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def wait_for_log(self, name: str, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log(name):
                return True
            if not self.running(name):
                return text in self.log(name)
            time.sleep(0.2)
        return False

    def pids(self) -> list[int]:
        """Our processes and everything below them, found now."""
        roots = [p.pid for p in self.procs.values() if is_alive(p.pid)]
        return roots + [pid for pid in descendants(roots) if pid not in roots]

    def stop_all(self) -> None:
        """SIGTERM (SIGKILL after a grace period) to every process we started and their descendants."""
        # Descendants are listed before any signal: once a parent dies its children are re-parented.
        stop_processes(self.pids(), grace=10.0)
        for name, proc in self.procs.items():
            if name not in self.returncodes:
                try:
                    self.returncodes[name] = proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    self.returncodes[name] = proc.wait(timeout=5)
        reap_children()


def wait_for_tls_port(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    """Until ``host:port`` accepts TCP connections (the SuperLink is serving), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:g}s")


def live_processes_mentioning(*markers: str) -> list[int]:
    """Live (not zombie) processes whose command line holds any of ``markers`` (our ports, our temp folder)."""
    return sorted({pid for marker in markers for pid in processes_matching(marker) if is_alive(pid)})
