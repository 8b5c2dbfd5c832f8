"""One case of ``mddpm preprocess``: a raw scan -> its image, mask and label on the output grid.

In the published order (the released ``preprocessing/prepare_*.sh``): read -> reorient -> resample to
isotropic voxels -> brain mask -> affine registration to a template -> crop to the brain -> N4 inside the
brain. The image is interpolated once (B-spline) from the raw grid straight onto the output grid (the
resampling and the registration are composed); masks and labels once, nearest neighbour. The 1 mm copy of
the scan is only used to estimate the registration (and as HD-BET's input).

A finished case leaves a done-marker ``OUT/.preprocess/<id>.json`` (settings hash, input fingerprints,
timings, QC): :func:`finished_marker` tells whether a rerun may skip it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mddpm._version import __version__
from mddpm.errors import MddpmError, first_line
from mddpm.io import read_json, write_json, write_nifti
from mddpm.preprocess import steps
from mddpm.preprocess.hdbet import HOW_TO_PROVIDE_MASKS, hdbet_mask
from mddpm.preprocess.settings import CaseInputs, PreprocessSettings
from mddpm.preprocess.template import load_template

STATE_DIR = ".preprocess"  # in the dataset folder: settings.json and one done-marker <id>.json per case
MIN_TEMPLATE_DICE = 0.6  # a registered brain mask overlapping the template's less than this is a failure
MAX_NEGATIVE_FRACTION = 0.01  # more negative voxels inside the brain than this: not a raw magnitude image


class _Timer:
    """Times named steps and turns their errors into one line naming the scan and the step."""

    def __init__(self, case: CaseInputs):
        self.case, self.seconds, self.cpu_seconds = case, {}, {}

    def __call__(self, name: str):
        self.name = name
        return self

    def __enter__(self):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, kind, err, tb):
        self.seconds[self.name] = round(time.perf_counter() - self.start, 3)
        self.cpu_seconds[self.name] = round(time.process_time() - self.cpu_start, 3)
        if err is None or not isinstance(err, Exception):
            return False
        if isinstance(err, MddpmError) and self.name == "read":
            raise err  # read errors already name their file
        detail = str(err) if isinstance(err, MddpmError) else first_line(err)
        raise MddpmError(f"{self.case.image}: {self.name}: {detail}") from None


def preprocess_case(case: CaseInputs, settings: PreprocessSettings) -> tuple[dict[str, sitk.Image | None], dict]:
    """Run the pipeline on one scan. Returns ``({"image", "mask", "label"}, info)``: float32
    image (0 outside the brain), uint8 {0, 1} mask, label with its original values (or None), all
    on the cropped output grid; ``info`` has per-step seconds and QC numbers."""
    step, info = _Timer(case), {}
    with step("read"):
        raw = steps.read_volume(case.image)
        mask_src = steps.read_volume(case.mask, label=True) if case.mask is not None else None
        label_src = steps.read_volume(case.label, label=True) if case.label is not None else None
    with step("reorient"):
        raw = steps.reorient(raw, settings.orientation)
    with step("resample"):
        grid_iso = steps.isotropic_grid(raw, settings.spacing_mm)
        iso = steps.resample(raw, grid_iso, interpolator=sitk.sitkBSpline)
    with step("brain_mask"):
        if settings.mask_source == "nonzero":
            mask_src = steps.binary_mask(raw)
        elif settings.mask_source == "hd-bet":
            mask_src = hdbet_mask(iso, settings.hdbet_device)
        elif mask_src is None:
            raise MddpmError(f"no brain mask for this scan: {HOW_TO_PROVIDE_MASKS}")
        mask_iso = steps.binary_mask(steps.resample(mask_src, grid_iso, interpolator=sitk.sitkNearestNeighbor))
        mask_raw = steps.resample(mask_src, steps.Grid.of(raw), interpolator=sitk.sitkNearestNeighbor)
        inside = sitk.GetArrayViewFromImage(raw)[sitk.GetArrayViewFromImage(mask_raw) > 0]  # not interpolated
        if inside.size == 0 or not sitk.GetArrayViewFromImage(mask_iso).any():
            source = case.mask or {"nonzero": "image > 0", "hd-bet": "HD-BET"}[settings.mask_source]
            raise MddpmError(f"brain mask ({source}) is empty on the scan's grid (wrong file or geometry?)")
        _check_intensities(inside)
    transform, grid_out = None, grid_iso
    if settings.register:
        with step("registration"):
            template = load_template(settings.template, settings.template_mask, settings.orientation,
                                     settings.spacing_mm)
            moving = sitk.Mask(sitk.Maximum(iso, 0.0), mask_iso)
            transform, info["registration"] = steps.register_affine(template.image, moving, settings.registration)
            info["registration"]["matrix_lps"] = steps.affine_matrix(transform).round(6).tolist()
            grid_out = template.grid
    with step("warp"):
        image = steps.resample(raw, grid_out, transform, interpolator=sitk.sitkBSpline, pixel_type=sitk.sitkFloat32)
        mask = steps.binary_mask(steps.resample(mask_src, grid_out, transform, interpolator=sitk.sitkNearestNeighbor))
        label = (steps.resample(label_src, grid_out, transform, interpolator=sitk.sitkNearestNeighbor)
                 if label_src is not None else None)
        image = sitk.Mask(sitk.Maximum(image, 0.0), mask)  # background 0; B-spline undershoot clipped
    if settings.register:
        with step("registration_check"):
            info["qc"] = {"template_dice": round(_dice(mask, template.mask), 4)}
            if info["qc"]["template_dice"] < MIN_TEMPLATE_DICE:
                raise MddpmError("registered brain overlaps the template's brain by Dice "
                                 f"{info['qc']['template_dice']:.2f} "
                                 f"(< {MIN_TEMPLATE_DICE}): registration failed or the mask is wrong")
    with step("crop"):
        start, size = steps.bounding_box(mask)
        image, mask = steps.crop(image, start, size), steps.crop(mask, start, size)
        label = steps.crop(label, start, size) if label is not None else None
    if settings.bias_correction:
        with step("n4"):
            image, info["n4"] = steps.n4_correct(image, mask, settings.n4)
            image = sitk.Mask(image, mask)
    info["seconds"], info["cpu_seconds"] = step.seconds, step.cpu_seconds  # wall; CPU of all threads
    info["shape"] = list(image.GetSize())
    voxel_ml = float(np.prod(mask.GetSpacing())) / 1000
    info["brain_volume_ml"] = round(float(sitk.GetArrayViewFromImage(mask).sum()) * voxel_ml, 1)
    return {"image": image, "mask": mask, "label": label}, info


def _check_intensities(inside: np.ndarray) -> None:
    """Refuse a scan (raw voxels inside the brain mask) that is constant there, or has more than
    1 % negative voxels there: not a raw magnitude image (N4 and the zero background need > 0)."""
    if float(inside.max()) <= float(inside.min()):
        raise MddpmError(f"the image is constant ({float(inside.min()):g}) inside the brain mask")
    negative = float((inside < 0).mean())
    if negative > MAX_NEGATIVE_FRACTION:
        raise MddpmError(f"{100 * negative:.0f} % of the voxels inside the brain are negative; raw magnitude images "
                         "are expected (not z-scored or shifted ones)")


def _dice(a: sitk.Image, b: sitk.Image) -> float:
    """Dice overlap of the voxels > 0 of two images on the same grid (0 when both are empty)."""
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return float(2 * (x & y).sum() / max(1, x.sum() + y.sum()))


def _label_array(label: sitk.Image) -> tuple[np.ndarray, np.ndarray, list]:
    """``(array, affine, values)`` of a label for NIfTI: uint8 when its values are integers in 0..255, float32
    when they are floats, else as read; ``values``: its first 32 distinct values."""
    arr, affine = steps.to_nifti_array(label)
    values = np.unique(arr)
    if arr.dtype.kind in "iu" and values.min() >= 0 and values.max() <= 255:
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    return arr, affine, [v.item() for v in values[:32]]


def output_paths(case_id: str, has_label: bool) -> dict[str, str | None]:
    """Paths relative to the dataset folder (nnU-Net-like naming)."""
    return {"image": f"images/{case_id}_0000.nii.gz", "mask": f"masks/{case_id}.nii.gz",
            "label": f"labels/{case_id}.nii.gz" if has_label else None}


def _fingerprint(path: Path | None) -> dict | None:
    """Absolute path, size (bytes) and modification time (ns) of an input file; None for no file."""
    if path is None:
        return None
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def input_fingerprint(case: CaseInputs) -> dict:
    """``{"image", "mask", "label"}`` -> the fingerprint of each input file of the case (None where absent)."""
    return {k: _fingerprint(getattr(case, k)) for k in ("image", "mask", "label")}


def run_case(case: CaseInputs, out: Path, settings: PreprocessSettings, digest: str) -> dict:
    """Preprocess one case and write its files and done-marker; returns the marker."""
    volumes, info = preprocess_case(case, settings)
    rel = output_paths(case.id, volumes["label"] is not None)
    image, affine = steps.to_nifti_array(volumes["image"])
    write_nifti(out / rel["image"], image.astype(np.float32), affine)
    mask, affine = steps.to_nifti_array(volumes["mask"])
    write_nifti(out / rel["mask"], mask.astype(np.uint8), affine)
    label_values = None
    if volumes["label"] is not None:
        label, affine, label_values = _label_array(volumes["label"])
        write_nifti(out / rel["label"], label, affine)
    marker = {"id": case.id, "settings_hash": digest, "inputs": input_fingerprint(case), "outputs": rel,
              "label_values": label_values, "mddpm": __version__, **info}
    write_json(out / STATE_DIR / f"{case.id}.json", marker)
    return marker


def finished_marker(case: CaseInputs, out: Path, digest: str) -> dict | None:
    """The case's marker when its outputs exist and were made with these settings and inputs."""
    path = out / STATE_DIR / f"{case.id}.json"
    if not path.is_file():
        return None
    try:
        marker = read_json(path)
    except MddpmError:
        return None
    if marker.get("settings_hash") != digest or marker.get("inputs") != input_fingerprint(case):
        return None
    outputs = [p for p in marker.get("outputs", {}).values() if p]
    if not outputs or not all((out / p).is_file() for p in outputs):
        return None
    return marker
