"""``mddpm preprocess``: raw scans -> a dataset folder (docs/preprocess.md).

Per case, in the published order (the released ``preprocessing/prepare_*.sh``): read -> reorient ->
resample to isotropic voxels -> brain mask -> affine registration to a template -> crop to the brain ->
N4 inside the brain. The image is interpolated once (B-spline) from the raw grid straight onto the
output grid (the resampling and the registration are composed); masks and labels once, nearest neighbour.
The 1 mm copy of the scan is only used to estimate the registration (and as HD-BET's input).

Dataset level: cases run in parallel processes; each finished case leaves a marker
``OUT/.preprocess/<id>.json`` (settings hash, input fingerprints, timings, QC), so a rerun with
the same settings skips it; failures are collected and reported, one line each.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mddpm._version import __version__
from mddpm.errors import MddpmError, first_line, one_line
from mddpm.folder_lock import LOCK_NAME, writes_folder
from mddpm.io import case_id_problem, read_json, write_json, write_nifti
from mddpm.parallel import parallel_map
from mddpm.preprocess import steps
from mddpm.preprocess.hdbet import HOW_TO_PROVIDE_MASKS, hdbet_command, hdbet_mask
from mddpm.preprocess.layout import Inputs, find_inputs, index_folder
from mddpm.preprocess.record import write_dataset_json
from mddpm.preprocess.settings import CaseInputs, PreprocessSettings, settings_hash
from mddpm.preprocess.template import load_template

STATE_DIR = ".preprocess"
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
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return float(2 * (x & y).sum() / max(1, x.sum() + y.sum()))


def _label_array(label: sitk.Image) -> tuple[np.ndarray, np.ndarray, list]:
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
    if path is None:
        return None
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def input_fingerprint(case: CaseInputs) -> dict:
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


def find_cases(input_dir: str | Path, pattern: str | None = None, masks_dir: str | Path | None = None,
               labels_dir: str | Path | None = None, role: str | None = None,
               inputs: Inputs | None = None) -> tuple[list[CaseInputs], list[str]]:
    """Scans in ``input_dir`` (matching ``pattern``, any supported format; a plain folder or the nnU-Net raw
    layout, :mod:`mddpm.preprocess.layout`), each with the mask and label of the same case id. Returns
    ``(cases, problems)``: a problem is a case that cannot run (its mask file missing, an id used twice),
    one line each naming the file. ``inputs``: :func:`find_inputs`'s answer when the caller has it."""
    inputs = inputs or find_inputs(input_dir, labels_dir, pattern, role)
    scans, labels = inputs.scans, inputs.labels
    masks = index_folder(Path(masks_dir), "masks") if masks_dir else None
    cases, problems = [], []
    for cid, paths in scans.items():
        problem = case_id_problem(cid)
        if problem:
            problems.append(f"{paths[0]}: case id {cid!r} {problem}")
            continue
        if len(paths) > 1:
            problems.append(f"{paths[0]}: case id {cid!r} is used by {len(paths)} files "
                            f"({', '.join(p.name for p in paths)})")
            continue
        mask = label = None
        if masks is not None:
            if cid not in masks:
                problems.append(f"{paths[0]}: no brain mask {Path(masks_dir) / (cid + '.nii.gz')} (or .nii/.nrrd/.mha)")
                continue
            if len(masks[cid]) > 1:
                problems.append(f"{masks[cid][0]}: several mask files for case {cid!r}")
                continue
            mask = masks[cid][0]
        if cid in labels:
            if len(labels[cid]) > 1:
                problems.append(f"{labels[cid][0]}: several label files for case {cid!r}")
                continue
            label = labels[cid][0]
        cases.append(CaseInputs(cid, paths[0], mask, label))
    return cases, problems


@dataclass
class PreprocessReport:
    out: Path
    processed: list[str] = field(default_factory=list)  # ids processed in this run
    skipped: list[str] = field(default_factory=list)  # ids already finished (resume)
    failures: list[str] = field(default_factory=list)  # one line each: "path: problem"
    markers: dict[str, dict] = field(default_factory=dict)  # id -> marker of every finished case
    dataset_json: Path | None = None


def _worker_init(threads: int) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _run_job(job: tuple) -> dict:
    return run_case(*job)


def _check_output_folder(out: Path, digest: str, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MddpmError(f"{out}: exists and is not a folder")
    if not out.exists() or not any(p.name != LOCK_NAME for p in out.iterdir()):  # our own lock is no output
        return
    record = out / STATE_DIR / "settings.json"
    if record.is_file():
        try:
            if read_json(record).get("settings_hash") == digest:
                return  # same settings: resume
        except MddpmError:
            pass
        what = "preprocessed data made with other settings"
    else:
        what = "files that mddpm preprocess did not write"
    if not force:
        raise MddpmError(f"{out}: already holds {what} (use --force to overwrite)")


@writes_folder("out", inputs=("input_dir", "masks_dir", "labels_dir"))
def preprocess_dataset(input_dir: str | Path, out: str | Path, settings: PreprocessSettings = PreprocessSettings(), *,
                       masks_dir: str | Path | None = None, labels_dir: str | Path | None = None,
                       pattern: str | None = None, role: str | None = None, split_name: str | None = None,
                       modality: str | None = None, workers: int = 1, force: bool = False,
                       progress: bool = True) -> PreprocessReport:
    """Preprocess every scan of ``input_dir`` into the dataset folder ``out``.

    Finished cases (marker with the same settings hash and input fingerprints, outputs present)
    are skipped unless ``force``; a folder holding other data is refused unless ``force``. One
    failing case does not stop the others: failures are returned in the report, and
    ``out/dataset.json`` lists every finished case. ``modality``: written to dataset.json (default: the
    nnU-Net channel's name, else "T2"). ``workers > 1`` uses spawned processes
    (a calling script needs the ``if __name__ == "__main__":`` guard).
    """
    out = Path(out)
    if role not in (None, "healthy", "anomalous"):
        raise MddpmError(f"role {role!r}: expected healthy or anomalous")
    if settings.mask_source == "files" and masks_dir is None:
        raise MddpmError(f"no brain masks: {HOW_TO_PROVIDE_MASKS}")
    if settings.mask_source == "hd-bet" and hdbet_command() is None:
        raise MddpmError(f"HD-BET is not installed ('hd-bet' is not on PATH): {HOW_TO_PROVIDE_MASKS}")
    inputs = find_inputs(input_dir, labels_dir, pattern, role, modality)
    if role == "anomalous" and not inputs.labels:
        raise MddpmError("--role anomalous needs --labels DIR (anomalous cases need a lesion label)")
    cases, problems = find_cases(input_dir, pattern, masks_dir if settings.mask_source == "files" else None,
                                 inputs=inputs)
    modality = modality or inputs.channel or "T2"
    if role == "anomalous":
        problems += [f"{c.image}: no label for this case in {labels_dir or 'the labels folder'} (role anomalous)"
                     for c in cases if c.label is None]
        cases = [c for c in cases if c.label is not None]
    digest, record = settings_hash(settings)
    _check_output_folder(out, digest, force)
    fresh = not out.exists()
    created = [] if fresh else [p for p in (STATE_DIR, "images", "masks", "labels") if not (out / p).exists()]
    write_json(out / STATE_DIR / "settings.json", {"settings_hash": digest, **record})

    report = PreprocessReport(out=out, failures=list(problems))
    todo = []
    for c in cases:
        marker = None if force else finished_marker(c, out, digest)
        if marker is None:
            todo.append(c)
        else:
            report.skipped.append(c.id)
            report.markers[c.id] = marker
    _run_cases(todo, out, settings, digest, workers, progress, report)
    finished = [c for c in cases if c.id in report.markers]
    if not finished:  # leave the output folder as it was: absent, or without what this run created
        for path in [out] if fresh else [out / p for p in created]:
            shutil.rmtree(path, ignore_errors=True)
        return report
    report.dataset_json = write_dataset_json(out, finished, report.markers, settings, record, role=role,
                                             split_name=split_name, modality=modality,
                                             sources={"input": input_dir, "masks": masks_dir, "labels": labels_dir,
                                                      "pattern": pattern})
    return report


def _run_cases(todo: list[CaseInputs], out: Path, settings: PreprocessSettings, digest: str, workers: int,
               progress: bool, report: PreprocessReport) -> None:
    def done(case: CaseInputs, marker: dict | None, error: BaseException | None) -> None:
        if error is None:
            report.processed.append(case.id)
            report.markers[case.id] = marker
        elif isinstance(error, MddpmError):
            report.failures.append(str(error))
        else:
            report.failures.append(f"{case.image}: {first_line(error)}")

    threads = max(1, (os.cpu_count() or 1) // max(1, min(workers, len(todo))))
    parallel_map(_run_job, [(c, out, settings, digest) for c in todo], lambda i, marker: done(todo[i], marker, None),
                 workers=workers, description="preprocess", progress=progress, initializer=_worker_init,
                 initargs=(threads,), label=lambda job: job[0].id,
                 on_error=lambda i, error: done(todo[i], None, error))  # one bad case must not stop the others


def print_report(report: PreprocessReport, prefix: str = "mddpm preprocess: error: ") -> None:
    """Failures one line each on stderr (``prefix`` + "file: problem"), then a summary on stdout."""
    for line in report.failures:
        print(prefix + one_line(line), file=sys.stderr)
    total = len(report.processed) + len(report.skipped)
    secs = [m["seconds"] for cid, m in report.markers.items() if cid in report.processed]
    mean = f", {np.mean([sum(s.values()) for s in secs]):.1f} s per case" if secs else ""
    print(f"{report.out}: {total} case(s) ready ({len(report.processed)} processed{mean}, "
          f"{len(report.skipped)} already done), {len(report.failures)} failed"
          + (f"; wrote {report.dataset_json}" if report.dataset_json else "; no dataset.json (no case finished)"))
