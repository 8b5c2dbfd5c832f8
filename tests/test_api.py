"""The Python API (mddpm/api.py, docs/api.md): lazy import, scoring from a path / an image / an array."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_detect import _case, setup  # noqa: F401  (phantom dataset + intensity run with a threshold)

import mddpm
from mddpm.errors import MddpmError
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


def test_score_a_path_an_image_and_an_array_like_detect(setup, tmp_path):  # noqa: F811
    dataset, run = setup
    scan, mask, _ = _case(dataset)
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


def test_bad_inputs_are_one_line_errors(setup):  # noqa: F811
    dataset, run = setup
    scan, mask, _ = _case(dataset)
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


@pytest.mark.slow  # about a minute here: it synthesises, prepares, trains, predicts and evaluates
def test_the_documented_session_runs_and_prints_what_the_doc_shows(tmp_path, monkeypatch):
    text = DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    shown = re.findall(r"```text\n(.*?)```", text, re.S)
    assert len(blocks) == len(shown) == 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code, expected in zip(blocks, shown):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, str(DOC), "exec"), namespace)
        lines = [line for line in printed.getvalue().splitlines() if not line.startswith(("trained ", "predicted "))]
        assert lines == expected.splitlines()
    assert (tmp_path / "work/detected/segmentation.nii.gz").is_file()
    assert len(list((tmp_path / "work/eval/segmentations").glob("*.nii.gz"))) == 1
