"""Synthetic T2-like brain MRI datasets built from real anatomy (no download, no patient data).

The anatomy is the MNI152 2009a T1 template and its grey/white-matter probability maps that ship
inside the nilearn wheel. A T2-like contrast is composed from tissue probabilities (CSF bright,
grey matter intermediate, white matter darker; background 0, i.e. skull-stripped like the
preprocessed pDDPM data). Healthy subjects differ by a random elastic deformation, a small
affine, texture, bias field, gamma and Rician noise. Anomalous subjects carry either a
``tumour`` (a heterogeneous hyperintense mass with a darker necrotic core, fading oedema and mass
effect; label = whole tumour) or ``ms`` plaques (3-12 small ovoid hyperintensities in deep and
periventricular white matter; label = the plaques). Each case is cropped to its brain bounding box
like the published data; ``mddpm prepare`` then crops/pads it to the model grid.

Case ``k`` of a set depends only on the dataset seed, the set name and ``k`` (not on set sizes).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from mddpm import __version__
from mddpm.data.dataset import save_dataset_json
from mddpm.data.synth_sizes import COUNT_ARGS
from mddpm.errors import MddpmError
from mddpm.io import check_output_folder, clear_outputs, file_sha256, write_nifti
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
]
# what a synthetic dataset folder holds (prepared/: the caches `mddpm prepare` adds; preview.png: `synth --preview`)
OUTPUT_FILES = ("dataset.json", "images/synth_*_0000.nii.gz", "masks/synth_*.nii.gz", "labels/synth_*.nii.gz",
                "prepared/*", "preview.png")


@dataclass(frozen=True)
class SynthSettings:
    """Every generation parameter (ranges are uniform draws per case; intensities relative to CSF = 1)."""

    margin_mm: float = 12.0  # around the template brain box, room for the spatial transforms
    mask_closing_mm: float = 4.0  # radius of the closing that turns the template mask into a skull-strip mask
    # T2-like tissue contrast
    csf_level: float = 1.0
    gm_level: tuple[float, float] = (0.50, 0.60)
    wm_level: tuple[float, float] = (0.34, 0.42)
    texture_std: float = 0.04  # multiplicative smooth tissue texture
    texture_sigma_mm: float = 2.0
    ventricle_min_depth_mm: float = 12.0  # ventricles = CSF this deep inside the brain
    ventricle_min_volume_mm3: float = 300.0
    # spatial variation
    affine_scales: float = 0.06
    affine_degrees: float = 6.0
    affine_translation_mm: float = 4.0
    elastic_control_points: int = 7
    elastic_max_displacement_mm: float = 6.0  # per control point, uniform
    # intensity variation
    bias_control_points: int = 4
    bias_std: float = 0.15  # of the log bias at the control points
    log_gamma: float = 0.15
    noise_std: tuple[float, float] = (0.005, 0.02)
    gain: tuple[float, float] = (300.0, 1500.0)  # arbitrary scanner scale of the written image
    # where lesions may be centred (MNI z, mm): the supratentorial range the model grid keeps
    lesion_z_mm: tuple[float, float] = (-10.0, 45.0)
    # tumour
    tumour_mass_radius_mm: tuple[float, float] = (9.0, 18.0)
    tumour_core_fraction: tuple[float, float] = (0.3, 0.6)
    tumour_oedema_margin_mm: tuple[float, float] = (6.0, 18.0)
    tumour_mass_level: tuple[float, float] = (0.62, 0.76)
    tumour_core_level: tuple[float, float] = (0.46, 0.54)
    tumour_oedema_level: tuple[float, float] = (0.66, 0.78)
    tumour_heterogeneity: float = 0.10
    tumour_mass_effect: tuple[float, float] = (0.35, 0.65)  # fraction k of radial expansion at the centre
    tumour_oedema_label_weight: float = 0.25  # oedema voxels with at least this blend weight are labelled
    # multiple sclerosis
    ms_count: tuple[int, int] = (3, 12)
    ms_major_semi_axis_mm: tuple[float, float] = (3.5, 8.0)
    ms_minor_ratio: tuple[float, float] = (0.5, 0.8)
    ms_level: tuple[float, float] = (0.65, 0.85)
    ms_periventricular_fraction: float = 0.5
    ms_periventricular_mm: float = 8.0
    ms_min_wm_probability: float = 0.7


@dataclass
class Anatomy:
    """Template anatomy on the working grid: tissue probabilities [X, Y, Z] float32 in [0, 1]."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray  # bool brain mask
    ventricles: np.ndarray  # bool
    depth_mm: np.ndarray  # distance to the brain boundary inside the mask
    ventricle_distance_mm: np.ndarray
    affine: np.ndarray  # [4, 4], mm, RAS
    spacing_mm: float
    files: list[dict] = field(default_factory=list)


@dataclass
class SynthCase:
    """One generated subject cropped to its brain box: image float32 >= 0, mask/label uint8, [X, Y, Z]."""

    image: np.ndarray
    mask: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    info: dict


def case_seed(seed: int, set_name: str, index: int) -> int:
    """The seed of case ``index`` of set ``set_name``: independent of the set sizes."""
    code = [name for name, _, _ in SETS].index(set_name)
    return int(np.random.SeedSequence([seed, code, index]).generate_state(1)[0])


@functools.lru_cache(maxsize=2)
def load_anatomy(spacing_mm: float = 2.0, settings: SynthSettings = SynthSettings()) -> Anatomy:
    """MNI152 tissue maps from the nilearn wheel, cropped to the brain box plus a margin and
    resampled (anti-aliased, trilinear) to isotropic ``spacing_mm``. Cached; the arrays are read-only."""
    if not 0.5 <= spacing_mm <= 4.0:
        raise MddpmError(f"spacing_mm={spacing_mm}: must be between 0.5 and 4 mm")
    from nilearn import datasets
    from nilearn.datasets import struct

    t1 = datasets.load_mni152_template(resolution=1)
    imgs = [t1, datasets.load_mni152_gm_template(resolution=1), datasets.load_mni152_wm_template(resolution=1),
            datasets.load_mni152_brain_mask(resolution=1)]
    if any(not np.allclose(i.affine, t1.affine) or i.shape != t1.shape for i in imgs):
        raise MddpmError(f"{struct.MNI152_FILE_PATH}: nilearn MNI152 maps are not on one grid")
    gm, wm, brain = (np.asarray(i.get_fdata(dtype=np.float32)) for i in imgs[1:])
    src_affine = np.asarray(t1.affine, dtype=np.float64)
    src_spacing = float(abs(src_affine[0, 0]))

    # working box: template brain box plus margin (source voxels; zero padded where it leaves the grid)
    idx = np.argwhere(brain > 0)
    margin = int(np.ceil(settings.margin_mm / src_spacing))
    lo, hi = idx.min(0) - margin, idx.max(0) + margin + 1
    pad = [(max(0, -l), max(0, h - n)) for l, h, n in zip(lo, hi, brain.shape)]
    box = tuple(slice(l + p0, h + p0) for l, h, (p0, _) in zip(lo, hi, pad))
    shape = np.floor((hi - lo - 1) * src_spacing / spacing_mm).astype(int) + 1
    factor = spacing_mm / src_spacing
    maps = []
    for arr in (gm * brain, wm * brain, brain):
        arr = np.pad(arr, pad)[box]
        if factor > 1:
            arr = ndimage.gaussian_filter(arr, sigma=0.5 * np.sqrt(factor**2 - 1))
        maps.append(ndimage.affine_transform(arr, np.full(3, factor), output_shape=tuple(shape), order=1))
    gm, wm, brain_p = (np.clip(m, 0, 1).astype(np.float32) for m in maps)
    # the T1 threshold leaves the basal cisterns and deep sulci (CSF, dark on T1) out of the mask; a
    # skull-stripping mask includes them: close and fill the mask, the added voxels are CSF
    radius = max(1, round(settings.mask_closing_mm / spacing_mm))
    ball = ((np.indices((2 * radius + 1,) * 3) - radius) ** 2).sum(0) <= radius**2
    mask = ndimage.binary_closing(np.pad(brain_p >= 0.5, radius), structure=ball)[(slice(radius, -radius),) * 3]
    mask = ndimage.binary_fill_holes(mask)
    mask = np.stack([ndimage.binary_fill_holes(mask[:, :, z]) for z in range(mask.shape[2])], -1)
    brain_p = np.where(mask & (brain_p < 0.5), 1.0, brain_p)
    gm, wm = gm * mask, wm * mask
    csf = np.clip(brain_p - gm - wm, 0, 1) * mask
    affine = src_affine.copy()
    affine[:3, :3] = src_affine[:3, :3] * factor
    affine[:3, 3] = src_affine[:3, :3] @ lo + src_affine[:3, 3]

    depth = ndimage.distance_transform_edt(mask, sampling=spacing_mm).astype(np.float32)
    ventricles = (csf > 0.5) & (depth > settings.ventricle_min_depth_mm)
    components, n = ndimage.label(ventricles)
    sizes = ndimage.sum(ventricles, components, index=np.arange(1, n + 1)) * spacing_mm**3
    keep = np.flatnonzero(sizes >= settings.ventricle_min_volume_mm3) + 1
    ventricles = np.isin(components, keep)
    ventricle_distance = ndimage.distance_transform_edt(~ventricles, sampling=spacing_mm).astype(np.float32)

    files = []
    for role, path in (("t1 (brain mask: nilearn t1 > 0.2, holes filled)", struct.MNI152_FILE_PATH),
                       ("gm", struct.GM_MNI152_FILE_PATH), ("wm", struct.WM_MNI152_FILE_PATH)):
        files.append({"map": role, "file": Path(path).name, "sha256": file_sha256(path)})
    anatomy = Anatomy(gm=gm, wm=wm, csf=csf.astype(np.float32), mask=mask, ventricles=ventricles, depth_mm=depth,
                      ventricle_distance_mm=ventricle_distance, affine=affine, spacing_mm=spacing_mm, files=files)
    for value in vars(anatomy).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return anatomy


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation, float32."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=sigma_vox)
    return field_ / max(float(field_.std()), 1e-6)


def _world_mm(anat: Anatomy) -> np.ndarray:
    """World coordinates [3, X, Y, Z] (mm) of every working-grid voxel."""
    grid = np.indices(anat.mask.shape, dtype=np.float32)
    return np.einsum("ij,j...->i...", anat.affine[:3, :3].astype(np.float32), grid) + \
        anat.affine[:3, 3].astype(np.float32)[:, None, None, None]


def _pick_voxel(rng: np.random.Generator, candidates: np.ndarray, what: str) -> np.ndarray:
    idx = np.argwhere(candidates)
    if len(idx) == 0:
        raise MddpmError(f"synth: no room for a {what} on this grid (spacing too coarse?)")
    return idx[rng.integers(len(idx))]


def _add_tumour(anat: Anatomy, tissue: dict, rng: np.random.Generator, s: SynthSettings):
    """Displace tissue away from a centre (mass effect), then blend in oedema, mass and necrotic core.

    Returns (image relative to CSF = 1, label bool, info); ``tissue`` holds gm/wm/csf maps and levels.
    """
    sp = anat.spacing_mm
    world = _world_mm(anat)
    r_mass = rng.uniform(*s.tumour_mass_radius_mm)
    r_core = r_mass * rng.uniform(*s.tumour_core_fraction)
    r_oed = r_mass + rng.uniform(*s.tumour_oedema_margin_mm)
    z_ok = (world[2] >= s.lesion_z_mm[0]) & (world[2] <= s.lesion_z_mm[1])
    candidates = z_ok & (anat.depth_mm > r_mass + 4) & (anat.gm + anat.wm > 0.8) & (anat.ventricle_distance_mm > 4)
    centre_vox = _pick_voxel(rng, candidates, "tumour")
    centre = world[(slice(None), *centre_vox)]
    offset = world - centre[:, None, None, None]  # [3, X, Y, Z] mm
    r = np.sqrt((offset**2).sum(0))

    # mass effect: the tissue now at x came from c + (x - c)(1 - k exp(-r^2 / 2L^2)) (monotone radial
    # expansion for k < 1), faded to zero towards the brain boundary so the brain outline stays put
    k = rng.uniform(*s.tumour_mass_effect)
    shrink = k * np.exp(-(r**2) / (2 * r_oed**2)) * np.clip(anat.depth_mm / 10.0, 0, 1)
    source_vox = np.indices(r.shape, dtype=np.float32) - (offset / sp) * shrink  # axes are isotropic RAS
    names = ("gm", "wm", "csf")
    warped = dict(zip(names, _warp(np.stack([tissue[n] for n in names]), source_vox) * anat.mask))
    image = _compose(warped, tissue)

    # irregular outlines: the distance to the centre perturbed by smooth noise (bounded, in mm)
    coarse = 4.0 / sp
    d_mass = r + 0.15 * r_mass * np.clip(_smooth_noise(rng, r.shape, coarse), -2, 2)
    d_core = r + 0.25 * r_core * np.clip(_smooth_noise(rng, r.shape, coarse), -2, 2)
    d_oed = r + 0.2 * r_oed * np.clip(_smooth_noise(rng, r.shape, 1.5 * coarse), -2, 2)
    w_mass = np.clip((r_mass - d_mass) / sp + 0.5, 0, 1)
    w_core = np.minimum(np.clip((r_core - d_core) / sp + 0.5, 0, 1), w_mass)  # the core lies inside the mass
    tissue_fraction = np.clip(warped["wm"] + 0.6 * warped["gm"], 0, 1)  # oedema spreads in white matter
    w_oed = np.clip((r_oed - d_oed) / (r_oed - r_mass), 0, 1) ** 0.8 * tissue_fraction
    het = s.tumour_heterogeneity
    oed_level = rng.uniform(*s.tumour_oedema_level) * (1 + 0.5 * het * _smooth_noise(rng, r.shape, coarse))
    mass_level = rng.uniform(*s.tumour_mass_level) * (1 + het * _smooth_noise(rng, r.shape, 1.0))
    core_level = rng.uniform(*s.tumour_core_level) * (1 + 0.8 * het * _smooth_noise(rng, r.shape, 1.0))
    image = image * (1 - w_oed) + oed_level * w_oed
    image = image * (1 - w_mass) + mass_level * w_mass
    image = image * (1 - w_core) + core_level * w_core
    label = ((w_mass >= 0.5) | (w_oed >= s.tumour_oedema_label_weight)) & anat.mask
    components, _ = ndimage.label(label)
    label = ndimage.binary_fill_holes(components == components[tuple(centre_vox)]) & anat.mask  # one solid tumour
    info = {"centre_mm": centre.round(1).tolist(), "mass_radius_mm": round(r_mass, 1),
            "core_radius_mm": round(r_core, 1), "oedema_radius_mm": round(r_oed, 1), "mass_effect_k": round(k, 3)}
    return image * anat.mask, label, info


def _add_ms(anat: Anatomy, image: np.ndarray, rng: np.random.Generator, s: SynthSettings):
    """Blend 3-12 ovoid plaques into deep and periventricular white matter.

    Periventricular plaques point away from the ventricle (Dawson's fingers). Returns (image, label, info).
    """
    sp = anat.spacing_mm
    world_z = anat.affine[2, 2] * np.arange(anat.mask.shape[2]) + anat.affine[2, 3]
    z_ok = ((world_z >= s.lesion_z_mm[0]) & (world_z <= s.lesion_z_mm[1]))[None, None, :]
    deep_wm = z_ok & (anat.wm >= s.ms_min_wm_probability) & (anat.depth_mm > 8) & ~anat.ventricles
    periventricular = deep_wm & (anat.ventricle_distance_mm <= s.ms_periventricular_mm)
    grad = np.gradient(anat.ventricle_distance_mm)
    label = np.zeros(anat.mask.shape, dtype=bool)
    image = image.copy()
    n = int(rng.integers(s.ms_count[0], s.ms_count[1] + 1))
    plaques = []
    for _ in range(n):
        peri = periventricular.any() and rng.random() < s.ms_periventricular_fraction
        centre = _pick_voxel(rng, periventricular if peri else deep_wm, "MS plaque")
        if peri:
            major = np.array([g[tuple(centre)] for g in grad], dtype=np.float64)
        else:
            major = rng.standard_normal(3)
        major /= max(np.linalg.norm(major), 1e-6)
        helper = rng.standard_normal(3)
        second = helper - helper.dot(major) * major
        second /= np.linalg.norm(second)
        axes = np.stack([major, second, np.cross(major, second)])  # rows: orthonormal directions
        a = rng.uniform(*s.ms_major_semi_axis_mm)
        semi = np.array([a, a * rng.uniform(*s.ms_minor_ratio), a * rng.uniform(*s.ms_minor_ratio)])
        semi = np.maximum(semi, 0.75 * sp)
        half = int(np.ceil(1.2 * a / sp)) + 1
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, anat.mask.shape)
        box = tuple(slice(l, h) for l, h in zip(lo, hi))
        offset = (np.indices(hi - lo).reshape(3, -1).T + lo - centre) * sp  # [V, 3] mm
        q = np.sqrt((((offset @ axes.T) / semi) ** 2).sum(1)).reshape(hi - lo)
        tissue = 1 - anat.csf[box]  # plaques replace brain tissue, not the CSF beside them
        w = np.clip((1.2 - q) / 0.4, 0, 1) * tissue  # 0.5 at the ellipsoid surface in pure tissue
        level = rng.uniform(*s.ms_level)
        image[box] = image[box] * (1 - w) + level * w
        label[box] |= (q <= 1.0) & (tissue >= 0.5)
        plaques.append({"centre_vox": centre.tolist(), "semi_axes_mm": semi.round(1).tolist(),
                        "periventricular": bool(peri), "level": round(level, 3)})
    label &= anat.mask
    return image * anat.mask, label, {"plaques": plaques}


def _compose(maps: dict, tissue: dict) -> np.ndarray:
    """T2-like image from tissue probabilities and per-subject tissue levels (texture included)."""
    image = tissue["csf_level"] * maps["csf"] + tissue["gm_level"] * maps["gm"] + tissue["wm_level"] * maps["wm"]
    return image * tissue["texture"]


def _bspline_basis(n_out: int, n_ctrl: int) -> np.ndarray:
    """Cubic B-spline weights [n_out, n_ctrl] of ``n_ctrl`` control points spread evenly over ``n_out`` voxels."""
    t = np.linspace(0, n_ctrl - 1, n_out)
    d = np.abs(t[:, None] - np.arange(n_ctrl)[None, :])
    return np.where(d < 1, 2 / 3 - d**2 + d**3 / 2, np.where(d < 2, (2 - d) ** 3 / 6, 0.0)).astype(np.float32)


def _spline_field(coefficients: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Dense smooth field [X, Y, Z, ...] from control-point coefficients [n, n, n, ...] (cubic B-spline)."""
    bx, by, bz = (_bspline_basis(size, n) for size, n in zip(shape, coefficients.shape[:3]))
    return np.einsum("ia,jb,kc,abc...->ijk...", bx, by, bz, coefficients.astype(np.float32), optimize=True)


def _warp(volumes: np.ndarray, source_vox: np.ndarray) -> np.ndarray:
    """Trilinear resampling: ``out[c, p] = volumes[c](source_vox[:, p])``; volumes [C, X, Y, Z], source_vox
    [3, X, Y, Z] voxel indices (outside the grid reads 0). One torch ``grid_sample`` for all channels."""
    import torch
    import torch.nn.functional as F

    sizes = np.array(volumes.shape[1:], dtype=np.float32)[:, None, None, None]
    normalised = 2 * source_vox / (sizes - 1) - 1  # align_corners=True convention
    grid = torch.from_numpy(np.ascontiguousarray(normalised[::-1].transpose(1, 2, 3, 0), dtype=np.float32))
    out = F.grid_sample(torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))[None], grid[None],
                        mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0].numpy()


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
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    offset_mm = (np.indices(shape, dtype=np.float32) - centre[:, None, None, None]) * spacing_mm + displacement
    source_mm = np.einsum("ij,j...->i...", matrix.astype(np.float32), offset_mm) + \
        translation.astype(np.float32)[:, None, None, None]
    return source_mm / spacing_mm + centre[:, None, None, None]


def generate_case(anat: Anatomy, kind: str, seed: int, settings: SynthSettings = SynthSettings()) -> SynthCase:
    """One subject of ``kind`` ("healthy" | "tumour" | "ms"), deterministic in ``seed`` (every draw comes
    from ``numpy.random.default_rng(seed)``).

    The spatial transform (affine + elastic B-spline) is one dense field applied once to image, mask
    and label; it stands in for torchio's RandomAffine + RandomElasticDeformation, whose SimpleITK
    B-spline resampling cost ~0.8 s per case here (too slow for a one-minute demo dataset).
    """
    if kind not in ("healthy", "tumour", "ms"):
        raise ValueError(f"unknown case kind {kind!r}")
    s = settings
    rng = np.random.default_rng(seed)
    shape = anat.mask.shape
    tissue = {
        "csf_level": s.csf_level,
        "gm_level": rng.uniform(*s.gm_level),
        "wm_level": rng.uniform(*s.wm_level),
        "texture": 1 + s.texture_std * _smooth_noise(rng, shape, s.texture_sigma_mm / anat.spacing_mm),
        "gm": anat.gm, "wm": anat.wm, "csf": anat.csf,
    }
    label = np.zeros(shape, dtype=bool)
    info: dict = {"kind": kind, "seed": seed,
                  "gm_level": round(tissue["gm_level"], 3), "wm_level": round(tissue["wm_level"], 3)}
    if kind == "tumour":
        image, label, lesion = _add_tumour(anat, tissue, rng, s)
        info.update(lesion)
    else:
        image = _compose(tissue, tissue) * anat.mask
        if kind == "ms":
            image, label, lesion = _add_ms(anat, image, rng, s)
            info.update(lesion)

    # subject geometry: one warp of image, mask and label (masks resampled linearly, cut at 0.5)
    source = _subject_source_voxels(shape, anat.spacing_mm, rng, s)
    image, mask, label = _warp(np.stack([image, anat.mask, label]).astype(np.float32), source)
    mask = mask >= 0.5
    label = (label >= 0.5) & mask

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


def _init_worker(anat: Anatomy, settings: SynthSettings) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER["anatomy"], _WORKER["settings"] = anat, settings


def _write_case(job: dict) -> dict:
    """Generate one case and write its files under ``job["root"]``; return its dataset.json entry."""
    case = generate_case(_WORKER["anatomy"], job["kind"], job["seed"], _WORKER["settings"])
    root, cid = Path(job["root"]), job["id"]
    entry = {"id": cid, "role": job["role"], "group": job["group"],
             "image": f"images/{cid}_0000.nii.gz", "mask": f"masks/{cid}.nii.gz", "label": None}
    write_nifti(root / entry["image"], case.image, case.affine)
    write_nifti(root / entry["mask"], case.mask, case.affine)
    if case.label is not None:
        entry["label"] = f"labels/{cid}.nii.gz"
        write_nifti(root / entry["label"], case.label, case.affine)
    return {"entry": entry, "info": {**case.info, "shape": list(case.image.shape)}}


def _run_jobs(jobs: list[dict], anat: Anatomy, settings: SynthSettings, workers: int, progress: bool) -> list[dict]:
    results: list[dict | None] = [None] * len(jobs)

    def store(i: int, result: dict) -> None:
        results[i] = result

    _WORKER.update(anatomy=anat, settings=settings)  # read by _write_case when it runs in this process
    try:
        parallel_map(_write_case, jobs, store, workers=workers, description="synth", progress=progress,
                     initializer=_init_worker, initargs=(anat, settings))
    finally:
        _WORKER.clear()
    return results


def synthesize(out: str | Path, n_train: int, n_val: int, n_test: int, n_tumour_val: int, n_tumour_test: int,
               n_ms_val: int, n_ms_test: int, seed: int = 0, spacing_mm: float = 2.0, force: bool = False,
               *, workers: int = 2, progress: bool = False, settings: SynthSettings = SynthSettings()) -> Path:
    """Write a synthetic dataset (mddpm format) to ``out`` and return its path.

    Splits: ``train``/``val``/``test`` (healthy), ``tumour_val``/``tumour_test``/``ms_val``/``ms_test``
    (anomalous; empty sets are left out) and one fold = train/val. The dataset is built in a temporary
    folder beside ``out`` and moved into place at the end, so a failure leaves nothing half-written.
    """
    out = Path(out)
    counts = dict(zip(COUNT_ARGS, (n_train, n_val, n_test, n_tumour_val, n_tumour_test, n_ms_val, n_ms_test)))
    for name, n in counts.items():
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise MddpmError(f"{name}={n}: must be a non-negative integer")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MddpmError(f"seed={seed}: must be a non-negative integer")
    if n_train < 1 or n_val < 1:
        raise MddpmError(f"{out}: need at least one train and one val case (n_train={n_train}, n_val={n_val})")
    earlier = check_output_folder(out, force, OUTPUT_FILES)

    anat = load_anatomy(spacing_mm, settings)
    jobs, splits = [], {}
    for (set_name, group, role), n in zip(SETS, counts.values()):
        kind = "healthy" if group == "healthy" else group
        ids = [f"synth_{set_name}_{k:04d}" for k in range(n)]
        if n or set_name in ("train", "val", "test"):
            splits[set_name] = ids
        jobs += [{"id": cid, "kind": kind, "group": group, "role": role, "seed": case_seed(seed, set_name, k)}
                 for k, cid in enumerate(ids)]

    out.parent.mkdir(parents=True, exist_ok=True)
    with sigterm_raises():  # SIGTERM, like Ctrl-C, removes the temporary folder on its way out
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            for job in jobs:
                job["root"] = str(tmp)
            results = _run_jobs(jobs, anat, settings, workers, progress)
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
                                             "case_seed": "SeedSequence([seed, set index, case index])",
                                             "set_order": [name for name, _, _ in SETS],
                                             "anatomy": {"source": "nilearn wheel", "nilearn": _nilearn_version(),
                                                         "files": anat.files, "working_shape": list(anat.mask.shape)},
                                             "generation": asdict(settings),
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
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return out


def _nilearn_version() -> str:
    import nilearn

    return nilearn.__version__
