"""RunConfig: defaults stated once (and mirrored in pyproject.toml), strict keys and values."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from fedsynth.core.config import ACCOUNTANTS, RunConfig
from fedsynth.core.errors import ConfigError, UserError

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _flwr_app_config() -> dict:
    with PYPROJECT.open("rb") as handle:
        return tomllib.load(handle)["tool"]["flwr"]["app"]["config"]


def _config_error(mapping: dict, source: str = "run config") -> str:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_mapping(mapping, source=source)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{source}: "), message
    return message


# --- defaults ------------------------------------------------------------------------------------


def test_pyproject_flwr_config_equals_runconfig_defaults():
    in_toml = _flwr_app_config()
    defaults = RunConfig().to_mapping()
    assert list(in_toml) == list(defaults)  # same keys, same order
    assert in_toml == defaults
    for key, value in defaults.items():
        assert type(in_toml[key]) is type(value), (key, in_toml[key], value)


def test_pyproject_flwr_config_builds_the_default_config():
    assert RunConfig.from_mapping(_flwr_app_config(), source="pyproject.toml") == RunConfig()


def test_keys_are_the_hyphenated_field_names():
    names = [f.name for f in dataclasses.fields(RunConfig)]
    assert RunConfig.keys() == [n.replace("_", "-") for n in names]
    keys = set(RunConfig.keys())
    assert "min-sites" in keys and "min_sites" not in keys


def test_mapping_round_trip_with_overrides():
    config = dataclasses.replace(RunConfig(), epsilon=3.5, rounds=4, accountant="rdp", out="elsewhere")
    assert RunConfig.from_mapping(config.to_mapping()) == config


def test_partial_mapping_keeps_defaults():
    config = RunConfig.from_mapping({"rounds": 3})
    assert config == dataclasses.replace(RunConfig(), rounds=3)


def test_command_line_strings_are_coerced():
    config = RunConfig.from_mapping(
        {"rounds": " 7 ", "epsilon": "2.5", "delta": "1e-6", "local-steps": "3", "batch-size": 64.0, "lr-generator": 1}
    )
    assert (config.rounds, config.epsilon, config.delta, config.local_steps) == (7, 2.5, 1e-6, 3)
    assert type(config.rounds) is int and type(config.epsilon) is float
    assert config.batch_size == 64 and type(config.batch_size) is int
    assert config.lr_generator == 1.0 and type(config.lr_generator) is float


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().epsilon = 5.0  # type: ignore[misc]


# --- unknown keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("epsilonn", "epsilon"), ("min_sites", "min-sites"), ("round", "rounds"), ("acountant", "accountant")],
)
def test_unknown_key_suggests_the_close_key(key, suggestion):
    message = _config_error({key: 2}, source="options")
    assert f"unknown config key '{key}'" in message
    assert message.endswith(f"(did you mean '{suggestion}'?)")


def test_unknown_key_without_close_match_has_no_suggestion():
    message = _config_error({"zzzzqqq": 1})
    assert "unknown config key 'zzzzqqq'" in message and "did you mean" not in message


# --- bad values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "key", "needle"),
    [
        ({"epsilon": 0}, "epsilon", "must be a positive number"),
        ({"epsilon": -1.0}, "epsilon", "must be a positive number"),
        ({"epsilon": float("nan")}, "epsilon", "must be a positive number"),
        ({"epsilon": "inf"}, "epsilon", "must be a positive number"),
        ({"delta": 1}, "delta", "must be between 0 and 1"),
        ({"delta": 1.5}, "delta", "must be between 0 and 1"),
        ({"delta": 0.0}, "delta", "must be between 0 and 1"),
        ({"rounds": 0}, "rounds", "must be at least 1"),
        ({"min-sites": 0}, "min-sites", "must be at least 1"),
        ({"batch-size": -5}, "batch-size", "must be at least 1"),
        ({"clients": -1}, "clients", "must not be negative"),
        ({"accountant": "foo"}, "accountant", "must be one of " + ", ".join(ACCOUNTANTS)),
        ({"max-grad-norm": 0.0}, "max-grad-norm", "must be a positive number"),
        ({"round-timeout": -1}, "round-timeout", "must be a positive number"),
        ({"release-check-noise": 0.0}, "release-check-noise", "must be a positive finite number"),
        ({"release-check-noise": -2}, "release-check-noise", "must be a positive finite number"),
        ({"release-check-noise": "inf"}, "release-check-noise", "must be a positive finite number"),
        ({"release-check-noise": "nan"}, "release-check-noise", "must be a positive finite number"),
        ({"out": ""}, "out", "must name an output folder"),
        ({"rounds": "ten"}, "rounds", "must be int, got 'ten'"),
        ({"rounds": "2.5"}, "rounds", "must be int"),
        ({"rounds": 2.5}, "rounds", "must be int, got 2.5"),
        ({"rounds": True}, "rounds", "must be int, got True"),
        ({"epsilon": "abc"}, "epsilon", "must be float, got 'abc'"),
        ({"epsilon": True}, "epsilon", "must be float"),
        ({"epsilon": [1.0]}, "epsilon", "must be float"),
        ({"measure-one-way-weight": "heavy"}, "measure-one-way-weight", 'must be "auto" or a number of at least 1'),
        ({"measure-one-way-weight": 0.5}, "measure-one-way-weight", 'must be "auto" or a number of at least 1'),
        ({"measure-one-way-weight": "nan"}, "measure-one-way-weight", 'must be "auto" or a number of at least 1'),
    ],
)
def test_bad_values_are_one_line_config_errors(mapping, key, needle):
    message = _config_error(mapping)
    assert f"'{key}'" in message
    assert needle in message


def test_bad_value_message_shows_the_value():
    assert _config_error({"accountant": "foo"}).endswith("got 'foo'")


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, UserError)


def test_one_way_weight_takes_auto_or_a_number():
    assert RunConfig().measure_one_way_weight == "auto"
    assert RunConfig.from_mapping({"measure-one-way-weight": 2}).measure_one_way_weight == "2"
    assert RunConfig.from_mapping({"measure-one-way-weight": "1.5"}).measure_one_way_weight == "1.5"


@pytest.mark.parametrize(("epsilon", "bins"), [(0.5, 32), (1.0, 32), (2.0, 64), (3.9, 64), (4.0, 128), (10.0, 256)])
def test_histogram_bins_follow_epsilon_unless_set(epsilon, bins):
    assert RunConfig(epsilon=epsilon).histogram_bins == bins
    assert RunConfig(epsilon=epsilon, measure_bins=48).histogram_bins == 48


def test_selection_rounds_default_to_one_per_column_and_need_measurements():
    assert RunConfig().selection_rounds(13) == 13
    assert RunConfig(select_rounds="2").selection_rounds(13) == 2
    assert RunConfig(measure_fraction=0.0, calibrate=False).selection_rounds(13) == 0
    for bad in ("-1", "many"):
        with pytest.raises(ConfigError, match="select-rounds"):
            RunConfig.from_mapping({"select-rounds": bad})
    with pytest.raises(ConfigError, match="release-from"):
        RunConfig.from_mapping({"release-from": "gan"})
