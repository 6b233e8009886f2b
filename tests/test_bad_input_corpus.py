"""The bad-input corpus (tests/corpus/manifest.yaml) through the real ``fedsynth`` command.

Every case must end with exit code 2, exactly one stderr line ``error: ...`` that names the file and
the field (the manifest's ``expect`` strings), no traceback, no Flower process started, and no file
created, changed or removed: an earlier run's outputs in the ``--out`` folder stay byte-identical.

The cases fail during validation, before Flower starts, but a fresh ``fedsynth`` process spends
2-4 s importing torch, pandas and Flower, which for ~60 cases is minutes. So by default the cases
run through tests/corpus/driver.py: one process imports everything once, then forks one child per
case that runs the console script's entry point (``fedsynth.cli:main``) with the case's argv, folder
and its own stdout, stderr and exit code. A sample of cases also runs through the installed console
script itself and must give the same result; ``FEDSYNTH_CORPUS_SCRIPT=1`` runs every case that way.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

CORPUS = Path(__file__).resolve().parent / "corpus"
MANIFEST = yaml.safe_load((CORPUS / "manifest.yaml").read_text(encoding="utf-8"))["cases"]
CASES = {case["id"]: case for case in MANIFEST}
FEDSYNTH = Path(sys.executable).parent / "fedsynth"
DRIVER = CORPUS / "driver.py"
WORKERS = 2  # console-script mode: cases at a time
CASE_TIMEOUT = 90
ALL_THROUGH_SCRIPT = os.environ.get("FEDSYNTH_CORPUS_SCRIPT") == "1"
# Run through the installed console script as well, and compared with the driver's result.
SCRIPT_SAMPLE = (
    "wrong-type", "schema-yaml-syntax", "config-key-typo", "out-not-writable", "checkpoint-tampered-weights",
)  # fmt: skip

# An earlier run's outputs, present in {out} before every case: they must survive it untouched.
PREVIOUS_RUN = {
    "out/synthetic.csv": "age,income,region,smoker\n30,1000.5,north,yes\n",
    "out/report.json": '{"rounds_completed": 3}\n',
    "out/notes.txt": "kept by the user\n",
}


@dataclass
class Outcome:
    args: list[str]
    result: subprocess.CompletedProcess[str]
    before: dict[str, Any]
    after: dict[str, Any]
    subs: dict[str, str]
    seconds: float


def snapshot(folder: Path) -> dict[str, Any]:
    """Every entry under ``folder``: a file's content hash and mtime, or that it is a folder."""
    state: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_dir():
            state[rel] = "dir"
        elif path.is_file():
            state[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        else:
            state[rel] = "other"
    return state


def _valid_checkpoint(path: Path) -> None:
    from fedsynth.models.gan import GanShape, build_gan
    from fedsynth.models.packing import pack
    from fedsynth.server.checkpoints import save_checkpoint
    from fedsynth.tabular.codec import TableCodec
    from fedsynth.tabular.schema import load_schema

    schema = load_schema(CORPUS / "schema.yaml")
    codec = TableCodec(schema)
    shape = GanShape(codec.dim, noise_dim=4, generator_hidden=8, discriminator_hidden=8)
    save_checkpoint(path, pack(*build_gan(codec, shape, seed=0)), schema, shape, 1)


def _setup(kind: str, tmp: Path, subs: dict[str, str]) -> None:
    model = tmp / "model.pt"
    if kind == "tampered-checkpoint":  # weights changed after the checksum was written
        _valid_checkpoint(model)
        payload = torch.load(model, weights_only=True)
        first = sorted(payload["arrays"])[0]
        payload["arrays"][first] = payload["arrays"][first] + 1.0
        torch.save(payload, model)
    elif kind == "truncated-checkpoint":  # a copy cut short
        _valid_checkpoint(model)
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif kind == "foreign-checkpoint":  # a readable torch file that is not a fedsynth checkpoint
        torch.save({"state_dict": {"w": torch.zeros(2)}}, model)
    elif kind == "not-writable":
        locked = tmp / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        probe = locked / ".probe"
        try:
            probe.write_text("")
            probe.unlink()
            writable = True  # root ignores the mode bits
        except OSError:
            writable = False
        if writable:
            locked.chmod(0o700)
            locked.rmdir()
            subs["{unwritable}"] = str(tmp / "out" / "notes.txt" / "sub")  # a folder under a regular file
        else:
            subs["{unwritable}"] = str(locked / "sub")
    else:
        raise ValueError(f"unknown setup '{kind}'")


def substitute(text: str, subs: dict[str, str]) -> str:
    for key, value in subs.items():
        text = text.replace(key, value)
    return text


def command_line(case: dict[str, Any]) -> list[str]:
    """The case's arguments after ``fedsynth``, placeholders not yet filled in."""
    if "args" in case:
        return [str(a) for a in case["args"]]
    args = ["simulate", "--data", "{corpus}/" + case.get("data", "data/valid.csv"),
            "--schema", "{corpus}/" + case.get("schema", "schema.yaml"),
            "--partition", str(case.get("partition", "iid")), "--out", "{out}"]  # fmt: skip
    if case.get("clients", 2) is not None:  # null: leave --clients out (one site per value of the column)
        args += ["--clients", str(case.get("clients", 2))]
    if case.get("overwrite", True):
        args.append("--overwrite")
    return args + [str(a) for a in case.get("options", [])]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}


def prepare_case(case: dict[str, Any], tmp: Path) -> tuple[list[str], dict[str, str]]:
    """Build the case's folder (an earlier run's outputs, its files, its setup); return argv and placeholders."""
    tmp.mkdir(parents=True)
    tmp = tmp.resolve()
    subs = {"{corpus}": str(CORPUS), "{out}": str(tmp / "out"), "{tmp}": str(tmp)}
    for rel, text in {**PREVIOUS_RUN, **case.get("files", {})}.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text, encoding="utf-8")
    if "setup" in case:
        _setup(case["setup"], tmp, subs)
    return [substitute(a, subs) for a in command_line(case)], subs


def run_script(args: list[str], cwd: Path) -> dict[str, Any]:
    """One case through the installed console script, in a fresh process."""
    started = time.monotonic()
    result = subprocess.run([str(FEDSYNTH), *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                            timeout=CASE_TIMEOUT, check=False)  # fmt: skip
    return {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr,
            "seconds": time.monotonic() - started}  # fmt: skip


def run_driver(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Many cases through tests/corpus/driver.py (import once, fork per case)."""
    result = subprocess.run([sys.executable, str(DRIVER)], input=json.dumps(batch), env=_env(), capture_output=True,
                            text=True, timeout=CASE_TIMEOUT * 3, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _completed(args: list[str], raw: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(args, raw["returncode"], raw["stdout"], raw["stderr"])


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("corpus")
    corpus_before = snapshot(CORPUS)
    prepared = {cid: prepare_case(case, root / cid) for cid, case in CASES.items()}
    before = {cid: snapshot(root / cid) for cid in CASES}
    started = time.monotonic()
    if ALL_THROUGH_SCRIPT:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            futures = {cid: pool.submit(run_script, args, root / cid) for cid, (args, _) in prepared.items()}
            raw = {cid: future.result() for cid, future in futures.items()}
    else:
        batch = [{"args": args, "cwd": str(root / cid)} for cid, (args, _) in prepared.items()]
        raw = dict(zip(prepared, run_driver(batch), strict=True))
    total = time.monotonic() - started
    done = {
        cid: Outcome(args, _completed(args, raw[cid]), before[cid], snapshot(root / cid), subs, raw[cid]["seconds"])
        for cid, (args, subs) in prepared.items()
    }
    for cid in CASES:
        if (root / cid / "locked").exists():
            (root / cid / "locked").chmod(0o700)  # let pytest clean up
    clean = sum(1 for cid, outcome in done.items() if not _problems(CASES[cid], outcome))
    mode = "console script" if ALL_THROUGH_SCRIPT else "driver"
    print(f"\nbad-input corpus: {len(done)} cases, {clean} clean one-line errors, {total:.1f}s ({mode}; "
          f"slowest case {max(o.seconds for o in done.values()):.1f}s)")  # fmt: skip
    assert snapshot(CORPUS) == corpus_before, "a case changed the corpus itself"
    return done


def _problems(case: dict[str, Any], outcome: Outcome) -> list[str]:
    """Everything wrong with one case's outcome (empty when it is a clean error)."""
    result, problems = outcome.result, []
    output = result.stdout + result.stderr
    if "Traceback" in output:
        problems.append("a traceback was printed")
    if result.returncode != 2:
        problems.append(f"exit code {result.returncode}, expected 2")
    lines = result.stderr.splitlines()
    if len(lines) != 1 or not lines[0].startswith("error: "):
        problems.append(f"stderr is not one 'error:' line: {result.stderr[-500:]!r}")
    else:
        for needle in case["expect"]:
            needle = substitute(str(needle), outcome.subs)
            if needle not in lines[0]:
                problems.append(f"{needle!r} not in {lines[0]!r}")
    if "Starting Flower simulation" in result.stdout:
        problems.append("a Flower simulation was started")
    if outcome.after != outcome.before:
        changed = sorted(set(outcome.after.items()) ^ set(outcome.before.items()))
        problems.append(f"files created, changed or removed: {changed}")
    return problems


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_gives_one_clean_error(case_id, outcomes):
    outcome = outcomes[case_id]
    problems = _problems(CASES[case_id], outcome)
    assert not problems, f"fedsynth {' '.join(outcome.args)}\n" + "\n".join(problems)


def test_previous_outputs_survive_byte_for_byte(outcomes):
    """The earlier run's files in --out are identical after every case (simulate cases with --overwrite too)."""
    for case_id, outcome in outcomes.items():
        for rel in PREVIOUS_RUN:
            assert outcome.after.get(rel) == outcome.before[rel], (case_id, rel)


@pytest.mark.skipif(ALL_THROUGH_SCRIPT, reason="every case already ran through the console script")
def test_console_script_gives_the_same_results_as_the_driver(outcomes, tmp_path):
    """The driver is faithful: a sample of cases, rerun through the installed script, ends the same way."""
    assert set(SCRIPT_SAMPLE) <= set(CASES)
    for case_id in SCRIPT_SAMPLE:
        args, subs = prepare_case(CASES[case_id], tmp_path / case_id)
        before = snapshot(tmp_path / case_id)
        raw = run_script(args, tmp_path / case_id)
        outcome = Outcome(args, _completed(args, raw), before, snapshot(tmp_path / case_id), subs, raw["seconds"])
        if (tmp_path / case_id / "locked").exists():
            (tmp_path / case_id / "locked").chmod(0o700)
        assert not _problems(CASES[case_id], outcome), (case_id, _problems(CASES[case_id], outcome))
        via_driver = outcomes[case_id].result
        normalise = {str(tmp_path / case_id): "{tmp}", outcomes[case_id].subs["{tmp}"]: "{tmp}"}
        assert substitute(outcome.result.stderr, normalise) == substitute(via_driver.stderr, normalise), case_id
        assert outcome.result.returncode == via_driver.returncode


def test_manifest_is_well_formed():
    ids = [case["id"] for case in MANIFEST]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    allowed = {"id", "args", "data", "schema", "partition", "clients", "options", "overwrite", "files", "setup",
               "expect"}  # fmt: skip
    for case in MANIFEST:
        assert set(case) <= allowed, (case["id"], set(case) - allowed)
        assert case.get("expect"), case["id"]
        for key in ("data", "schema"):
            if key in case and "does_not_exist" not in case[key]:
                assert (CORPUS / case[key]).is_file(), (case["id"], case[key])
    # Every broken file in the corpus is used by some case.
    used = yaml.safe_dump(MANIFEST)
    for path in [*CORPUS.glob("data/*"), *CORPUS.glob("schemas/*"), *CORPUS.glob("checkpoints/*")]:
        if path.name != "valid.csv":
            assert path.name in used, f"{path.relative_to(CORPUS)} is in no case"


def test_the_valid_base_passes_validation():
    """The corpus's base table and schema are valid, so each broken variant fails for its own reason."""
    from fedsynth.core.config import RunConfig
    from fedsynth.simulations.setup import prepare_simulation

    paths = {"data": str(CORPUS / "data/valid.csv"), "schema": str(CORPUS / "schema.yaml")}
    config = RunConfig.from_mapping({**paths, "partition": "iid", "clients": 2})
    plan = prepare_simulation(config, echo=lambda _: None)
    assert plan.num_sites == 2 and sum(plan.site_rows.values()) == 40
