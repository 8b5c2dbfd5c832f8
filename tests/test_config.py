"""mddpm.config: ranges of every numeric setting, --set parsing, config files and presets resolved into one config."""

from __future__ import annotations

import copy
import json
import re

import pytest

from mddpm.config import (
    _FLOAT_RANGES,
    _INT_RANGES,
    DEFAULT_PRESET,
    TRAIN_DEFAULTS,
    _check_ranges,
    apply_overrides,
    given_keys,
    read_config_file,
    resolve_config,
    resolve_run_config,
    validate_config,
)
from mddpm.errors import ConfigError, NotFoundError
from mddpm.methods import get_method


@pytest.fixture(scope="module")
def vae() -> dict:
    return resolve_config("vae", "demo")


def _refused(tree: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        _check_ranges(tree, "model.")


# --- ranges --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(_INT_RANGES))
def test_integer_ranges_are_inclusive_and_name_the_nested_key(key):
    low, high = _INT_RANGES[key]
    _check_ranges({"net": {key: low}, "other": {key: high}}, "model.")
    for value in (low - 1, high + 1):
        _refused({"net": {key: value}}, f"model.net.{key}={value}: must be an integer from {low} to {high}")


@pytest.mark.parametrize("key", sorted(_FLOAT_RANGES))
def test_float_ranges_are_inclusive_and_name_the_key(key):
    low, high = _FLOAT_RANGES[key]
    _check_ranges({key: low, "net": {key: high}}, "model.")
    for value in (low - max(low, 1.0) / 2, high * 2):
        _refused({key: value}, f"model.{key}={value!r}: must be a number from {low:g} to {high:g}")


def test_ranges_check_the_type_and_allow_none():
    _check_ranges({"depth": None, "lr": None, "mask_ratio": None, "dropout": 0}, "model.")  # an int is a number
    _refused({"depth": True}, "model.depth=True: must be an integer from 1 to 64")  # a bool is no integer
    _refused({"depth": 2.0}, "model.depth=2.0: must be an integer from 1 to 64")
    _refused({"lr": "fast"}, "model.lr='fast': must be a number from 1e-12 to 10")
    _check_ranges({"not_a_ranged_key": -10**9}, "model.")  # only named settings have ranges


@pytest.mark.parametrize("pair", [[0, 1], [0.2, 0.4]])
def test_pairs_of_fractions_are_accepted(pair):
    _check_ranges({"mask_ratio": pair, "adam_betas": pair}, "model.")


@pytest.mark.parametrize("pair", [[0.2], [0.2, 0.4, 0.6], [0.5, 1.5], [-0.1, 0.5], [True, 0.5], "0.2,0.4", 0.3])
def test_pairs_of_fractions_are_refused_unless_two_numbers_in_0_1(pair):
    for key in ("mask_ratio", "adam_betas"):
        _refused({"net": {key: pair}} if key == "mask_ratio" else {key: pair},
                 f"model.{'net.' if key == 'mask_ratio' else ''}{key}={pair!r}: must be two numbers from 0 to 1")


# --- --set strings -------------------------------------------------------------------------------------------


def test_overrides_parse_json_else_keep_the_string(vae):
    cfg = apply_overrides(vae, ["train.lr=1", "train.precision=bf16", "data.grid=a=b", "model.dropout=null",
                                " train.max_steps =7"])
    assert cfg["train"]["lr"] == 1.0 and isinstance(cfg["train"]["lr"], float)  # an int may replace a float
    assert cfg["train"]["precision"] == "bf16" and cfg["data"]["grid"] == "a=b"  # split at the first "="
    assert cfg["model"]["dropout"] is None and cfg["train"]["max_steps"] == 7
    assert vae["train"]["lr"] == 0.001 and vae["data"]["grid"] == "demo"  # the input is left alone


@pytest.mark.parametrize("item, message", [
    ("train.lr", "--set 'train.lr': expected key=value"),
    ("train.batch_size=2.5", "--set train.batch_size=2.5: expected int, got float"),
    ("train.batch_size=true", "--set train.batch_size=true: expected int, got bool"),
    ("train.precision=32", "--set train.precision=32: expected str, got int"),
    ("train.nope=1", "--set train.nope: unknown key (known: "),
    ("train=1", "--set train: unknown key"),  # a section is not a value
    ("method=\"dae\"", "--set method: unknown key"),  # nor are the top-level names
    ("nosection.lr=1", "--set nosection.lr: unknown key"),
])
def test_bad_overrides_are_one_line_naming_the_key(vae, item, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)) as err:
        apply_overrides(vae, [item])
    assert "\n" not in str(err.value)


def test_unknown_key_lists_the_settable_keys(vae):
    with pytest.raises(ConfigError) as err:
        apply_overrides(vae, ["model.latent_dims=3"])
    known = str(err.value).split("(known: ", 1)[1].rstrip(")").split(", ")
    assert {"model.latent_dim", "train.lr", "data.grid"} <= set(known)
    assert not {"method", "preset", "mddpm_version"} & set(known)


def test_given_keys_are_those_of_the_file_and_of_set():
    assert given_keys({"train.lr": 1.0}, ["model.depth=3", " train.seed = 4"]) == [
        "train.lr", "model.depth", "train.seed"]
    assert given_keys({}, {"model.depth": 3}) == ["model.depth"]  # overrides as data
    with pytest.raises(ConfigError, match="--set 'malformed': expected key=value"):
        given_keys({}, ["malformed"])


# --- presets and validation ----------------------------------------------------------------------------------


def test_a_preset_overrides_the_generic_defaults_and_is_json(vae):
    preset = get_method("vae").presets["demo"]
    assert set(vae) == {"mddpm_version", "method", "preset", "model", "train", "data"}
    assert set(vae["train"]) == set(TRAIN_DEFAULTS)
    assert vae["train"] == {**TRAIN_DEFAULTS, **preset["train"]} and vae["model"] == preset["model"]
    assert json.loads(json.dumps(vae)) == vae


def test_resolving_with_overrides_leaves_the_preset_unchanged(vae):
    preset = copy.deepcopy(get_method("vae").presets)
    changed = resolve_config("vae", "demo", ["model.latent_dim=7"], {"train.seed": 5})
    assert changed["model"]["latent_dim"] == 7 and changed["train"]["seed"] == 5
    assert get_method("vae").presets == preset and resolve_config("vae", "demo") == vae


def test_unknown_preset_or_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"method 'vae' has no preset 'huge' \(known: demo, paper\)"):
        resolve_config("vae", "huge")
    with pytest.raises(ConfigError, match=r"unknown method 'nope' \(known: .*\bvae\b"):
        resolve_config("nope", "demo")


@pytest.mark.parametrize("key, value, message", [
    ("precision", "16", "train.precision='16': must be \"32\" or \"bf16\""),
    ("bank_device", "cuda", "train.bank_device='cuda': must be \"auto\" or \"cpu\""),
    ("augment", "flip", "train.augment='flip': must be one of none, intensity, spatial, all"),
])
def test_validate_refuses_choices_outside_their_list(vae, key, value, message):
    cfg = copy.deepcopy(vae)
    cfg["train"][key] = value
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        validate_config(cfg)


def test_validate_accepts_an_older_config_and_refuses_missing_sections(vae):
    old = copy.deepcopy(vae)
    del old["train"]["augment"], old["train"]["bank_device"]  # settings added after the file was written
    validate_config(old)
    for section in ("model", "train"):
        broken = copy.deepcopy(vae)
        broken[section] = []
        with pytest.raises(ConfigError, match=f"^{section}: missing, or not a section"):
            validate_config(broken)


# --- config files --------------------------------------------------------------------------------------------


def test_config_file_as_a_mapping_is_flattened_and_left_alone():
    given = {"method": "vae", "mddpm_version": "0.0", "train": {"lr": 0.01}, "model": {"net": {"depth": 2}}}
    before = copy.deepcopy(given)
    chosen, settings, source = read_config_file(given)
    assert chosen == {"method": "vae"} and settings == {"train.lr": 0.01, "model.net.depth": 2}
    assert source == "config: " and given == before


@pytest.mark.parametrize("text, line", [("train:\n  lr: 0.1\n  lr: 0.2\n", 3),
                                        ("train:\n  lr: 0.1\nmodel: {}\ntrain: {}\n", 4)])
def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path, text, line):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: not valid YAML or JSON (") +
                       f".*given twice \\(line {line}\\)"):
        read_config_file(path)


@pytest.mark.parametrize("text, message", [
    ("train: [unclosed\n", "not valid YAML or JSON"),
    ("42\n", "expected a mapping of settings"),
    ("method: [vae]\n", "method must be a name"),
    ("preset: 3\n", "preset must be a name"),
])
def test_bad_config_files_are_named(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: {message}")):
        read_config_file(path)


def test_a_missing_config_file_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="^" + re.escape(f"{tmp_path / 'missing.yaml'}: config file not found")):
        read_config_file(tmp_path / "missing.yaml")


def test_run_config_takes_method_and_preset_from_the_arguments_then_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: vae\npreset: paper\ntrain:\n  seed: 9\n")
    from_file = resolve_run_config(None, None, path)
    assert (from_file["method"], from_file["preset"], from_file["train"]["seed"]) == ("vae", "paper", 9)
    chosen = resolve_run_config("dae", "demo", path)
    assert (chosen["method"], chosen["preset"], chosen["train"]["seed"]) == ("dae", "demo", 9)
    assert resolve_run_config("vae", None)["preset"] == DEFAULT_PRESET
    with pytest.raises(ConfigError, match="no method: pass --method"):
        resolve_run_config(None, None, {"train": {"seed": 1}})
