"""The Python API (mddpm/api.py, docs/api.md): lazy import, scoring from a path / an image / an array."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import mddpm
import mddpm.training.train as train_module
from mddpm.api import overrides
from mddpm.cli.main import main
from mddpm.errors import ConfigError, InputError, MddpmError, NotFoundError
from mddpm.inference.detect import detect

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_import_mddpm_loads_no_torch_and_lists_the_api():
    code = "import sys, mddpm; print('torch' in sys.modules, 'lightning' in sys.modules, sorted(mddpm.__all__))"
    env = {**os.environ, "PYTHONPATH": str(Path(mddpm.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == ("False False ['Detection', 'Detector', '__version__', 'evaluate', 'load', 'predict', "
                           "'run_benchmark', 'train']")
    assert {"load", "train", "run_benchmark"} <= set(dir(mddpm))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mddpm.nope  # noqa: B018


def test_score_a_path_an_image_and_an_array_like_detect(detect_run, phantom_case_paths, tmp_path):
    dataset, run = detect_run
    scan, mask, _ = phantom_case_paths(dataset)
    detector = mddpm.load(run)
    assert detector.method == "intensity" and detector.threshold == 0.6
    from_path = detector.score(scan, mask=mask)
    image = nib.load(str(scan))
    from_image = detector.score(image, mask=nib.load(str(mask)))
    from_array = detector.score(np.asarray(image.dataobj)[..., None], mask=np.asarray(nib.load(str(mask)).dataobj),
                                affine=image.affine)  # a trailing axis of 1 is dropped
    for other in (from_image, from_array):
        np.testing.assert_array_equal(other.segmentation, from_path.segmentation)
        np.testing.assert_array_equal(other.anomaly_map, from_path.anomaly_map)
    out = detect(scan, run, tmp_path / "cli", mask=mask)  # the command gives the same map and segmentation
    np.testing.assert_array_equal(np.asarray(nib.load(str(out / "segmentation.nii.gz")).dataobj),
                                  from_path.segmentation.astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(nib.load(str(out / "anomaly_map.nii.gz")).dataobj), from_path.anomaly_map)
    assert from_path.segmentation.dtype == bool and from_path.anomaly_map.shape == image.shape
    voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000
    assert from_path.lesion_volume_ml == pytest.approx(from_path.segmentation.sum() * voxel_ml)
    assert from_path.segmentation.sum() > 0
    saved = from_path.save(tmp_path / "saved")
    assert np.allclose(nib.load(str(saved / "segmentation.nii.gz")).affine, image.affine)
    no_mask = detector.score(scan)  # default brain: scan > 0
    assert no_mask.segmentation.shape == image.shape


def test_bad_inputs_are_one_line_errors(detect_run, phantom_case_paths):
    dataset, run = detect_run
    scan, mask, _ = phantom_case_paths(dataset)
    detector = mddpm.load(run, threshold=0.5)
    array = np.asarray(nib.load(str(scan)).dataobj)
    with pytest.raises(MddpmError, match="an array needs its affine"):
        detector.score(array)
    with pytest.raises(MddpmError, match="expected a 3-D volume"):
        detector.score(array[..., 0], affine=np.eye(4))
    broken = array.astype(np.float32).copy()
    broken[0, 0, 0] = np.nan
    with pytest.raises(MddpmError, match="NaN or Inf"):
        detector.score(broken, affine=np.eye(4))
    with pytest.raises(MddpmError, match="brain mask is empty"):
        detector.score(scan, mask=np.zeros_like(array), affine=nib.load(str(scan)).affine)
    with pytest.raises(MddpmError, match="best.pt"):
        mddpm.load(dataset)


@pytest.mark.parametrize("affine, message", [
    (np.full((4, 4), np.nan), "the affine holds NaN or Inf"), (np.diag([np.inf, 1, 1, 1]), "NaN or Inf"),
    (np.zeros((4, 4)), "degenerate affine"), (np.diag([1e-4, 1e-4, 1e-4, 1]), "degenerate affine"),
    (np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "singular"),
    ("not a matrix", "not a 4x4 matrix"), (np.eye(3), "must be 4x4"),
])
def test_the_api_refuses_bad_affines_as_the_command_line_does(detect_run, phantom_case_paths, affine, message):
    dataset, run = detect_run
    scan, _, _ = phantom_case_paths(dataset)
    array = np.asarray(nib.load(str(scan)).dataobj)
    with pytest.raises(InputError, match=message):
        mddpm.load(run, threshold=0.5).score(array, affine=affine)


def test_the_api_refuses_unreal_voxels_and_non_binary_masks(detect_run, phantom_case_paths):
    dataset, run = detect_run
    scan, mask, _ = phantom_case_paths(dataset)
    detector, image = mddpm.load(run, threshold=0.5), nib.load(str(scan))
    array, affine = np.asarray(image.dataobj), image.affine
    for bad, kind in ((array.astype(np.complex64), "complex64"), (array.astype(str), "<U"),
                      (array.astype(object), "object")):
        with pytest.raises(InputError, match=f"scan: voxels of type {kind}"):
            detector.score(bad, affine=affine)
    brain = np.asarray(nib.load(str(mask)).dataobj)
    for value in (0.5, -1):
        with pytest.raises(InputError, match="brain mask is not binary"):
            detector.score(array, mask=np.where(brain > 0, value, 0), affine=affine)


def test_a_run_without_a_threshold_gives_maps_and_refuses_a_segmentation(detect_run, phantom_case_paths, tmp_path):
    dataset, run = detect_run
    scan, mask, _ = phantom_case_paths(dataset)
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    (bare / "threshold.json").unlink()
    detector = mddpm.load(bare)
    assert detector.threshold is None
    maps_only = detector.score(scan, mask=mask)
    with_number = mddpm.load(bare, threshold=0.05).score(scan, mask=mask)  # the same published post-processing
    np.testing.assert_array_equal(maps_only.anomaly_map, with_number.anomaly_map)
    assert with_number.segmentation.any()
    with pytest.raises(ConfigError, match="no threshold: .*threshold=VALUE"):
        maps_only.segmentation  # noqa: B018
    with pytest.raises(ConfigError, match="no threshold"):
        maps_only.lesion_volume_ml  # noqa: B018
    assert "threshold=None (maps only)" in repr(maps_only)
    saved = maps_only.save(tmp_path / "maps")
    assert sorted(p.name for p in saved.iterdir()) == ["anomaly_map.nii.gz"]
    with pytest.raises(NotFoundError, match="threshold.json: no threshold for this run"):
        detect(scan, bare, tmp_path / "cli", mask=mask)  # the command writes a segmentation: it needs one


def test_detection_repr_is_short(detect_run, phantom_case_paths):
    dataset, run = detect_run
    scan, mask, _ = phantom_case_paths(dataset)
    found = mddpm.load(run).score(scan, mask=mask)
    text = repr(found)
    assert text == (f"Detection(shape=(32, 32, 16), threshold=0.6, "
                    f"lesion_volume_ml={found.lesion_volume_ml:.1f})")
    found.unscored_fraction = 0.125  # where the scoring reports it
    assert repr(found).endswith(", unscored_fraction=0.125)") and len(repr(found)) < 120


def test_list_options_take_one_string_a_list_or_a_mapping(phantom_dataset, tmp_path, monkeypatch):
    assert overrides("train.max_steps=6") == ["train.max_steps=6"]
    assert overrides(["train.lr=1e-3", "train.seed=1"]) == ["train.lr=1e-3", "train.seed=1"]
    assert overrides({"train.max_steps": 7, "train.precision": "bf16"}) == [
        "train.max_steps=7", 'train.precision="bf16"']
    asked = {}
    real = train_module.prepare_dataset
    monkeypatch.setattr(train_module, "prepare_dataset", lambda *a, **k: asked.update(k) or real(*a, **k))
    run = mddpm.train(phantom_dataset, "intensity", set="train.max_steps=6", logger="csv", out=tmp_path / "a",
                      progress=False)
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 6
    assert asked["workers"] == 1  # the API prepares in this process by default
    run = mddpm.train(phantom_dataset, "intensity", set={"train.max_steps": 7, "train.precision": "bf16"},
                      out=tmp_path / "b", progress=False, workers=2)
    cfg = json.loads((run / "config.json").read_text())["train"]
    assert (cfg["max_steps"], cfg["precision"], asked["workers"]) == (7, "bf16", 2)
    with pytest.raises(ConfigError, match="--set train.nope: unknown key"):
        mddpm.train(phantom_dataset, "intensity", set={"train.nope": 1}, out=tmp_path / "c", progress=False)


def test_errors_are_subclasses_a_caller_can_branch_on(detect_run, phantom_case_paths, tmp_path):
    dataset, run = detect_run
    scan, _, _ = phantom_case_paths(dataset)
    for kind in (InputError, NotFoundError, ConfigError):
        assert issubclass(kind, MddpmError)
    detector = mddpm.load(run)
    with pytest.raises(NotFoundError, match="nope.nii.gz: scan file not found"):
        detector.score(tmp_path / "nope.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="bad.nii.gz: cannot read as NIfTI"):
        detector.score(tmp_path / "bad.nii.gz")
    with pytest.raises(InputError, match="an array needs its affine"):
        detector.score(np.zeros((4, 4, 4)))
    with pytest.raises(NotFoundError, match="best.pt: weights file not found"):
        mddpm.load(tmp_path)
    with pytest.raises(NotFoundError, match="dataset.json"):
        mddpm.train(tmp_path, "intensity", out=tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        mddpm.train(dataset, "nope", out=tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="train.lr=-1"):
        mddpm.train(dataset, "intensity", set="train.lr=-1", out=tmp_path / "r", progress=False)
    with pytest.raises(NotFoundError, match="config file not found"):
        mddpm.train(dataset, "intensity", config=tmp_path / "none.yaml", out=tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="--logger nope"):
        mddpm.train(dataset, "intensity", logger="nope", out=tmp_path / "r", progress=False)
    with pytest.raises(InputError, match="no split 'nope'"):
        mddpm.predict(run, dataset, "nope", tmp_path / "maps", progress=False)
    assert main(["train", "--data", str(dataset), "--method", "nope"]) == 2  # still one line and exit code 2


SCRIPT = """
import mddpm
from mddpm.data.synth.phantom import make_phantom_dataset

data = make_phantom_dataset("work/phantom")
run = mddpm.train(data, "intensity", out="work/run", progress=False)
maps = mddpm.predict(run, data, "lesion_test", "work/maps", progress=False)
print(len(list(maps.glob("case*.nii.gz"))), mddpm.load(run))
"""


def _run_as_script(folder: Path, code: str) -> subprocess.CompletedProcess:
    """``python session.py`` in ``folder``: a plain script without an ``if __name__ == "__main__":`` guard."""
    (folder / "session.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(Path(mddpm.__file__).parents[1])}
    return subprocess.run([sys.executable, "session.py"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=900)


def test_the_api_runs_from_a_script_without_a_main_guard(tmp_path):
    """Preparing the data (train, predict) used to spawn workers, which re-ran the script and died."""
    done = _run_as_script(tmp_path, SCRIPT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("2 Detector(")
    assert "note: running in this process" not in done.stderr  # the API prepares in process by default


@pytest.mark.slow  # about a minute here: it synthesises, prepares, trains, predicts and evaluates
def test_the_documented_session_runs_as_a_script_and_prints_what_the_doc_shows(tmp_path):
    """Every code block of docs/api.md, in order, as one plain script (``python session.py``, no main guard)."""
    text = DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    shown = re.findall(r"```text\n(.*?)```", text, re.S)
    assert len(blocks) == len(shown) == 3
    done = _run_as_script(tmp_path, "".join(blocks))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if not line.startswith(("trained ", "predicted "))]
    assert lines == "".join(shown).splitlines()
    assert (tmp_path / "work/detected/segmentation.nii.gz").is_file()
    assert len(list((tmp_path / "work/eval/segmentations").glob("*.nii.gz"))) == 1
