"""Where a site's rows come from: a deployed site's own file, or its partition of a simulated split."""

from __future__ import annotations

import pytest

from fedsynth.client.site_data import SimulationMismatchError, load_site
from fedsynth.core.config import RunConfig
from fedsynth.core.errors import DataError
from fedsynth.tabular.schema import dump_schema, dump_schema_text


@pytest.fixture
def simulated(tmp_path, small_table, small_schema):
    data, schema = tmp_path / "t.csv", tmp_path / "t.yaml"
    small_table.to_csv(data, index=False)
    dump_schema(small_schema, schema)
    config = RunConfig(data=str(data), schema=str(schema), partition="column:region").to_mapping()
    return config, dump_schema_text(small_schema)


def test_a_simulated_site_takes_its_own_partition(simulated, small_table):
    config, text = simulated
    names = {load_site({"partition-id": i, "num-partitions": 3}, config, text).name for i in range(3)}
    assert names == {"region=east", "region=north", "region=south"}
    site = load_site({"partition-id": 1, "num-partitions": 3}, config, text)
    assert len(site.frame) == (small_table["region"] == site.name.split("=")[1]).sum()
    assert site.encoded.shape[0] == len(site.frame) and site.jurisdiction == site.name.split("=")[1]


def test_fewer_supernodes_than_sites_is_refused_with_the_fix(simulated):
    config, text = simulated
    with pytest.raises(SimulationMismatchError) as info:
        load_site({"partition-id": 0, "num-partitions": 2}, config, text)
    assert "gives 3 sites but the simulation started 2 SuperNodes" in str(info.value)
    assert '--federation-config "num-supernodes=3"' in str(info.value)


def test_a_deployed_site_reads_its_own_file_and_a_node_without_either_is_refused(tmp_path, simulated, small_table):
    config, text = simulated
    own = tmp_path / "own.csv"
    small_table.head(50).to_csv(own, index=False)
    site = load_site({"data-path": str(own), "site": "clinic-7", "jurisdiction": "north"}, config, text)
    assert (site.name, site.jurisdiction, len(site.frame)) == ("clinic-7", "north", 50)
    with pytest.raises(DataError, match="neither 'data-path'"):
        load_site({}, config, text)
