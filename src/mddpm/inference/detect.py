"""``detect``: one new scan + a trained run -> anomaly map and lesion segmentation in the scan's geometry.

The scan must already be in the template space of the run's training data (same orientation and
resolution as the dataset it was trained on; ``mddpm preprocess`` does that for raw scans; another
orientation or voxel size is refused) and comes with its brain mask. Steps: read and check the scan and
mask; bring them onto the run's prepared grid
(:func:`mddpm.data.prepare.prepare_volume`); score (the run's method and defaults, one generator seeded
from ``train.seed``); post-process as published (eroded-mask multiply, 3-D median); threshold; remove
small components; resample map (linear) and segmentation (nearest) back to the scan's own voxel grid
with its affine.

A folder of scans (with a folder of masks) is scored with the model loaded once, each scan's outputs in
``out/<case id>/``. Outputs in ``out``: ``anomaly_map.nii.gz`` (float32, post-processed score), ``segmentation.nii.gz``
(uint8 0/1), ``overlay.png`` (axial slices: scan, map, segmentation outline) and ``detect.json``.
The threshold is ``RUN/threshold.json`` (written by ``mddpm evaluate``) unless given as a number or
another ``threshold.json``; that file's ``postprocess`` settings are used too.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mddpm import __version__
from mddpm.data.dataset import load_dataset
from mddpm.data.prepare import get_grid, prepare_volume, to_original_space, voxel_sizes
from mddpm.errors import ConfigError, InputError, MddpmError, NotFoundError
from mddpm.evaluation.scoring import Scoring
from mddpm.inference.predict import PRECISIONS, resolve_device, score_volume
from mddpm.io import (
    atomic_write,
    check_case_id,
    check_output_folder,
    open_nifti,
    read_json,
    read_nifti,
    write_json,
    write_nifti,
)
from mddpm.preprocess.layout import CHANNEL_SUFFIX, index_folder
from mddpm.preprocess.steps import SUPPORTED_SUFFIXES
from mddpm.progress import progress_bar
from mddpm.run_folder import RunFolder
from mddpm.seeds import derive_seed
from mddpm.weights import build_from_weights

SPACING_TOLERANCE = 0.2  # relative difference of a voxel size from the training scans' that is refused
OUTPUT_FILES = ("anomaly_map.nii.gz", "segmentation.nii.gz", "overlay.png", "detect.json")
NO_MASK = "no brain mask given (use --mask; `mddpm preprocess` can make one)"


def resolve_threshold(run: Path, threshold: float | str | os.PathLike | None, required: bool = True
                      ) -> tuple[float | None, str | None, dict]:
    """``(threshold, where it came from, postprocess settings)`` from a number, a ``threshold.json``
    path, or (``None``) ``RUN/threshold.json``; without that file and not ``required``: ``(None, None, {})``
    (maps only, with the published post-processing)."""
    number = threshold if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) else None
    if isinstance(threshold, str):
        try:
            number = float(threshold)
        except ValueError:
            pass
    if number is not None:
        if not np.isfinite(number):
            raise ConfigError(f"--threshold {threshold}: must be a finite number")
        return float(number), "--threshold", {}
    path = Path(threshold) if threshold is not None else RunFolder(run).threshold
    if threshold is None and not path.is_file():
        if not required:
            return None, None, {}
        raise NotFoundError(f"{path}: no threshold for this run (run `mddpm evaluate` and copy its threshold.json "
                         "there, or pass --threshold VALUE or --threshold PATH/threshold.json)")
    if not path.is_file():
        raise NotFoundError(f"{path}: threshold file not found")
    meta = read_json(path)
    value = meta.get("threshold")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise InputError(f"{path}: no finite numeric \"threshold\"")
    postprocess = meta.get("postprocess") or {}
    if not _valid_postprocess(postprocess):
        raise InputError(f"{path}: malformed \"postprocess\" settings (expected the object `mddpm evaluate` writes)")
    return float(value), str(path), postprocess


def _valid_postprocess(settings) -> bool:
    """The post-processing part of a threshold.json: objects where objects go, counts as integers >= 0."""
    if not isinstance(settings, dict):
        return False
    median, components = settings.get("median_filter", {}), settings.get("components", {})
    if not isinstance(median, dict) or not isinstance(components, dict):
        return False

    def count(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    erosion = settings.get("erosion_iterations")  # None: the published width-derived default
    return (erosion is None or count(erosion)) and count(median.get("kernel", 0)) and \
        count(components.get("removed_if_voxels_at_most", 0))


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
    if not np.isin(brain, (0, 1)).all():
        raise InputError(f"{mask}: brain mask is not binary (values {np.unique(brain)[:6].tolist()}); "
                         "threshold it first (e.g. > 0.5)")
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
    postprocess: dict
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


def score_scan(model: LoadedRun, image: np.ndarray, brain: np.ndarray, affine: np.ndarray, where: str = "scan"
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Score one scan ([X, Y, Z] image, bool brain mask, affine in mm, in the run's template space) and return
    ``(anomaly map [X, Y, Z] float32, segmentation [X, Y, Z] bool)`` on the scan's own voxel grid: the
    post-processed score (linear back-resampling) and its thresholded, cleaned mask (nearest, inside the brain;
    None when the run was loaded without a threshold)."""
    cfg = model.config
    try:
        vol = prepare_volume(image, brain.astype(np.uint8), affine, get_grid(cfg["data"]["grid"]))
    except MddpmError as e:  # the scan does not fit the grid (empty brain, constant image)
        raise InputError(f"{where}: {e}") from None
    x = torch.from_numpy(vol.image).unsqueeze(1).to(model.device)  # [Z, 1, H, W]
    m = torch.from_numpy(vol.mask.astype(np.float32)).unsqueeze(1).to(model.device)
    generator = torch.Generator(device=model.device).manual_seed(derive_seed(cfg["train"]["seed"]))
    amap, _ = score_volume(model.method, x, m, generator, precision=model.precision)
    scoring = Scoring.from_stored(model.postprocess)
    score = scoring.postprocess(amap[:, 0], m[:, 0])
    map_scan = to_original_space(score.cpu().numpy(), vol.affine, image.shape, affine, order=1)
    if model.threshold is None:
        return map_scan, None
    segmentation = scoring.segment(score, model.threshold).cpu().numpy()
    seg_scan = to_original_space(segmentation.astype(np.float32), vol.affine, image.shape, affine, order=0) > 0.5
    return map_scan, seg_scan & brain


def lesion_volume_ml(segmentation: np.ndarray, affine: np.ndarray) -> float:
    """Volume of a boolean segmentation in mL (voxel count times the voxel volume of ``affine``)."""
    return float(segmentation.sum()) * float(np.prod(voxel_sizes(affine))) / 1000.0


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
        ds = load_dataset(read_json(run / "config.json")["dataset"])
        path = next(iter(ds.cases.values())).image
        return np.asarray(open_nifti(path).affine, dtype=np.float64), path
    except (MddpmError, KeyError, TypeError, StopIteration, OSError):
        print(f"mddpm detect: note: {scan}: orientation and voxel size not checked (the training data of "
              f"{run} cannot be read)", file=sys.stderr)
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


def _mm(sizes: np.ndarray) -> str:
    return "x".join(f"{float(s):.3g}" for s in sizes)


def check_pair_header(scan: Path, mask: Path) -> None:
    """Refuse, from the headers alone, a scan or mask that cannot be read or a mask on another grid."""
    image, brain = open_nifti(scan), open_nifti(mask)
    if tuple(brain.shape[:3]) != tuple(image.shape[:3]) or not np.allclose(brain.affine, image.affine, atol=1e-3):
        raise InputError(f"{mask}: shape or affine differs from the scan {scan} (mask and scan must share one grid)")


def write_maps(out: Path, image: np.ndarray, brain: np.ndarray, anomaly_map: np.ndarray, segmentation: np.ndarray,
               affine: np.ndarray) -> None:
    """Create ``out`` and write the anomaly map, the segmentation (arrays [X, Y, Z] on the grid of ``affine``,
    mm) and the overlay picture."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MddpmError(f"{out}: cannot create the output folder ({e.strerror})") from None
    write_nifti(out / "anomaly_map.nii.gz", anomaly_map.astype(np.float32), affine)
    write_nifti(out / "segmentation.nii.gz", segmentation.astype(np.uint8), affine)
    save_overlay(out / "overlay.png", image, brain, anomaly_map, segmentation)


def detect_one(model: LoadedRun, scan: Path, mask: Path, out: Path) -> None:
    """Score ``scan`` and write the four outputs of the module docstring into ``out``."""
    image, brain, affine = read_scan(scan, mask)
    map_scan, seg_scan = score_scan(model, image, brain, affine, str(scan))
    write_maps(out, image, brain, map_scan, seg_scan, affine)
    scoring = Scoring.from_stored(model.postprocess)
    write_json(out / "detect.json", {
        "scan": str(scan), "mask": str(mask), "run": str(model.run), "method": model.payload["method"],
        "weights_step": model.payload["step"], "grid": model.config["data"]["grid"],
        "threshold": model.threshold, "threshold_source": model.threshold_source,
        "postprocess": {"erosion_iterations": scoring.erosion_iterations, "median_kernel": scoring.median_kernel,
                        "components_removed_if_at_most": scoring.max_component},
        "lesion_voxels": int(seg_scan.sum()), "lesion_volume_ml": lesion_volume_ml(seg_scan, affine),
        "max_score": float(map_scan.max()), "device": str(model.device), "precision": model.precision,
        "outputs": ["anomaly_map.nii.gz", "segmentation.nii.gz", "overlay.png"], "mddpm_version": __version__,
    })


def overlay_slices(brain: np.ndarray, segmentation: np.ndarray, count: int = 5) -> list[int]:
    """Axial slice indices to show: those with the most segmented voxels (in slice order), or, without
    a segmentation, ``count`` slices evenly spread over the brain's extent."""
    per_slice = segmentation.sum(axis=(0, 1))
    if per_slice.any():
        best = np.argsort(per_slice, kind="stable")[::-1][:count]
        return sorted(int(k) for k in best if per_slice[k] > 0)
    zs = np.flatnonzero(brain.any(axis=(0, 1)))
    return sorted({int(k) for k in np.linspace(zs[0], zs[-1], count + 2)[1:-1].round()})


def save_overlay(path: Path, image: np.ndarray, brain: np.ndarray, score: np.ndarray, segmentation: np.ndarray) -> None:
    """PNG: per chosen axial slice, the scan in grey, the anomaly map in colour on top (colour bar on the right),
    the segmentation outline."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    slices = overlay_slices(brain, segmentation)
    vmax = float(score.max()) or 1.0
    fig = Figure(figsize=(2.6 * len(slices), 3.0))
    axes = fig.subplots(1, len(slices), squeeze=False)
    for ax, k in zip(axes[0], slices):
        ax.imshow(image[:, :, k].T, cmap="gray", origin="lower")
        shown = ax.imshow(np.ma.masked_less_equal(score[:, :, k].T, 0), cmap="hot", alpha=0.6, vmin=0, vmax=vmax,
                          origin="lower")
        if segmentation[:, :, k].any():
            ax.contour(segmentation[:, :, k].T.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(f"z = {k}", fontsize=8)
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.93, bottom=0.01, top=0.9, wspace=0.02)
    bar = fig.colorbar(shown, cax=fig.add_axes((0.945, 0.08, 0.012, 0.78)))
    bar.ax.tick_params(labelsize=7)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
