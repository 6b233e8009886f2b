"""The coordinator's round loop and the sites' handlers, driven together in one process.

``fedsynth simulate`` runs ``server.federation.run_federation`` and ``client.client_app`` in Flower
subprocesses, where a bug shows up as a timeout. Here the real ``ServerApp`` (``server.server_app``)
runs against ``tests.fake_grid.FakeGrid``, whose ``send_and_receive`` hands each message to the real
``ClientApp`` of a simulated site (its own ``Context``, ``partition-id`` node config, the run's
config), so the whole run (measurement, training rounds, release check, report) executes here and a
failure has a line number.
"""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

from fedsynth.client import wire_log
from fedsynth.client.client_app import BUDGET_STATE
from fedsynth.client.secure_aggregation import RefusedInSecureRoundError
from fedsynth.client.site_data import load_site
from fedsynth.core.config import RunConfig
from fedsynth.privacy.budget import SiteBudget
from fedsynth.server import server_app
from fedsynth.simulations.setup import prepare_simulation
from fedsynth.tabular.schema import dump_schema, dump_schema_text
from tests.fake_grid import NO_REPLY, FakeGrid, error_reply, task_identity

EPSILON = 2.0
SITES = ["region=east", "region=north", "region=south"]


def federate(tmp_path, table, schema, intercept=None, **settings):
    """Run a whole federation in-process; return (report.json, the grid, the output folder, the run config).

    The noise is reproducible (the run is NOT DP) unless ``settings`` say otherwise: these tests are about
    the round loop, and with secret noise the release gate withholds a clean table in about 0.1% of runs
    (its noisy copy count passes 3 noise std), which made the suite fail now and then. Secret noise has
    its own tests (``test_secret_noise_e2e``, the audits).
    """
    settings = {"reproducible-noise": True, **settings}
    data, schema_path, out = tmp_path / "table.csv", tmp_path / "table.yaml", tmp_path / "run"
    table.to_csv(data, index=False)
    dump_schema(schema, schema_path)
    config = RunConfig(data=str(data), schema=str(schema_path), partition="column:region", rounds=2,
                       local_steps=2, batch_size=32, validator_rows=200, epsilon=EPSILON, out=str(out),
                       round_timeout=30.0)  # fmt: skip
    config = RunConfig.from_mapping({**config.to_mapping(), **settings})
    plan = prepare_simulation(config, echo=lambda _: None)  # as ``fedsynth simulate``
    run_config = plan.config.to_mapping()
    grid = FakeGrid(run_config, plan.num_sites, intercept=intercept)
    context = Context(run_id=grid.run_id, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(),
                      run_config=run_config)  # fmt: skip
    with task_identity(grid.run_id):
        server_app.app(grid, context)
    # A site's refusal inside a SecAgg+ exchange reaches Flower as an exception by design (its reply cannot carry one).
    crashes = [(node, exc) for node, exc in grid.crashes if not isinstance(exc, RefusedInSecureRoundError)]
    assert not crashes, f"a ClientApp raised: {crashes!r}"
    return json.loads((out / "report.json").read_text(encoding="utf-8")), grid, out, run_config


def site_names(grid: FakeGrid, run_config: dict, schema) -> dict[int, str]:
    """Each node's site name, as the site itself derives it from its node config."""
    text = dump_schema_text(schema)
    return {node: load_site(dict(c.node_config), run_config, text).name for node, c in grid.contexts.items()}


def requests(grid: FakeGrid, node: int, secure_stages: bool = False) -> list[tuple[str, int | None, str]]:
    """What ``node`` was asked, in order. SecAgg+ stage messages (train messages without a round: the selection
    counts under secure-measurement) are left out, or are all that is returned with ``secure_stages``."""
    seen = [(d.message_type, d.server_round, d.outcome) for d in grid.log if d.node_id == node]
    return [r for r in seen if (r[0] == "train" and r[1] is None) == secure_stages]


def site_spent(context: Context) -> SiteBudget:
    """The ledger a site keeps in its own context state."""
    return SiteBudget.from_state(dict(context.state.config_records[BUDGET_STATE]))


@pytest.fixture(autouse=True)
def _no_wire_log(monkeypatch):
    monkeypatch.delenv(wire_log.WIRE_LOG_ENV, raising=False)  # a developer's wire log stays out of the tests


def test_two_rounds_end_to_end(tmp_path, small_table, small_schema):
    report, grid, out, run_config = federate(tmp_path, small_table, small_schema)
    names = site_names(grid, run_config, small_schema)
    assert sorted(names.values()) == SITES

    # Every site: measured (histograms, then the selection rounds), trained in rounds 1 and 2, answered the
    # release check, all without failure.
    selection = report["privacy"]["measurement"]["selection"]
    assert selection["rounds"] == len(small_schema.columns) and selection["cliques"]
    for node in grid.contexts:
        seen = requests(grid, node)
        # The selection counts go through SecAgg+ (secure-measurement): four stage messages per secure round.
        stages = requests(grid, node, secure_stages=True)
        assert len(stages) == 4 * len(selection["secure_sums"]) and selection["secure_sums"]
        queries = [r for r in seen if r[0] == "query"]
        assert seen[len(queries) :] == [("train", 1, "reply"), ("train", 2, "reply"), ("evaluate", None, "reply")]
        # Round 0's histograms in a plain query; a selection round with nothing to count (none here: the first
        # measures the one-way histograms again) would be a plain query too.
        assert queries == [("query", 0, "reply")] * len(queries) and 1 <= len(queries) <= 1 + selection["rounds"]

    assert report["rounds_completed"] == 2 and [r["round"] for r in report["rounds"]] == [1, 2]
    for entry in report["rounds"]:
        assert sorted(entry["aggregated"]) == SITES, entry
        assert entry["failed"] == {} and entry["rejected"] == {} and entry["missing"] == [] and entry["idle"] == []
        for metrics in entry["sites"].values():
            assert metrics["trained-steps"] == 2
    assert sorted(report["privacy"]["measurement"]["sites"]) == SITES

    sites = report["privacy"]["sites"]
    assert sorted(sites) == SITES
    for node, name in names.items():
        epsilon = sites[name]["epsilon"]
        assert 0 < epsilon <= EPSILON * (1 + 1e-9), (name, epsilon)
        # The coordinator's figure is the site's own ledger (release check included), not a copy of a stale reply.
        own = site_spent(grid.contexts[node])
        assert own.release_checked and epsilon == pytest.approx(own.spent)
        assert sites[name]["steps"] == own.steps == 4

    assert report["release"]["approved"], report["release"]["reasons"]
    synthetic = pd.read_csv(out / "synthetic.csv")
    assert list(synthetic.columns) == [c.name for c in small_schema.columns]
    assert len(synthetic) == report["outputs"]["rows"] > 0
    assert set(synthetic["region"]) <= {"north", "south", "east"}
    assert (out / "report.html").is_file() and "data:image/png;base64," in (out / "report.html").read_text()
    for name in ("round-001.pt", "round-002.pt", "final.pt", "state.json"):
        assert (out / "checkpoints" / name).exists(), name
    state = json.loads((out / "checkpoints" / "state.json").read_text(encoding="utf-8"))
    assert state["completed_round"] == 2 and sorted(state["ledgers"]) == SITES


def test_without_secure_measurement_the_selection_counts_come_in_plain_replies(tmp_path, small_table, small_schema):
    report, grid, _, _ = federate(tmp_path, small_table, small_schema, rounds=1, **{"secure-measurement": False})
    measurement = report["privacy"]["measurement"]
    selection = measurement["selection"]
    assert selection["cliques"] and selection["secure_sums"] == []
    assert measurement["secure_one_way_noise_std_per_count"] is None  # the one-ways only once, in round 0
    for node, context in grid.contexts.items():
        assert requests(grid, node, secure_stages=True) == []
        ledger = site_spent(context)
        # Round 0 took the whole one-way share (30% of the reservation), the rounds the rest and nothing more.
        assert ledger.history[0] == pytest.approx((ledger.measure_noise / 0.3**0.5, 1.0, 1))
        assert ledger.measure_spent == pytest.approx(1.0)


def test_sites_refusing_the_selection_rounds_are_named_not_mistaken_for_no_votes(tmp_path, small_table, small_schema,
                                                                                  monkeypatch, caplog):  # fmt: skip
    # Every site refuses what the coordinator asks it to score (as a site of another version would refuse a
    # clique it cannot parse): the run goes on with the one-way marginals, and says why.
    def refuse(text, schema, coarse):
        if text and text != "[]":
            raise ValueError("clique ['a', 'b', 'c', 'd']: must name 2 or 3 different columns")
        return []

    monkeypatch.setattr("fedsynth.client.client_app.parse_cliques", refuse)
    with caplog.at_level(logging.WARNING):
        report, _, _, _ = federate(tmp_path, small_table, small_schema, rounds=1)
    selection = report["privacy"]["measurement"]["selection"]
    assert selection["cliques"] == [] and not any(selection["votes"])
    reason = "ValueError (details in the site's own log)"  # an unexpected error's text stays at the site
    assert selection["refusals"] and all(any(reason in r for r in rs) for rs in selection["refusals"])
    warned = [r.getMessage() for r in caplog.records if "sent an error instead of a reply" in r.getMessage()]
    assert warned and reason in warned[0], warned


@pytest.mark.parametrize("how", ["error", "no reply"])
def test_a_site_failing_in_round_two_is_recorded_and_the_run_finishes(tmp_path, small_table, small_schema, how):
    victim = 1001

    def fail_round_two(msg: Message, context: Context):
        meta = msg.metadata
        if meta.dst_node_id == victim and meta.message_type == "train" and _round(msg) == 2:
            # What Flower sends when a ClientApp crashes; or nothing at all, as when a site times out.
            return error_reply(msg, "boom") if how == "error" else NO_REPLY
        return None

    report, grid, out, run_config = federate(tmp_path, small_table, small_schema, intercept=fail_round_two)
    name = site_names(grid, run_config, small_schema)[victim]
    others = sorted(set(SITES) - {name})
    first, second = report["rounds"]
    assert sorted(first["aggregated"]) == SITES and first["failed"] == {} and first["missing"] == []
    if how == "error":
        assert second["failed"] == {name: "boom"} and second["missing"] == []
    else:
        assert second["missing"] == [name] and second["failed"] == {}
    assert sorted(second["aggregated"]) == others
    trains = [r for r in requests(grid, victim) if r[0] == "train"]
    assert trains[1] == ("train", 2, "intercepted" if how == "error" else "no reply")

    # The run went on: the failed site still answered the release check, and the table was released.
    assert report["rounds_completed"] == 2
    assert requests(grid, victim)[-1] == ("evaluate", None, "reply")
    assert report["release"]["approved"], report["release"]["reasons"]
    assert (out / "synthetic.csv").exists()
    # The failed site spent nothing on round 2: one round of steps, where the others have two.
    sites = report["privacy"]["sites"]
    assert sites[name]["steps"] == 2 and all(sites[o]["steps"] == 4 for o in others)
    assert 0 < sites[name]["epsilon"] < min(sites[o]["epsilon"] for o in others) <= EPSILON


def run_with_east_refused(tmp_path, table, schema):
    """A federation whose policy admits north and south only; east's node id is returned with the run."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("name: two-regions\nallowed_jurisdictions: [north, south]\n", encoding="utf-8")
    report, grid, out, run_config = federate(tmp_path, table, schema, policy=str(policy))
    names = site_names(grid, run_config, schema)
    (east,) = [node for node, name in names.items() if name == "region=east"]
    return report, grid, out, east


def test_a_site_the_policy_refuses_is_excluded_from_aggregation(tmp_path, small_table, small_schema):
    report, grid, out, east = run_with_east_refused(tmp_path, small_table, small_schema)

    # East refused the measurement itself (its jurisdiction is not admitted) and was never asked again.
    assert requests(grid, east) == [("query", 0, "error")]
    assert BUDGET_STATE not in grid.contexts[east].state.config_records  # it charged nothing
    measured = report["privacy"]["measurement"]
    assert sorted(measured["sites"]) == ["region=north", "region=south"]
    assert measured["failed"]["region=east"].startswith("excluded: refused: jurisdiction 'east'")

    for entry in report["rounds"]:
        assert sorted(entry["aggregated"]) == ["region=north", "region=south"], entry
        assert "region=east" not in entry["sites"] and "region=east" not in entry["failed"]
    assert sorted(report["privacy"]["sites"]) == ["region=north", "region=south"]

    participation = report["sovereignty"]["rules"]["participation"]
    assert participation["passed"]
    assert "region=east" in participation["excluded"]
    assert sorted(participation["admitted"]) == ["region=north", "region=south"]
    assert participation["excluded_but_contributed"] == []
    assert report["sovereignty"]["policy"]["content"]["allowed_jurisdictions"] == ["north", "south"]
    assert report["release"]["approved"], report["release"]["reasons"]
    assert (out / "synthetic.csv").exists()


def test_an_excluded_site_is_not_reported_as_missing(tmp_path, small_table, small_schema):
    report, _, _, east = run_with_east_refused(tmp_path, small_table, small_schema)
    for entry in report["rounds"]:
        # East was sampled but never sent the round (it was excluded in round 0): not 'missing'.
        assert entry["missing"] == [], (east, entry)


def _round(msg: Message) -> int | None:
    config = msg.content.config_records.get("config") if msg.has_content() else None
    return int(config["server-round"]) if config is not None and "server-round" in config else None


def test_a_second_run_into_the_same_folder_is_refused_unless_it_resumes(tmp_path, small_table, small_schema):
    federate(tmp_path, small_table, small_schema, rounds=1)
    before = (tmp_path / "run" / "report.json").read_bytes()
    with pytest.raises(Exception, match="holds an earlier run"):
        federate(tmp_path, small_table, small_schema, rounds=1)
    assert (tmp_path / "run" / "report.json").read_bytes() == before


def test_fewer_supernodes_than_the_partition_gives_is_refused_in_one_line(tmp_path, small_table, small_schema):
    """As `flwr run .` with Flower's default of 2 SuperNodes for a split into 3 sites: every site refuses, and
    the coordinator stops with the one reason, which says how to fix it."""
    data, schema_path = tmp_path / "table.csv", tmp_path / "table.yaml"
    small_table.to_csv(data, index=False)
    dump_schema(small_schema, schema_path)
    config = RunConfig(data=str(data), schema=str(schema_path), partition="column:region", rounds=1, local_steps=2,
                       batch_size=32, out=str(tmp_path / "run"), round_timeout=30.0, min_sites=2)  # fmt: skip
    run_config = config.to_mapping()
    grid = FakeGrid(run_config, 2)
    context = Context(run_id=grid.run_id, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(),
                      run_config=run_config)  # fmt: skip
    with task_identity(grid.run_id), pytest.raises(Exception) as info:
        server_app.app(grid, context)
    message = str(info.value)
    assert "measurement: every site refused" in message
    assert "gives 3 sites but the simulation started 2 SuperNodes" in message and "num-supernodes=3" in message
    assert not (tmp_path / "run" / "report.json").exists()


def test_a_budget_too_small_for_the_planned_releases_is_refused_with_its_public_reason(tmp_path, small_table,
                                                                                      small_schema):  # fmt: skip
    with pytest.raises(Exception) as info:
        federate(tmp_path, small_table, small_schema, rounds=1, epsilon=0.2)
    message = str(info.value)
    assert "measurement: every site refused" in message and "site budget ε=0.2" in message, message
    assert "would spend the whole budget" in message and "validator-feedback-noise" in message, message


def test_a_site_too_small_for_its_budget_is_named_with_what_would_help(tmp_path, small_table, small_schema, caplog):
    caplog.set_level("WARNING")
    logging.getLogger("flwr").addHandler(caplog.handler)
    try:
        # Reproducible noise (federate's default): the sites' DP row counts, and so their plans, are the same every run.
        report, _, _, _ = federate(tmp_path, small_table, small_schema, rounds=1, epsilon=0.5)
    finally:
        logging.getLogger("flwr").removeHandler(caplog.handler)
    noisy = {n for n, m in report["rounds"][0]["sites"].items() if m["noise-multiplier"] > 5}
    warned = {r.getMessage() for r in caplog.records if "will be mostly noise" in r.getMessage()}
    assert noisy, "at ε=0.5 with about 100 rows a site, some site should be too small"
    assert {w.split()[2] for w in warned} == noisy  # "fedsynth: site NAME (...": exactly the noisy sites
    assert all("a larger budget" in w and "pooling" in w for w in warned)
