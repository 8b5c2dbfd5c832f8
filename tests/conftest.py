"""Shared fixtures of the test folders: tiny phantom datasets (:mod:`mddpm.data.synth.phantom`), run folders
with seeded weights, the `intensity` run that `detect` and the API score with, the 3 mm template world of the
preprocessing tests (raw scans made from the MNI152 template), and the browser.

Test modules never import each other: a fixture or helper shared by the folders is here, one shared by the modules
of one folder is in that folder's ``conftest.py``, one used by a single module stays in it. Plain helper modules
(``benchmark_fakes``, ``fake_pddpm``, ``toy_methods``, ``benchmark_golden``) sit next to this file and are imported
by name (pytest puts this folder on sys.path); tests/reliability is a package with its own helpers.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mddpm.data.synth.phantom import make_phantom_dataset
from mddpm.io import write_json
from mddpm.preprocess import PreprocessSettings, steps


@pytest.fixture
def phantom_dataset(tmp_path) -> Path:
    return make_phantom_dataset(tmp_path / "phantom")


# --- run folders ------------------------------------------------------------------------------------------------


def _make_run(folder: Path, method: str, overrides=()) -> Path:
    """A run folder with freshly initialised (seeded) weights, as `mddpm train` would export them."""
    import torch  # here, not above: a test that needs no run folder does not wait for torch

    from mddpm.config import build_method, resolve_config
    from mddpm.weights import save_weights

    cfg = resolve_config(method, "demo", list(overrides))
    torch.manual_seed(0)
    module = build_method(cfg)
    for name in ("best.pt", "last.pt"):
        save_weights(folder / name, method, cfg, module.state_dict(), 0, None)
    return folder


@pytest.fixture(scope="session")
def make_run():
    """``make_run(folder, method, overrides=())``: a run folder with seeded weights (no training); returns it."""
    return _make_run


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory, make_run):
    """The phantom dataset and an `intensity` run (no training needed) with a threshold.json."""
    root = tmp_path_factory.mktemp("detect")
    dataset = make_phantom_dataset(root / "phantom")
    run = make_run(root / "run", "intensity")
    write_json(run / "threshold.json", {"threshold": 0.6, "rule": "bisection", "val_split": "lesion_val",
                                        "postprocess": {"erosion_iterations": 1, "median_filter": {"kernel": 3},
                                                        "components": {"removed_if_voxels_at_most": 7}}})
    return dataset, run


def _phantom_case_paths(dataset: Path, case_id: str = "case006") -> tuple[Path, Path, Path]:
    return (dataset / "images" / f"{case_id}_0000.nii.gz", dataset / "masks" / f"{case_id}.nii.gz",
            dataset / "labels" / f"{case_id}.nii.gz")


@pytest.fixture(scope="session")
def phantom_case_paths():
    """``phantom_case_paths(dataset, case_id="case006")``: that case's (scan, brain mask, label) files."""
    return _phantom_case_paths


# --- the 3 mm template world of the preprocessing tests ---------------------------------------------------------
# The "raw" scans are made from the MNI152 template (read from the nilearn wheel) seen through a known affine
# (rotation 10 deg, shift 10 mm, scale up to 5 %), stored with another axis order and anisotropic voxels,
# multiplied by a smooth bias field. Everything runs at 3 mm to stay fast.

TEMPLATE_SPACING = 3.0  # mm; tests/preprocess/test_preprocess.py checks its outputs against it as SPACING


def _mni_file() -> Path:
    spec = importlib.util.find_spec("nilearn")
    return Path(spec.submodule_search_locations[0]) / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def _t2_like(t1: sitk.Image, mask: sitk.Image) -> sitk.Image:
    """CSF bright, white matter dark: the contrast of the paper's scans (template is T1)."""
    return sitk.Mask(sitk.Cast(1.2 - t1, sitk.sitkFloat32), mask)


def _known_affine(rng: np.random.Generator) -> sitk.AffineTransform:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(10.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    scale = np.diag(1 + rng.uniform(-0.05, 0.05, 3))
    shift = rng.normal(size=3)
    t = sitk.AffineTransform(3)
    t.SetCenter((0.0, -18.0, 18.0))
    t.SetMatrix((rotation @ scale).ravel().tolist())
    t.SetTranslation((shift / np.linalg.norm(shift) * 10.0).tolist())
    return t


def _bias_field(img: sitk.Image, strength: float = 0.35) -> np.ndarray:
    """A smooth multiplicative field on ``img``'s voxels ([k, j, i]); about 0.6-1.6 over a brain."""
    direction = np.array(img.GetDirection()).reshape(3, 3)
    index = np.stack(np.meshgrid(*(np.arange(n) for n in img.GetSize()), indexing="ij"), -1)  # [i, j, k, 3]
    world = (index * np.array(img.GetSpacing())) @ direction.T + np.array(img.GetOrigin())
    w = (world - np.array([0.0, -18.0, 18.0])) / 80.0
    x, y, z = w[..., 0], w[..., 1], w[..., 2]
    return np.exp(strength * (0.8 * x + 0.6 * y**2 - 0.7 * z + 0.4 * x * z)).transpose(2, 1, 0)


@dataclasses.dataclass
class World:
    template: Path  # 3 mm T1 brain (file)
    template_mask: Path
    clean: sitk.Image  # T2-like anatomy on the 3 mm template grid (LPS)
    mask: sitk.Image


@pytest.fixture(scope="module")
def template_world(tmp_path_factory) -> World:
    """The MNI152 template at 3 mm (files) and the T2-like anatomy the raw scans are made from."""
    root = tmp_path_factory.mktemp("template")
    nii = nib.load(str(_mni_file()))
    t1 = np.asarray(nii.get_fdata(), dtype=np.float32) / 255.0
    t1_img = steps.from_nifti_array(t1 * (t1 > 0.2), nii.affine)
    mask_img = steps.from_nifti_array((t1 > 0.2).astype(np.uint8), nii.affine)
    grid = steps.isotropic_grid(t1_img, TEMPLATE_SPACING)
    t1_small = steps.resample(t1_img, grid, interpolator=sitk.sitkLinear)
    mask_small = steps.resample(mask_img, grid, interpolator=sitk.sitkNearestNeighbor)
    sitk.WriteImage(t1_small, str(root / "tmpl.nii.gz"))
    sitk.WriteImage(mask_small, str(root / "tmpl_mask.nii.gz"))
    clean = _t2_like(steps.reorient(t1_small, "LPS"), steps.reorient(mask_small, "LPS"))
    return World(root / "tmpl.nii.gz", root / "tmpl_mask.nii.gz", clean, steps.reorient(mask_small, "LPS"))


def _make_raw_scan(world: World, folder: Path, case: str, seed: int, *, suffix: str = ".nii.gz", bias: float = 0.35,
                   label_value: int | None = None) -> dict:
    """Write ``folder/scans/<case><suffix>`` and ``folder/masks/<case>.nii.gz`` (and a label):
    the clean anatomy through a known affine, axes stored as (y, z, x) with flips, voxels
    3.3 x 3.6 x 3.9 mm, times a bias field, plus a little noise."""
    rng = np.random.default_rng(seed)
    transform = _known_affine(rng)
    direction = np.zeros((3, 3))
    for j, (axis, sign) in enumerate(((1, -1.0), (2, 1.0), (0, -1.0))):
        direction[axis, j] = sign
    spacing = np.array([3.3, 3.6, 3.9])
    size = [int(round(fov / sp)) for fov, sp in zip((230, 190, 200), spacing)]
    origin = np.array([0.0, -18.0, 18.0]) - direction @ (spacing * (np.array(size) - 1) / 2)
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing(spacing.tolist())
    ref.SetDirection(direction.ravel().tolist())
    ref.SetOrigin(origin.tolist())
    anatomy = sitk.Resample(world.clean, ref, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    mask = sitk.Resample(world.mask, ref, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    arr = sitk.GetArrayFromImage(anatomy) * _bias_field(ref, bias) + 0.01 * np.abs(rng.normal(size=size[::-1]))
    raw = sitk.GetImageFromArray(arr.astype(np.float32))
    raw.CopyInformation(ref)
    paths = {"image": folder / "scans" / f"{case}{suffix}", "mask": folder / "masks" / f"{case}.nii.gz"}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(raw, str(paths["image"]))
    sitk.WriteImage(mask, str(paths["mask"]))
    if label_value is not None:
        lesion = sitk.GetArrayFromImage(mask) * 0
        k, j, i = (np.array(lesion.shape) // 2)
        lesion[k - 2:k + 2, j - 2:j + 2, i - 2:i + 2] = label_value
        lab = sitk.GetImageFromArray(lesion.astype(np.uint8))
        lab.CopyInformation(ref)
        paths["label"] = folder / "labels" / f"{case}.nii.gz"
        paths["label"].parent.mkdir(exist_ok=True)
        sitk.WriteImage(lab, str(paths["label"]))
    return paths


@pytest.fixture(scope="module")
def make_raw_scan(template_world):
    """``make_raw_scan(folder, case, seed, *, suffix=".nii.gz", bias=0.35, label_value=None)``: a raw scan made
    from the template world, its brain mask (and a label) under ``folder``; returns their paths by "image", "mask"
    (and "label")."""
    return functools.partial(_make_raw_scan, template_world)


def _preprocess_settings(world: World, **kw) -> PreprocessSettings:
    return PreprocessSettings(spacing_mm=TEMPLATE_SPACING, template=str(world.template),
                              template_mask=str(world.template_mask), **kw)


@pytest.fixture(scope="module")
def preprocess_settings(template_world):
    """``preprocess_settings(**kw)``: PreprocessSettings onto the template world's template at 3 mm."""
    return functools.partial(_preprocess_settings, template_world)


# --- the browser ------------------------------------------------------------------------------------------------

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
NO_BROWSER = "no chromium on PATH"
ENABLE_BROWSER = "apt-get install -y chromium (`make test` does it when run as root), then run the tests again"


@pytest.fixture
def browser() -> str:
    """Path of a Chromium for headless rendering; skips without one, but fails under CI=true."""
    found = next(filter(None, map(shutil.which, BROWSERS)), None)
    if found is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{NO_BROWSER} and CI=true: the browser test must run here; {ENABLE_BROWSER}")
        pytest.skip(NO_BROWSER)
    return found


def pytest_terminal_summary(terminalreporter) -> None:
    """One line at the end of the run when the browser test was skipped, saying how to enable it."""
    skipped = terminalreporter.stats.get("skipped", [])
    if any(NO_BROWSER in str(report.longrepr) for report in skipped):
        terminalreporter.write_line(f"the browser test was SKIPPED ({NO_BROWSER}); to run it: {ENABLE_BROWSER}",
                                    yellow=True, bold=True)
