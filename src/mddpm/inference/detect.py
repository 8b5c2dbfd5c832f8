"""``detect``: one new scan + a trained run -> anomaly map and lesion segmentation in the scan's geometry.

The scan must already be in the template space of the run's training data (same orientation and
resolution as the dataset it was trained on; ``mddpm preprocess`` does that for raw scans; another
orientation or voxel size is refused) and comes with its brain mask. Steps: read and check the scan and
mask; bring them onto the run's prepared grid centred on the brain mask's bounding box, so that the field of
view does not matter (:func:`mddpm.data.volume.prepare_volume`; brain the grid leaves out is NaN in the map,
reported in ``detect.json`` and warned about above 5 %); score (the run's method and defaults, one generator
seeded from ``train.seed`` and the scan's case id, as ``predict`` seeds the same case); post-process as
published (eroded-mask multiply, 3-D median); threshold; remove small components; resample map (linear) and
segmentation (nearest) back to the scan's own voxel grid with its affine.

A folder of scans (with a folder of masks) is scored with the model loaded once, each scan's outputs in
``out/<case id>/``. Outputs in ``out``: ``anomaly_map.nii.gz`` (float32, post-processed score), ``segmentation.nii.gz``
(uint8 0/1), ``overlay.png`` (axial slices: scan, map, segmentation outline) and ``detect.json``.
The threshold is ``RUN/threshold.json`` (written by ``mddpm evaluate``) unless given as a number or
another ``threshold.json``; that file's ``postprocess`` settings are used too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import torch

from mddpm._version import __version__
from mddpm.checks import check_binary_mask
from mddpm.data.dataset import load_dataset
from mddpm.data.grids import get_grid
from mddpm.data.volume import prepare_volume, to_original_space, voxel_sizes
from mddpm.device import resolve_device
from mddpm.errors import ConfigError, InputError, MddpmError, NotFoundError
from mddpm.evaluation.postprocess import PostprocessSettings
from mddpm.evaluation.threshold_file import read_threshold_file
from mddpm.folder_lock import writes_folder
from mddpm.inference.predict import PRECISIONS, case_generator, score_volume
from mddpm.io import (
    all_or_nothing,
    check_case_id,
    check_output_folder,
    open_nifti,
    read_json,
    read_nifti,
    write_json,
    write_nifti,
    xform_codes,
)
from mddpm.messages import note, warn
from mddpm.preprocess.layout import CHANNEL_SUFFIX, index_folder
from mddpm.preprocess.steps import SUPPORTED_SUFFIXES
from mddpm.progress import progress_bar
from mddpm.run_folder import RunFolder
from mddpm.viz.overlay import save_overlay
from mddpm.weights import build_from_weights

SPACING_TOLERANCE = 0.2  # relative difference of a voxel size from the training scans' that is refused
OUTPUT_FILES = ("anomaly_map.nii.gz", "segmentation.nii.gz", "overlay.png", "detect.json")
NO_MASK = "no brain mask given (use --mask; `mddpm preprocess` can make one)"
WARN_UNSCORED = 0.05  # unscored brain fraction above which detect warns on stderr
MAX_UNSCORED = 0.5  # ... and above which the scan is refused: the brain does not fit the model grid
SCAN_SCORE_TOP = 0.01  # scan_score: mean of this top share of the anomaly map's scored brain voxels


def resolve_threshold(run: Path, threshold: float | str | os.PathLike | None, required: bool = True
                      ) -> tuple[float | None, str | None, PostprocessSettings]:
    """``(threshold, where it came from, postprocess settings)`` from a number, a ``threshold.json``
    path, or (``None``) ``RUN/threshold.json``; without that file and not ``required``: ``(None, None,
    published settings)`` (maps only, with the published post-processing)."""
    number = threshold if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) else None
    if isinstance(threshold, str):
        try:
            number = float(threshold)
        except ValueError:
            pass
    if number is not None:
        if not np.isfinite(number):
            raise ConfigError(f"--threshold {threshold}: must be a finite number")
        return float(number), "--threshold", PostprocessSettings()
    path = Path(threshold) if threshold is not None else RunFolder(run).threshold
    if threshold is None and not path.is_file():
        if not required:
            return None, None, PostprocessSettings()
        raise NotFoundError(f"{path}: no threshold for this run (run `mddpm evaluate --publish` on its maps, or "
                            "pass --threshold VALUE or --threshold PATH/threshold.json)")
    value, postprocess = read_threshold_file(path)
    return value, str(path), postprocess


def read_scan(scan: str | os.PathLike, mask: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read and check a scan and its brain mask: ``(image [X, Y, Z], mask [X, Y, Z] bool, affine)``."""
    if mask is None:
        raise MddpmError(NO_MASK)
    image, affine = read_nifti(scan)  # 3-D and finite, or a one-line error naming the file
    brain, mask_affine = read_nifti(mask)
    if brain.shape != image.shape:
        raise InputError(f"{mask}: shape {brain.shape} differs from the scan {scan} {image.shape}")
    if not np.allclose(mask_affine, affine, atol=1e-3):
        raise InputError(f"{mask}: affine differs from the scan {scan} (mask and scan must share one voxel grid)")
    check_binary_mask(brain, str(mask))
    brain = brain > 0
    if not brain.any():
        raise InputError(f"{mask}: brain mask is empty")
    return image, brain, affine


@dataclass
class LoadedRun:
    """A trained run ready to score scans: the method (eval mode, on ``device``), its weights file's payload,
    the threshold (value, where it came from; None for maps only) and the post-processing constants that go
    with it."""

    run: Path
    method: torch.nn.Module
    payload: dict
    threshold: float | None
    threshold_source: str | None
    postprocess: PostprocessSettings
    device: torch.device
    precision: str

    @property
    def config(self) -> dict:
        return self.payload["config"]


def load_run(run: str | os.PathLike, threshold: float | str | os.PathLike | None = None, device: str = "auto",
             precision: str = "32", weights: str = "best", require_threshold: bool = True) -> LoadedRun:
    """Load ``RUN/<weights>.pt`` and its threshold (:func:`resolve_threshold`) onto ``device``."""
    run = Path(run).resolve()
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    method, payload = build_from_weights(RunFolder(run).weights(weights))
    value, source, postprocess = resolve_threshold(run, threshold, require_threshold)
    device = resolve_device(device)
    return LoadedRun(run, method.to(device), payload, value, source, postprocess, device, precision)


class ScanScore(NamedTuple):
    """What :func:`score_scan` returns, on the scan's own voxel grid."""

    anomaly_map: np.ndarray  # [X, Y, Z] float32; NaN on brain voxels the model grid leaves out
    segmentation: np.ndarray | None  # [X, Y, Z] bool; None without a threshold
    coverage: dict  # unscored_fraction (of the brain voxels) and unscored_slices ([first, last] axial ranges)
    reconstruction: np.ndarray  # [X, Y, Z] float32, the model's reconstruction (prepared intensity scale, linear
    #                             back-resampling); NaN wherever the model grid does not reach
    scan_score: float  # scan-level anomaly score (:func:`scan_score_of`)


def score_scan(model: LoadedRun, image: np.ndarray, brain: np.ndarray, affine: np.ndarray, where: str = "scan",
               case_id: str | None = None) -> ScanScore:
    """Score one scan ([X, Y, Z] image, bool brain mask, affine in mm, in the run's template space) on the model
    grid centred on the brain mask's bounding box (the same brain voxels are scored whatever the field of view),
    and return the post-processed score (linear back-resampling; NaN on brain the grid leaves out) and its
    thresholded, cleaned mask (nearest, inside the brain) on the scan's own voxel grid, with the coverage.
    The noise is seeded from ``case_id``, default :func:`scan_case_id` of ``where`` (the scan's path).
    More than :data:`WARN_UNSCORED` of the brain unscored is warned about, more than :data:`MAX_UNSCORED` refused."""
    cfg = model.config
    grid = get_grid(cfg["data"]["grid"])
    try:
        vol = prepare_volume(image, brain.astype(np.uint8), affine, grid, around_brain=True)
    except MddpmError as e:  # the scan does not fit the grid (empty brain, constant image)
        raise InputError(f"{where}: {e}") from None
    covered = to_original_space(np.ones_like(vol.image), vol.affine, image.shape, affine, order=0) > 0.5
    coverage = coverage_of(brain, covered)
    fraction = coverage["unscored_fraction"]
    if fraction > MAX_UNSCORED:
        raise InputError(f"{where}: the brain does not fit the model grid ({_mm(grid.crop_mm)} mm): "
                         f"{100 * fraction:.0f} % of it would be left unscored; crop or resample the scan like the "
                         "training data (`mddpm preprocess` does)")
    if fraction > WARN_UNSCORED:
        warn(f"mddpm: warning: {where}: {100 * fraction:.1f} % of the brain lies outside the model grid and is not "
             f"scored (axial slices {format_ranges(coverage['unscored_slices'])}; NaN in the map)")
    x = torch.from_numpy(vol.image).unsqueeze(1).to(model.device)  # [Z, 1, H, W]
    m = torch.from_numpy(vol.mask.astype(np.float32)).unsqueeze(1).to(model.device)
    case = case_id or scan_case_id(where)  # the noise is seeded as predict seeds this case
    generator = case_generator(cfg["train"]["seed"], case, model.device)
    amap, recon = score_volume(model.method, x, m, generator, precision=model.precision)
    score = model.postprocess.postprocess(amap[:, 0], m[:, 0])
    map_scan = to_original_space(score.cpu().numpy(), vol.affine, image.shape, affine, order=1)
    map_scan[brain & ~covered] = np.nan
    recon_scan = to_original_space(recon[:, 0].float().cpu().numpy(), vol.affine, image.shape, affine,
                                   order=1).astype(np.float32)
    recon_scan[~covered] = np.nan
    total = scan_score_of(map_scan, brain)
    if model.threshold is None:
        return ScanScore(map_scan, None, coverage, recon_scan, total)
    segmentation = model.postprocess.segment(score, model.threshold).cpu().numpy()
    seg_scan = to_original_space(segmentation.astype(np.float32), vol.affine, image.shape, affine, order=0) > 0.5
    return ScanScore(map_scan, seg_scan & brain, coverage, recon_scan, total)


def scan_case_id(scan: str) -> str:
    """The case id of a scan's path, as a dataset names it: the file name without ``.nii[.gz]`` and without a
    channel suffix (``images/case008_0000.nii.gz`` -> ``case008``); its noise is seeded from it, as predict
    seeds that case's."""
    name = re.sub(r"\.nii(\.gz)?$", "", Path(scan).name)
    channel = CHANNEL_SUFFIX.match(name)
    return channel["case"] if channel else name


def scan_score_of(anomaly_map: np.ndarray, brain: np.ndarray, top: float = SCAN_SCORE_TOP) -> float:
    """Scan-level anomaly score: the mean of the highest ``top`` share (1 %; at least one voxel) of the
    (post-processed) ``anomaly_map`` over the scored brain voxels (``brain`` and not NaN); NaN when none is
    scored. Recomputable from ``anomaly_map.nii.gz`` and the brain mask."""
    values = anomaly_map[brain]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    k = max(1, int(np.ceil(top * values.size)))
    return float(np.mean(np.partition(values, values.size - k)[values.size - k:], dtype=np.float64))


def coverage_of(brain: np.ndarray, covered: np.ndarray) -> dict:
    """``unscored_fraction``: the share of the ``brain`` voxels outside ``covered`` (the model grid);
    ``unscored_slices``: the axial slices (last array axis) holding any, as ``[first, last]`` ranges."""
    unscored = brain & ~covered
    slices = np.flatnonzero(unscored.any(axis=(0, 1)))
    ranges = []
    for k in slices.tolist():
        if ranges and ranges[-1][1] == k - 1:
            ranges[-1][1] = k
        else:
            ranges.append([k, k])
    return {"unscored_fraction": round(float(unscored.sum() / max(int(brain.sum()), 1)), 6),
            "unscored_slices": ranges}


def format_ranges(ranges: list[list[int]]) -> str:
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in ranges) or "none"


def lesion_volume_ml(segmentation: np.ndarray, affine: np.ndarray) -> float:
    """Volume of a boolean segmentation in mL (voxel count times the voxel volume of ``affine``)."""
    return float(segmentation.sum()) * float(np.prod(voxel_sizes(affine))) / 1000.0


@writes_folder("out", inputs=("scan", "run", "mask"))
def detect(scan: str | os.PathLike, run: str | os.PathLike, out: str | os.PathLike,
           mask: str | os.PathLike | None = None, threshold: float | str | os.PathLike | None = None,
           force: bool = False, device: str = "auto", precision: str = "32", progress: bool = True) -> Path:
    """Detect anomalies in a scan, or in every scan of a folder, with a trained run (see module docstring);
    returns ``out``. A folder of scans takes a folder of masks (:func:`pair_scans`), writes ``out/<case>/``
    per scan and loads the model once. ``progress``: a bar on a terminal."""
    scan, out = Path(scan).resolve(), Path(out).resolve()
    pairs = pair_scans(scan, mask)
    folder = scan.is_dir()
    reference = training_reference(Path(run).resolve(), scan)
    for scan_path, mask_path in pairs.values():  # headers first: a bad file leaves no partial output folder
        if folder:
            check_pair_header(scan_path, mask_path)
        check_geometry(scan_path, open_nifti(scan_path).affine, reference)
    model = load_run(run, threshold, device, precision)
    check_output_folder(out, force, [f"*/{name}" for name in OUTPUT_FILES] if folder else OUTPUT_FILES)
    with progress_bar("detect", len(pairs), progress, label="scoring") as advance:
        for cid, (scan_path, mask_path) in pairs.items():
            detect_one(model, scan_path, mask_path, out / cid if folder else out)
            advance(cid)
    return out


def pair_scans(scan: Path, mask: str | os.PathLike | None) -> dict[str, tuple[Path, Path]]:
    """``{case id: (scan, mask)}``: one scan and its mask, or every scan of a folder with the mask of the same
    case id in the mask folder (a scan ``<case>_0000`` may take the mask ``<case>``, as ``mddpm preprocess``
    names them); a scan without a mask is refused."""
    if mask is None:
        raise MddpmError(NO_MASK)
    mask = Path(mask).resolve()
    if not scan.is_dir():
        return {scan.name: (scan, mask)}
    if not mask.is_dir():
        raise MddpmError(f"{mask}: SCAN is a folder, so --mask must be a folder of masks named <case id>.nii.gz")
    scans, masks = index_folder(scan, "scans"), index_folder(mask, "masks")
    if not scans:
        raise MddpmError(f"{scan}: no scans found ({', '.join('*' + s for s in SUPPORTED_SUFFIXES)})")
    pairs = {}
    for cid, paths in scans.items():
        suffix = CHANNEL_SUFFIX.match(cid)
        key = cid if cid in masks or not suffix else suffix["case"]
        if key not in masks:
            raise NotFoundError(f"{paths[0]}: no brain mask {mask / (key + '.nii.gz')}")
        if len(paths) > 1 or len(masks[key]) > 1:
            raise MddpmError(f"{paths[0]}: case id {key!r} names several scans or masks")
        check_case_id(key, paths[0])
        pairs[key] = (paths[0], masks[key][0])
    return pairs


def training_reference(run: Path, scan: Path) -> tuple[np.ndarray, Path] | None:
    """``(affine, path)`` of the first training case of the dataset in ``RUN/config.json`` (its header only),
    or None, with a note on stderr, when that cannot be read (a run moved without its data)."""
    try:
        ds = load_dataset(read_json(RunFolder(run).config)["dataset"])
        path = next(iter(ds.cases.values())).image
        return np.asarray(open_nifti(path).affine, dtype=np.float64), path
    except (MddpmError, KeyError, TypeError, StopIteration, OSError):
        note(f"mddpm detect: note: {scan}: orientation and voxel size not checked (the training data of "
             f"{run} cannot be read)")
        return None


def check_geometry(scan: Path, affine: np.ndarray, reference: tuple[np.ndarray, Path] | None) -> None:
    """Refuse a scan whose voxel axes point elsewhere than the training scans' (``reference``), or whose voxel
    size differs from theirs by more than :data:`SPACING_TOLERANCE`: a permuted scan, or a header that lies
    about spacing, would be segmented wrongly without a word."""
    if reference is None:
        return
    expected_affine, path = reference
    axes, expected_axes = "".join(nib.aff2axcodes(affine)), "".join(nib.aff2axcodes(expected_affine))
    if axes != expected_axes:
        raise InputError(f"{scan}: voxel axes point {axes}, the run's training scans {expected_axes} (e.g. "
                         f"{path}); reorient the scan like the training data (`mddpm preprocess` does)")
    spacing, expected = voxel_sizes(affine), voxel_sizes(expected_affine)
    if np.any(np.abs(spacing / expected - 1) > SPACING_TOLERANCE):
        raise InputError(f"{scan}: voxel size {_mm(spacing)} mm, the run's training scans {_mm(expected)} mm (e.g. "
                         f"{path}); resample the scan like the training data (`mddpm preprocess` does)")


def _json_float(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _mm(sizes: np.ndarray) -> str:
    return "x".join(f"{float(s):.3g}" for s in sizes)


def check_pair_header(scan: Path, mask: Path) -> None:
    """Refuse, from the headers alone, a scan or mask that cannot be read or a mask on another grid."""
    image, brain = open_nifti(scan), open_nifti(mask)
    if tuple(brain.shape[:3]) != tuple(image.shape[:3]) or not np.allclose(brain.affine, image.affine, atol=1e-3):
        raise InputError(f"{mask}: shape or affine differs from the scan {scan} (mask and scan must share one grid)")


def write_maps(out: Path, image: np.ndarray, brain: np.ndarray, anomaly_map: np.ndarray, segmentation: np.ndarray,
               affine: np.ndarray, codes: tuple[int, int] | None = None, unscored_fraction: float = 0.0) -> None:
    """Create ``out`` and write the anomaly map, the segmentation (arrays [X, Y, Z] on the grid of ``affine``,
    mm, with the scan's qform/sform ``codes``) and the overlay picture."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MddpmError(f"{out}: cannot create the output folder ({e.strerror})") from None
    write_nifti(out / "anomaly_map.nii.gz", anomaly_map.astype(np.float32), affine, codes)
    write_nifti(out / "segmentation.nii.gz", segmentation.astype(np.uint8), affine, codes)
    save_overlay(out / "overlay.png", image, brain, anomaly_map, segmentation, affine, unscored_fraction)


def detect_one(model: LoadedRun, scan: Path, mask: Path, out: Path) -> None:
    """Score ``scan`` and write the four outputs of the module docstring into ``out``."""
    image, brain, affine = read_scan(scan, mask)
    result = score_scan(model, image, brain, affine, str(scan))
    map_scan, seg_scan, coverage = result.anomaly_map, result.segmentation, result.coverage
    with all_or_nothing(out):  # the four outputs, or none of them
        write_maps(out, image, brain, map_scan, seg_scan, affine, xform_codes(scan), coverage["unscored_fraction"])
        write_json(out / "detect.json", {
            "scan": str(scan), "mask": str(mask), "run": str(model.run), "method": model.payload["method"],
            "weights_step": model.payload["step"], "grid": model.config["data"]["grid"],
            "threshold": model.threshold, "threshold_source": model.threshold_source,
            "postprocess": model.postprocess.to_json(),
            "lesion_voxels": int(seg_scan.sum()), "lesion_volume_ml": lesion_volume_ml(seg_scan, affine),
            "max_score": float(np.nanmax(map_scan)), "scan_score": _json_float(result.scan_score), **coverage,
            "device": str(model.device), "precision": model.precision,
            "outputs": ["anomaly_map.nii.gz", "segmentation.nii.gz", "overlay.png"], "mddpm_version": __version__,
        })
