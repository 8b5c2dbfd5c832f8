"""``mddpm detect RAW --preprocess``: a raw scan through the run's own preprocessing, scored, and mapped back.

The run's training dataset must have been written by ``mddpm preprocess``: its recorded settings
(``DATASET/.preprocess/settings.json``: template, voxel size, orientation, N4) preprocess the raw scan
exactly as the training scans were (:func:`mddpm.preprocess.case.preprocess_case`). The scan is scored
in template space (:func:`mddpm.inference.detect.score_scan`), and the map (linear) and segmentation
(nearest) are resampled onto the raw scan's own voxel grid through the inverse of the recorded
registration (an affine: template point -> scan point, LPS mm). Outputs as for ``detect``, in the raw
scan's geometry; ``detect.json`` also holds the registration matrix and its quality check.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mddpm._version import __version__
from mddpm.errors import MddpmError
from mddpm.folder_lock import writes_folder
from mddpm.inference.detect import OUTPUT_FILES, LoadedRun, lesion_volume_ml, load_run, score_scan, write_maps
from mddpm.io import check_output_folder, read_json, write_json, xform_codes
from mddpm.preprocess import steps
from mddpm.preprocess.case import STATE_DIR, preprocess_case
from mddpm.preprocess.settings import CaseInputs, PreprocessSettings
from mddpm.preprocess.steps import N4Settings, RegistrationSettings
from mddpm.progress import progress_bar
from mddpm.run_folder import RunFolder


def run_preprocess_settings(model: LoadedRun) -> PreprocessSettings:
    """The preprocessing settings of the dataset the run was trained on (refused when it has none)."""
    config_path = RunFolder(model.run).config
    dataset = read_json(config_path).get("dataset") if config_path.is_file() else None
    record = Path(str(dataset)) / STATE_DIR / "settings.json"
    if not dataset or not record.is_file():
        raise MddpmError(f"{model.run}: its training dataset {dataset} was not written by `mddpm preprocess` "
                         f"(no {record.name} in {STATE_DIR}/), so --preprocess does not know its template and "
                         "voxel size; preprocess the scan as that dataset was and call detect without --preprocess")
    saved = dict(read_json(record)["settings"])
    saved["registration"] = RegistrationSettings(**saved["registration"])
    saved["n4"] = N4Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["n4"].items()})
    return PreprocessSettings(**saved)


@writes_folder("out", inputs=("run",))
def detect_raw(scan: str | os.PathLike, run: str | os.PathLike, out: str | os.PathLike,
               mask: str | os.PathLike | None = None, threshold=None, force: bool = False, device: str = "auto",
               precision: str = "32", progress: bool = True) -> Path:
    """Preprocess, score and map back one raw scan (module docstring); ``mask``: its brain mask on any grid
    overlapping it (default: the dataset's own mask source, e.g. image > 0 or HD-BET). Returns ``out``."""
    scan, out = Path(scan).resolve(), Path(out).resolve()
    model = load_run(run, threshold, device, precision)
    settings = run_preprocess_settings(model)
    if mask is not None:
        settings = dataclasses.replace(settings, mask_source="files")
    elif settings.mask_source == "files":
        raise MddpmError(f"{scan}: no brain mask: the run's dataset was preprocessed with given masks; pass --mask")
    check_output_folder(out, force, OUTPUT_FILES)
    with progress_bar("detect", 3, progress, label="preprocessing the scan") as step:
        case = CaseInputs("scan", scan, Path(mask).resolve() if mask is not None else None)
        volumes, info = preprocess_case(case, settings)
        image, affine = steps.to_nifti_array(volumes["image"])
        brain = steps.to_nifti_array(volumes["mask"])[0] > 0
        step("scoring in template space")
        result = score_scan(model, image, brain, affine, str(scan))
        amap, seg, coverage = result.anomaly_map, result.segmentation, result.coverage
        step("back to the scan's geometry, writing")
        raw = steps.read_volume(scan)
        codes = xform_codes(scan) if scan.name.endswith((".nii", ".nii.gz")) else None  # keep e.g. sform code 4
        back = _inverse(info.get("registration", {}).get("matrix_lps"))
        grid = steps.Grid.of(raw)
        map_raw = steps.resample(steps.from_nifti_array(amap.astype(np.float32), affine), grid, back,
                                 interpolator=sitk.sitkLinear)
        seg_raw = steps.resample(steps.from_nifti_array(seg.astype(np.uint8), affine), grid, back,
                                 interpolator=sitk.sitkNearestNeighbor)
        brain_raw = steps.resample(volumes["mask"], grid, back, interpolator=sitk.sitkNearestNeighbor)
        map_arr, raw_affine = steps.to_nifti_array(map_raw)
        seg_arr = steps.to_nifti_array(seg_raw)[0] > 0
        raw_arr, brain_arr = steps.to_nifti_array(raw)[0], steps.to_nifti_array(brain_raw)[0] > 0
        write_maps(out, raw_arr, brain_arr, map_arr, seg_arr, raw_affine, codes,
                   coverage["unscored_fraction"])
        write_json(out / "detect.json", {
            "scan": str(scan), "mask": None if mask is None else str(Path(mask).resolve()), "run": str(model.run),
            "method": model.payload["method"], "weights_step": model.payload["step"], "preprocess": settings.as_dict(),
            "registration": info.get("registration"), "qc": info.get("qc"), "threshold": model.threshold,
            "threshold_source": model.threshold_source, "lesion_voxels": int(seg_arr.sum()),
            "lesion_volume_ml": lesion_volume_ml(seg_arr, raw_affine), "max_score": float(np.nanmax(map_arr)),
            "scan_score": result.scan_score if np.isfinite(result.scan_score) else None,
            "space": "the raw scan's own voxel grid",
            "unscored_fraction": coverage["unscored_fraction"],
            "unscored_template_slices": coverage["unscored_slices"], "mddpm_version": __version__,
            "outputs": ["anomaly_map.nii.gz", "segmentation.nii.gz", "overlay.png"]})
        step("done")
    return out


def _inverse(matrix_lps) -> sitk.Transform | None:
    """The transform scan point -> template point from the recorded template -> scan matrix (None: identity)."""
    if matrix_lps is None:
        return None
    inverse = np.linalg.inv(np.asarray(matrix_lps, dtype=np.float64))
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(inverse[:3, :3].ravel().tolist())
    transform.SetTranslation(inverse[:3, 3].tolist())
    return transform
