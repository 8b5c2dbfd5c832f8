"""Generator families of the synthetic brains, and the individual anatomy of the ``varied`` family.

``template`` (the original family): every subject is a smooth warp of the MNI152 average, whose tissue
maps are blurred by averaging (no individual sulci, soft boundaries). ``varied``: before the warp, each
subject's tissue maps are made individual (sharper tissue boundaries, CSF carved into random sulci,
cortical thickness, ventricle size and sulcal widening), the warp has a fine elastic layer and a head
size, and the acquisition varies more (T2 tissue ratios, partial-volume blur, slice thickness, bias,
gamma, noise). Both stay selectable by name, so results made with either are reproducible.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from mddpm.data.synth.anatomy import Anatomy, SynthSettings
from mddpm.data.synth.lesions import smooth_noise
from mddpm.data.synth.sizes import FAMILY_NAMES

FAMILIES: dict[str, SynthSettings] = dict(zip(FAMILY_NAMES, (
    SynthSettings(),
    replace(
        SynthSettings(),
        gm_level=(0.44, 0.68), wm_level=(0.27, 0.46), texture_std=0.06,
        tissue_sharpness=(1.5, 4.0), sulcal_carving=(0.5, 0.9), cortical_thickness=(0.2, 0.5),
        ventricle_dilation_mm=(0.0, 3.0), sulcal_widening=(0.0, 0.6),
        affine_scales=0.08, fine_elastic_control_points=14, fine_elastic_max_displacement_mm=2.5,
        head_scale=(0.88, 1.12),
        lesion_contrast_follows_tissue=True,
        bias_std=0.25, log_gamma=0.25, noise_std=(0.005, 0.04), blur_mm=(0.0, 1.5), slice_thickness_mm=(0.0, 5.0),
    ),
)))


def family_settings(name: str) -> SynthSettings:
    """The generation settings of family ``name`` (KeyError-free: unknown names are a ValueError)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown synthetic family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def individual_tissue(anat: Anatomy, rng: np.random.Generator, s: SynthSettings) -> dict[str, np.ndarray]:
    """One subject's tissue probabilities {"gm", "wm", "csf"} [X, Y, Z] float32 from the template's.

    Order: cortical thickness (GM/WM boundary moved by a smooth field), sharper boundaries (probabilities
    raised to a power, renormalised), sulci (thin CSF sheets at the zero crossings of band-passed noise,
    carved into cortical GM), atrophy (ventricles grown by up to ``ventricle_dilation_mm``, CSF widened
    next to existing sulcal CSF). The brain mask stays the template's. Draws nothing when the family
    switches these off (``tissue_sharpness[1] == 0``).
    """
    gm, wm, csf = (m.astype(np.float32).copy() for m in (anat.gm, anat.wm, anat.csf))
    if s.tissue_sharpness[1] == 0:
        return {"gm": gm, "wm": wm, "csf": csf}
    sp, shape, mask = anat.spacing_mm, anat.mask.shape, anat.mask
    brain = gm + wm + csf

    # cortical thickness: t > 0 turns WM next to GM into GM, t < 0 the reverse
    t = rng.uniform(*s.cortical_thickness) * np.clip(smooth_noise(rng, shape, 10.0 / sp), -2, 2) / 2
    near_gm = ndimage.gaussian_filter(gm, 1.0) > 0.2
    near_wm = ndimage.gaussian_filter(wm, 1.0) > 0.2
    to_gm = np.clip(t, 0, 1) * wm * near_gm
    to_wm = np.clip(-t, 0, 1) * gm * near_wm
    gm, wm = gm + to_gm - to_wm, wm - to_gm + to_wm

    # sharper tissue boundaries than the average template
    power = rng.uniform(*s.tissue_sharpness)
    stacked = np.stack([gm, wm, csf]) ** power
    gm, wm, csf = stacked / np.maximum(stacked.sum(0), 1e-6) * brain

    # sulci: thin sheets where band-passed noise crosses zero, in cortical GM (not the deep grey nuclei)
    band = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 3.0 / sp)
    band -= ndimage.gaussian_filter(band, 6.0 / sp)
    band /= max(float(band.std()), 1e-6)
    sheets = np.exp(-((band / 0.35) ** 2)) * (anat.depth_mm < 16)
    carve = rng.uniform(*s.sulcal_carving) * sheets * gm
    gm, csf = gm - carve, csf + carve

    # atrophy: larger ventricles (irregular outline), wider sulci next to existing sulcal CSF
    grow = rng.uniform(*s.ventricle_dilation_mm)
    reach = grow * (1 + 0.15 * np.clip(smooth_noise(rng, shape, 6.0 / sp), -2, 2))
    w = np.clip((reach - anat.ventricle_distance_mm) / sp + 0.5, 0, 1) * (anat.depth_mm > 8)
    w = np.maximum(w, anat.ventricles.astype(np.float32))
    widen = rng.uniform(*s.sulcal_widening) * np.clip(ndimage.gaussian_filter(csf, 1.0), 0, 1) * \
        (anat.depth_mm < 16) * (1 - w)
    gm_take = widen * gm
    gm, wm = gm * (1 - w) - gm_take, wm * (1 - w)
    csf = csf * (1 - w) + w * brain + gm_take
    return {name: (np.clip(m, 0, 1) * mask).astype(np.float32) for name, m in (("gm", gm), ("wm", wm), ("csf", csf))}


def acquisition_blur(image: np.ndarray, rng: np.random.Generator, s: SynthSettings, spacing_mm: float) -> np.ndarray:
    """Partial-volume blur (Gaussian, FWHM ``blur_mm`` in-plane) and slice thickness (FWHM along z) of one
    subject; the image unchanged (and nothing drawn) when the family has neither."""
    if s.blur_mm[1] == 0 and s.slice_thickness_mm[1] == 0:
        return image
    fwhm_xy = rng.uniform(*s.blur_mm)
    fwhm_z = max(fwhm_xy, rng.uniform(*s.slice_thickness_mm))
    sigma = np.array([fwhm_xy, fwhm_xy, fwhm_z]) / 2.355 / spacing_mm
    return ndimage.gaussian_filter(image, sigma) if sigma.max() > 0.05 else image


def lesion_contrast(tissue: dict, s: SynthSettings):
    """The map of lesion levels (set for the template's mean contrast) to this subject's contrast: piecewise
    linear through (0, 0), (WM, wm_level), (GM, gm_level), (CSF, csf_level) with WM/GM the template's mean
    levels; None (levels used as they are) unless ``s.lesion_contrast_follows_tissue``."""
    if not s.lesion_contrast_follows_tissue:
        return None
    base = SynthSettings()
    ref = [0.0, float(np.mean(base.wm_level)), float(np.mean(base.gm_level)), base.csf_level]
    own = [0.0, tissue["wm_level"], tissue["gm_level"], tissue["csf_level"]]
    return lambda level: np.interp(level, ref, own).astype(np.float32)
