"""Synthetic T2-like brain MRI datasets built from real anatomy (no download, no patient data).

The anatomy is the MNI152 2009a T1 template and its grey/white-matter probability maps that ship
inside the nilearn wheel. A T2-like contrast is composed from tissue probabilities (CSF bright,
grey matter intermediate, white matter darker; background 0, i.e. skull-stripped like the
preprocessed pDDPM data). Healthy subjects differ by a random elastic deformation, a small
affine, texture, bias field, gamma and Rician noise. Anomalous subjects carry either a
``tumour`` (a heterogeneous hyperintense mass with a darker necrotic core, fading oedema and mass
effect; label = whole tumour) or ``ms`` plaques (3-12 small ovoid hyperintensities in deep and
periventricular white matter; label = the plaques), or one of four kinds made for test splits only
(``synth_unseen``: infarct, haemorrhage, rings, diffuse). The generator family (``synth_individual``:
``template``, the original data, or ``varied``: individual anatomy and acquisition) sets every draw's
range. Each case is cropped to its brain bounding box like the published data; ``mddpm prepare`` then
crops/pads it to the model grid.

Case ``k`` of a set depends only on the dataset seed, the set name, ``k`` and the family (not on set sizes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mddpm._version import __version__
from mddpm.data.cache import CACHE_FILES
from mddpm.data.dataset import save_dataset_json
from mddpm.data.synth.anatomy import Anatomy, SynthSettings, compose, load_anatomy, warp
from mddpm.data.synth.individual import (
    FAMILIES,
    acquisition_blur,
    family_settings,
    individual_tissue,
    lesion_contrast,
)
from mddpm.data.synth.lesions import add_ms, add_tumour, smooth_noise
from mddpm.data.synth.sizes import COUNT_ARGS
from mddpm.data.synth.unseen import ADD_UNSEEN, UNSEEN_KINDS
from mddpm.errors import MddpmError
from mddpm.io import build_folder, check_output_folder, clear_outputs, write_nifti
from mddpm.parallel import parallel_map, sigterm_raises

# (set name, group, role); the position in this list is part of every case's seed
SETS: list[tuple[str, str, str]] = [
    ("train", "healthy", "healthy"),
    ("val", "healthy", "healthy"),
    ("test", "healthy", "healthy"),
    ("tumour_val", "tumour", "anomalous"),
    ("tumour_test", "tumour", "anomalous"),
    ("ms_val", "ms", "anomalous"),
    ("ms_test", "ms", "anomalous"),
    *((f"{kind}_test", kind, "anomalous") for kind in UNSEEN_KINDS),  # test only: no model is tuned on them
]
KINDS = ("healthy", "tumour", "ms", *UNSEEN_KINDS)
# what a synthetic dataset folder holds (prepared/: the caches `mddpm prepare` adds; preview.png: `synth --preview`)
OUTPUT_FILES = ("dataset.json", "images/synth_*_0000.nii.gz", "masks/synth_*.nii.gz", "labels/synth_*.nii.gz",
                *(f"prepared/*/{name}" for name in CACHE_FILES), "preview.png")


@dataclass
class SynthCase:
    """One generated subject cropped to its brain box: image float32 >= 0, mask/label uint8, [X, Y, Z]."""

    image: np.ndarray
    mask: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    info: dict


def case_seed(seed: int, set_name: str, index: int, family: str = "template") -> int:
    """The seed of case ``index`` of set ``set_name`` of ``family``: independent of the set sizes (family
    template: the seeds of datasets made before families existed)."""
    code = [name for name, _, _ in SETS].index(set_name)
    entropy = [seed, code, index] + ([list(FAMILIES).index(family)] if family != "template" else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _bspline_basis(n_out: int, n_ctrl: int) -> np.ndarray:
    """Cubic B-spline weights [n_out, n_ctrl] of ``n_ctrl`` control points spread evenly over ``n_out`` voxels."""
    t = np.linspace(0, n_ctrl - 1, n_out)
    d = np.abs(t[:, None] - np.arange(n_ctrl)[None, :])
    return np.where(d < 1, 2 / 3 - d**2 + d**3 / 2, np.where(d < 2, (2 - d) ** 3 / 6, 0.0)).astype(np.float32)


def _spline_field(coefficients: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Dense smooth field [X, Y, Z, ...] from control-point coefficients [n, n, n, ...] (cubic B-spline)."""
    bx, by, bz = (_bspline_basis(size, n) for size, n in zip(shape, coefficients.shape[:3]))
    return np.einsum("ia,jb,kc,abc...->ijk...", bx, by, bz, coefficients.astype(np.float32), optimize=True)


def _rotation(angles_rad: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles_rad)
    sx, sy, sz = np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _subject_source_voxels(shape: tuple[int, int, int], spacing_mm: float, rng: np.random.Generator,
                           s: SynthSettings) -> np.ndarray:
    """Where each output voxel reads the template: a random affine (rotation, scale, translation about the
    grid centre) after a random elastic B-spline displacement (border control points fixed). [3, X, Y, Z]."""
    n = s.elastic_control_points
    control = rng.uniform(-s.elastic_max_displacement_mm, s.elastic_max_displacement_mm, (n, n, n, 3))
    control[[0, -1]] = 0
    control[:, [0, -1]] = 0
    control[:, :, [0, -1]] = 0
    displacement = _spline_field(control, shape).transpose(3, 0, 1, 2)  # [3, X, Y, Z] mm
    matrix = _rotation(np.deg2rad(rng.uniform(-s.affine_degrees, s.affine_degrees, 3))) @ \
        np.diag(rng.uniform(1 - s.affine_scales, 1 + s.affine_scales, 3))
    translation = rng.uniform(-s.affine_translation_mm, s.affine_translation_mm, 3)
    if s.fine_elastic_control_points:  # a finer layer: gyral-scale shape differences
        n = s.fine_elastic_control_points
        fine = rng.uniform(-s.fine_elastic_max_displacement_mm, s.fine_elastic_max_displacement_mm, (n, n, n, 3))
        displacement = displacement + _spline_field(fine, shape).transpose(3, 0, 1, 2)
    if s.head_scale != (1.0, 1.0):  # the template read at 1/scale: a head ``scale`` times the template's
        matrix = matrix / rng.uniform(*s.head_scale)
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    offset_mm = (np.indices(shape, dtype=np.float32) - centre[:, None, None, None]) * spacing_mm + displacement
    source_mm = np.einsum("ij,j...->i...", matrix.astype(np.float32), offset_mm) + \
        translation.astype(np.float32)[:, None, None, None]
    return source_mm / spacing_mm + centre[:, None, None, None]


def generate_case(anat: Anatomy, kind: str, seed: int, settings: SynthSettings = SynthSettings()) -> SynthCase:
    """One subject of ``kind`` (one of :data:`KINDS`), deterministic in ``seed`` (every draw comes from
    ``numpy.random.default_rng(seed)``); ``settings`` is a family's (:data:`FAMILIES`).

    The spatial transform (affine + elastic B-spline) is one dense field applied once to image, mask
    and label; it stands in for torchio's RandomAffine + RandomElasticDeformation, whose SimpleITK
    B-spline resampling is too slow for a one-minute demo dataset.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown case kind {kind!r}")
    s = settings
    rng = np.random.default_rng(seed)
    shape = anat.mask.shape
    maps = individual_tissue(anat, rng, s)
    tissue: dict = {
        "csf_level": s.csf_level,
        "gm_level": rng.uniform(*s.gm_level),
        "wm_level": rng.uniform(*s.wm_level),
        "texture": 1 + s.texture_std * smooth_noise(rng, shape, s.texture_sigma_mm / anat.spacing_mm),
        **maps,
    }
    tissue["remap"] = lesion_contrast(tissue, s)
    label = np.zeros(shape, dtype=bool)
    info: dict = {"kind": kind, "seed": seed,
                  "gm_level": round(tissue["gm_level"], 3), "wm_level": round(tissue["wm_level"], 3)}
    if kind == "tumour":
        image, label, lesion = add_tumour(anat, tissue, rng, s)
        info.update(lesion)
    else:
        image = compose(tissue, tissue) * anat.mask
        if kind == "ms":
            image, label, lesion = add_ms(anat, image, rng, s, tissue["remap"])
            info.update(lesion)
        elif kind in ADD_UNSEEN:
            image, label, lesion = ADD_UNSEEN[kind](anat, image, tissue, rng)
            info.update(lesion)

    # subject geometry: one warp of image, mask and label (masks resampled linearly, cut at 0.5)
    source = _subject_source_voxels(shape, anat.spacing_mm, rng, s)
    image, mask, label = warp(np.stack([image, anat.mask, label]).astype(np.float32), source)
    mask = mask >= 0.5
    label = (label >= 0.5) & mask

    image = acquisition_blur(image, rng, s, anat.spacing_mm)
    # subject intensity: smooth multiplicative bias field, gamma, Rician noise, scanner gain
    n = s.bias_control_points
    bias = np.exp(_spline_field(rng.normal(0, s.bias_std, (n, n, n)), shape))
    image = np.clip(image * bias, 0, None) ** np.exp(rng.uniform(-s.log_gamma, s.log_gamma))
    sigma = rng.uniform(*s.noise_std)
    real = image + sigma * rng.standard_normal(shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(shape, dtype=np.float32)
    image = np.sqrt(real**2 + imaginary**2) * mask * rng.uniform(*s.gain)

    # crop to the brain bounding box (inclusive; the published cut.py drops the last index)
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    box = tuple(slice(l, h) for l, h in zip(lo, hi))
    affine = anat.affine.copy()
    affine[:3, 3] = anat.affine[:3, :3] @ lo + anat.affine[:3, 3]
    info["label_voxels"] = int(label.sum())
    return SynthCase(image=image[box].astype(np.float32), mask=mask[box].astype(np.uint8),
                     label=label[box].astype(np.uint8) if kind != "healthy" else None, affine=affine, info=info)


_WORKER: dict = {}


def _init_worker(anat: Anatomy) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER["anatomy"] = anat


def _write_case(job: dict) -> dict:
    """Generate one case and write its files under ``job["root"]``; return its dataset.json entry."""
    case = generate_case(_WORKER["anatomy"], job["kind"], job["seed"], family_settings(job["family"]))
    root, cid = Path(job["root"]), job["id"]
    entry = {"id": cid, "role": job["role"], "group": job["group"],
             "image": f"images/{cid}_0000.nii.gz", "mask": f"masks/{cid}.nii.gz", "label": None}
    write_nifti(root / entry["image"], case.image, case.affine)
    write_nifti(root / entry["mask"], case.mask, case.affine)
    if case.label is not None:
        entry["label"] = f"labels/{cid}.nii.gz"
        write_nifti(root / entry["label"], case.label, case.affine)
    return {"entry": entry, "info": {**case.info, "family": job["family"], "shape": list(case.image.shape)}}


def _run_jobs(jobs: list[dict], anat: Anatomy, workers: int, progress: bool) -> list[dict]:
    results: list[dict | None] = [None] * len(jobs)

    def store(i: int, result: dict) -> None:
        results[i] = result

    _WORKER.update(anatomy=anat)  # read by _write_case when it runs in this process
    try:
        parallel_map(_write_case, jobs, store, workers=workers, description="synth", progress=progress,
                     initializer=_init_worker, initargs=(anat,))
    finally:
        _WORKER.clear()
    return results


def _plan_cases(counts: dict[str, int], seed: int, family: str, test_families: tuple[str, ...]):
    """(jobs, splits): every case to generate and the split lists. The dataset's own family makes every set
    (ids ``synth_<set>_<k>``); each of ``test_families`` makes the lesion sets only, as splits
    ``<family>_<set>`` (ids ``synth_<family>_<set>_<k>``): the same subjects as that family's own dataset."""
    jobs, splits = [], {}
    for fam in (family, *test_families):
        prefix = "" if fam == family else f"{fam}_"
        for (set_name, group, role), n in zip(SETS, counts.values()):
            if fam != family and group == "healthy":
                continue
            kind = "healthy" if group == "healthy" else group
            ids = [f"synth_{prefix}{set_name}_{k:04d}" for k in range(n)]
            if n or (set_name in ("train", "val", "test") and fam == family):
                splits[prefix + set_name] = ids
            jobs += [{"id": cid, "kind": kind, "group": group, "role": role, "family": fam,
                      "seed": case_seed(seed, set_name, k, fam)} for k, cid in enumerate(ids)]
    return jobs, splits


def synthesize(out: str | Path, n_train: int, n_val: int, n_test: int, n_tumour_val: int, n_tumour_test: int,
               n_ms_val: int, n_ms_test: int, seed: int = 0, spacing_mm: float = 2.0, force: bool = False,
               *, n_infarct_test: int = 0, n_haemorrhage_test: int = 0, n_rings_test: int = 0,
               n_diffuse_test: int = 0, family: str = "template", test_families: tuple[str, ...] = (),
               workers: int = 2, progress: bool = False) -> Path:
    """Write a synthetic dataset (mddpm format) to ``out`` and return its path.

    Splits: ``train``/``val``/``test`` (healthy), ``tumour_val``/``tumour_test``/``ms_val``/``ms_test`` and
    the test-only kinds ``infarct_test``/``haemorrhage_test``/``rings_test``/``diffuse_test`` (anomalous;
    empty sets are left out), all of generator ``family``, plus the lesion sets of every family in
    ``test_families`` as ``<family>_<set>``; one fold = train/val. The dataset is built in a temporary
    folder beside ``out`` and moved into place at the end, so a failure leaves nothing half-written.
    """
    out = Path(out)
    counts = dict(zip(COUNT_ARGS, (n_train, n_val, n_test, n_tumour_val, n_tumour_test, n_ms_val, n_ms_test,
                                   n_infarct_test, n_haemorrhage_test, n_rings_test, n_diffuse_test)))
    for name, n in counts.items():
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise MddpmError(f"{name}={n}: must be a non-negative integer")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MddpmError(f"seed={seed}: must be a non-negative integer")
    if n_train < 1 or n_val < 1:
        raise MddpmError(f"{out}: need at least one train and one val case (n_train={n_train}, n_val={n_val})")
    for fam in (family, *test_families):
        if fam not in FAMILIES:
            raise MddpmError(f"family {fam!r}: unknown synthetic family (known: {', '.join(FAMILIES)})")
    test_families = tuple(dict.fromkeys(f for f in test_families if f != family))
    earlier = check_output_folder(out, force, OUTPUT_FILES)

    anat = load_anatomy(spacing_mm)
    jobs, splits = _plan_cases(counts, seed, family, test_families)

    out.parent.mkdir(parents=True, exist_ok=True)
    # SIGTERM, like Ctrl-C, removes the temporary folder on its way out
    with sigterm_raises(), build_folder(out) as tmp:
        for job in jobs:
            job["root"] = str(tmp)
        results = _run_jobs(jobs, anat, workers, progress)
        save_dataset_json(tmp, {
            "name": out.name, "modality": "T2",
            "geometry": {"space": "MNI152NLin2009aSym (nilearn), cropped per case to its brain box",
                         "spacing_mm": [spacing_mm] * 3, "shape": None},
            "cases": [r["entry"] for r in results],
            "splits": splits,
            "folds": [{"train": splits["train"], "val": splits["val"]}],
            "label_encoding": "binary",
            "provenance": [{"step": "synth", "tool": f"mddpm {__version__} (mddpm.data.synth.synthesize)",
                            "settings": {**counts, "seed": seed, "spacing_mm": spacing_mm,
                                         "family": family, "test_families": list(test_families),
                                         "case_seed": "SeedSequence([seed, set index, case index] "
                                                      "+ [family index] for families other than template)",
                                         "set_order": [name for name, _, _ in SETS],
                                         "anatomy": {"source": "nilearn wheel", "nilearn": _nilearn_version(),
                                                     "files": anat.files, "working_shape": list(anat.mask.shape)},
                                         "generation": asdict(family_settings(family)),
                                         "test_family_generation": {f: asdict(family_settings(f))
                                                                    for f in test_families},
                                         "cases": {r["entry"]["id"]: r["info"] for r in results}}}],
        })
        clear_outputs(out, earlier)
        if out.is_dir():
            try:
                out.rmdir()
            except OSError:
                raise MddpmError(f"{out}: still holds folders after --force removed the earlier dataset; "
                                 "move them and run again") from None
        tmp.rename(out)
    return out


def _nilearn_version() -> str:
    import nilearn

    return nilearn.__version__
