"""The method registry: every listed method resolves, unknown names list the known ones, a name registers once."""

from __future__ import annotations

import pytest

from mddpm.config import DEFAULT_PRESET, resolve_config, resolve_run_config
from mddpm.errors import ConfigError
from mddpm.methods import all_methods, get_method
from mddpm.registry import METHODS, MethodSpec, read_presets, register_method

SHIPPED = sorted(name for name, spec in all_methods().items() if spec.build.__module__.startswith("mddpm.methods"))
PRESETS = {"demo": {"about": "a probe", "model": {"depth": 2}, "train": {"max_steps": 3}}}


@pytest.fixture
def registry():
    """The registry, put back as it was after the test (whatever the test registered is forgotten)."""
    saved = dict(METHODS)
    yield METHODS
    METHODS.clear()
    METHODS.update(saved)


def _build(model_cfg: dict):
    return ("built", model_cfg)


def test_the_shipped_methods_are_registered():
    assert {"intensity", "vae", "dae", "ddpm", "pddpm", "mddpm-fpmcm"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_method_resolves_with_its_package_presets(name):
    spec = get_method(name)
    assert isinstance(spec, MethodSpec) and spec.name == name and spec is all_methods()[name]
    assert spec.description.strip() and "\n" not in spec.description
    assert spec.presets == read_presets(name)  # the package file mddpm/presets/<name>.yaml
    for preset in spec.presets:
        cfg = resolve_config(name, preset)
        assert (cfg["method"], cfg["preset"]) == (name, preset)
    assert DEFAULT_PRESET in spec.presets


def test_all_methods_is_a_copy():
    methods = all_methods()
    methods.clear()
    assert all_methods() and get_method(SHIPPED[0])


def test_an_unknown_name_lists_every_known_one():
    with pytest.raises(ConfigError) as err:
        get_method("no-such-method")
    message = str(err.value)
    assert message.startswith("unknown method 'no-such-method' (known: ") and "\n" not in message
    assert message.split("(known: ", 1)[1].rstrip(")").split(", ") == sorted(all_methods())


def test_a_registered_method_is_found_and_resolves(registry):
    returned = register_method("probe", "a probe method", PRESETS, reference="doi:x")(_build)
    assert returned is _build  # the decorator leaves the builder as it was
    spec = get_method("probe")
    assert (spec.name, spec.description, spec.build, spec.reference) == ("probe", "a probe method", _build, "doi:x")
    assert spec.presets == PRESETS and spec.ignored_settings is None and "probe" in all_methods()
    cfg = resolve_config("probe", "demo", ["model.depth=4"])
    assert cfg["model"] == {"depth": 4} and cfg["train"]["max_steps"] == 3


def test_a_name_registers_only_once(registry):
    register_method("probe", "first", PRESETS)(_build)
    with pytest.raises(ValueError, match="method 'probe' registered twice"):
        register_method("probe", "second", PRESETS)(lambda cfg: None)
    assert get_method("probe").description == "first" and get_method("probe").build is _build
    shipped = get_method("vae")
    with pytest.raises(ValueError, match="method 'vae' registered twice"):
        register_method("vae", "an impostor", PRESETS)(_build)
    assert get_method("vae") is shipped


def test_the_registry_fixture_forgets_what_a_test_registered(registry):
    before = dict(registry)
    register_method("probe", "a probe method", PRESETS)(_build)
    assert "probe" in all_methods() and "probe" not in before  # the tests above left nothing behind


def test_settings_a_method_ignores_are_refused_when_given(registry):
    def ignored(model_cfg):
        return {"depth": "mode is 'flat'"} if model_cfg.get("mode") == "flat" else {}

    register_method("probe", "a probe method", {"demo": {"model": {"depth": 2, "mode": "flat"}}},
                    ignored_settings=ignored)(_build)
    assert get_method("probe").ignored_settings is ignored
    assert resolve_run_config("probe", "demo")["model"]["depth"] == 2  # the preset's own value is not "given"
    with pytest.raises(ConfigError, match=r"^model.depth: method probe ignores it \(mode is 'flat'\); remove it$"):
        resolve_run_config("probe", "demo", overrides=["model.depth=3"])
    assert resolve_run_config("probe", "demo", overrides=["model.mode=\"deep\"", "model.depth=3"])["model"] == {
        "depth": 3, "mode": "deep"}
