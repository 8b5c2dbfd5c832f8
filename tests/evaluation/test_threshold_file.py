"""threshold.json: evaluate writes it, `evaluate --publish` / publish_threshold put it into the run folder that
made the maps (where detect finds it), and a malformed one is refused before anything is written."""

from __future__ import annotations

import json

import pytest

from mddpm.cli.main import main
from mddpm.errors import InputError, NotFoundError
from mddpm.evaluation.postprocess import PostprocessSettings
from mddpm.evaluation.threshold_file import publish_threshold, read_threshold_file
from mddpm.inference.detect import resolve_threshold
from mddpm.io import write_json


def test_evaluate_publish_puts_the_threshold_where_detect_reads_it(phantom_maps, make_run, tmp_path):
    run = make_run(tmp_path / "run", "intensity")
    predict = json.loads((phantom_maps["test"] / "predict.json").read_text())
    write_json(phantom_maps["test"] / "predict.json", {**predict, "run": str(run)})  # the maps of this run
    assert main(["evaluate", str(phantom_maps["test"]), "--val", str(phantom_maps["val"]),
                 "--out", str(tmp_path / "ev"), "--publish", "--no-progress"]) == 0
    stored = json.loads((tmp_path / "ev" / "threshold.json").read_text())
    assert json.loads((run / "threshold.json").read_text()) == stored
    value, source, settings = resolve_threshold(run, None)
    assert value == stored["threshold"] and source == str(run / "threshold.json")
    assert settings == PostprocessSettings.from_json(stored["postprocess"])


def test_evaluate_publish_to_maps_of_no_run_is_refused_before_evaluating(phantom_maps, tmp_path, capsys):
    # the phantom maps name a run folder that does not exist
    assert main(["evaluate", str(phantom_maps["test"]), "--val", str(phantom_maps["val"]),
                 "--out", str(tmp_path / "ev"), "--publish", "--no-progress"]) == 2
    assert "not a run folder" in capsys.readouterr().err and not (tmp_path / "ev").exists()


def test_publish_refuses_a_malformed_threshold_and_a_folder_that_is_no_run(make_run, tmp_path):
    run = make_run(tmp_path / "run", "intensity")
    write_json(tmp_path / "ev" / "threshold.json", {"threshold": 0.5, "postprocess": {"median_filter": {"kernel": 2}}})
    with pytest.raises(InputError, match="median_filter.kernel"):
        publish_threshold(tmp_path / "ev", run)
    assert not (run / "threshold.json").exists()
    write_json(tmp_path / "ok" / "threshold.json", {"threshold": 0.5})
    with pytest.raises(NotFoundError, match="not a run folder"):
        publish_threshold(tmp_path / "ok", tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()
    assert read_threshold_file(publish_threshold(tmp_path / "ok", run)) == (0.5, PostprocessSettings())
