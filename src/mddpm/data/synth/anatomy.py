"""Template anatomy of the synthetic brains: every generation setting and the MNI152 tissue maps on a
working grid (the nilearn wheel's templates: no download)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from mddpm.errors import MddpmError
from mddpm.io import file_sha256


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
    # individual anatomy (family varied, synth_individual.py; all off in family template)
    tissue_sharpness: tuple[float, float] = (0.0, 0.0)  # power on the tissue probabilities; 0 = template maps
    sulcal_carving: tuple[float, float] = (0.0, 0.0)  # fraction of cortical GM turned to CSF on sulcal sheets
    cortical_thickness: tuple[float, float] = (0.0, 0.0)  # amplitude of the GM/WM boundary shift (fraction)
    ventricle_dilation_mm: tuple[float, float] = (0.0, 0.0)
    sulcal_widening: tuple[float, float] = (0.0, 0.0)  # fraction of GM next to sulcal CSF turned to CSF
    # lesion levels are set for the template's mean contrast (WM 0.38, GM 0.55); True: mapped through the
    # subject's own WM/GM levels, so a lesion keeps its place among the tissues when the contrast changes
    lesion_contrast_follows_tissue: bool = False
    # spatial variation
    affine_scales: float = 0.06
    affine_degrees: float = 6.0
    affine_translation_mm: float = 4.0
    elastic_control_points: int = 7
    elastic_max_displacement_mm: float = 6.0  # per control point, uniform
    fine_elastic_control_points: int = 0  # a second, finer elastic layer (0: none)
    fine_elastic_max_displacement_mm: float = 0.0
    head_scale: tuple[float, float] = (1.0, 1.0)  # isotropic head size factor (drawn only when not 1)
    # intensity variation
    bias_control_points: int = 4
    bias_std: float = 0.15  # of the log bias at the control points
    log_gamma: float = 0.15
    noise_std: tuple[float, float] = (0.005, 0.02)
    gain: tuple[float, float] = (300.0, 1500.0)  # arbitrary scanner scale of the written image
    blur_mm: tuple[float, float] = (0.0, 0.0)  # partial-volume blur, in-plane FWHM
    slice_thickness_mm: tuple[float, float] = (0.0, 0.0)  # through-plane FWHM
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


def compose(maps: dict, tissue: dict) -> np.ndarray:
    """T2-like image from tissue probabilities and per-subject tissue levels (texture included)."""
    image = tissue["csf_level"] * maps["csf"] + tissue["gm_level"] * maps["gm"] + tissue["wm_level"] * maps["wm"]
    return image * tissue["texture"]


def warp(volumes: np.ndarray, source_vox: np.ndarray) -> np.ndarray:
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
