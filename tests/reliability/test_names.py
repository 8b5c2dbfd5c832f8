"""Names that become file or folder names (experiment-grid, dataset, test-set and method names) follow the
case-id rule of mddpm.io.case_id_problem: one path component, no leading dot, no control character, <= 128."""

from __future__ import annotations

import json

import pytest

from mddpm.benchmark.experiment import load_experiment
from mddpm.errors import MddpmError
from mddpm.registry import register_method

BAD_NAMES = ["../up", "/abs", "a/b", ".hidden", "tab\there", "x" * 129]
GRID = {"name": "tiny", "preset": "demo", "methods": ["intensity"], "runs": {"seeds": [1]}, "figures": 0,
        "datasets": [{"name": "phantom", "path": None,
                      "test_sets": [{"name": "blob", "test": "lesion_test", "val": "lesion_val"}]}]}


def _with_name(where: str, name: str) -> dict:
    grid = json.loads(json.dumps(GRID))
    if where == "grid":
        grid["name"] = name
    elif where == "dataset":
        grid["datasets"][0]["name"] = name
    else:
        grid["datasets"][0]["test_sets"][0]["name"] = name
    return grid


def test_the_good_grid_loads(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(GRID))
    assert load_experiment(path).name == "tiny"


@pytest.mark.parametrize("where", ["grid", "dataset", "test set"])
@pytest.mark.parametrize("name", BAD_NAMES)
def test_grid_names_that_are_no_file_name_are_refused(tmp_path, where, name):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(_with_name(where, name)))
    with pytest.raises(MddpmError, match="must be .*simple names?") as err:
        load_experiment(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_method_names_that_are_no_file_name_cannot_be_registered(name):
    with pytest.raises(ValueError, match="method name .* become file names"):
        register_method(name, "a method with an unsafe name", {"demo": {}})(lambda cfg: None)
