"""Lesion models of the synthetic brains: a tumour (mass, necrotic core, oedema, mass effect) and MS-like
plaques, blended into a T2-like image on the working grid (intensities relative to CSF = 1)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mddpm.data.synth.anatomy import Anatomy, SynthSettings, compose, warp
from mddpm.errors import MddpmError


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation, float32."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=sigma_vox)
    return field_ / max(float(field_.std()), 1e-6)


def world_mm(anat: Anatomy) -> np.ndarray:
    """World coordinates [3, X, Y, Z] (mm) of every working-grid voxel."""
    grid = np.indices(anat.mask.shape, dtype=np.float32)
    return np.einsum("ij,j...->i...", anat.affine[:3, :3].astype(np.float32), grid) + \
        anat.affine[:3, 3].astype(np.float32)[:, None, None, None]


def pick_voxel(rng: np.random.Generator, candidates: np.ndarray, what: str) -> np.ndarray:
    idx = np.argwhere(candidates)
    if len(idx) == 0:
        raise MddpmError(f"synth: no room for a {what} on this grid (spacing too coarse?)")
    return idx[rng.integers(len(idx))]


def add_tumour(anat: Anatomy, tissue: dict, rng: np.random.Generator, s: SynthSettings):
    """Displace tissue away from a centre (mass effect), then blend in oedema, mass and necrotic core.

    Returns (image relative to CSF = 1, label bool, info); ``tissue`` holds gm/wm/csf maps and levels.
    """
    sp = anat.spacing_mm
    world = world_mm(anat)
    r_mass = rng.uniform(*s.tumour_mass_radius_mm)
    r_core = r_mass * rng.uniform(*s.tumour_core_fraction)
    r_oed = r_mass + rng.uniform(*s.tumour_oedema_margin_mm)
    z_ok = (world[2] >= s.lesion_z_mm[0]) & (world[2] <= s.lesion_z_mm[1])
    candidates = z_ok & (anat.depth_mm > r_mass + 4) & (anat.gm + anat.wm > 0.8) & (anat.ventricle_distance_mm > 4)
    centre_vox = pick_voxel(rng, candidates, "tumour")
    centre = world[(slice(None), *centre_vox)]
    offset = world - centre[:, None, None, None]  # [3, X, Y, Z] mm
    r = np.sqrt((offset**2).sum(0))

    # mass effect: the tissue now at x came from c + (x - c)(1 - k exp(-r^2 / 2L^2)) (monotone radial
    # expansion for k < 1), faded to zero towards the brain boundary so the brain outline stays put
    k = rng.uniform(*s.tumour_mass_effect)
    shrink = k * np.exp(-(r**2) / (2 * r_oed**2)) * np.clip(anat.depth_mm / 10.0, 0, 1)
    source_vox = np.indices(r.shape, dtype=np.float32) - (offset / sp) * shrink  # axes are isotropic RAS
    names = ("gm", "wm", "csf")
    warped = dict(zip(names, warp(np.stack([tissue[n] for n in names]), source_vox) * anat.mask))
    image = compose(warped, tissue)

    # irregular outlines: the distance to the centre perturbed by smooth noise (bounded, in mm)
    coarse = 4.0 / sp
    d_mass = r + 0.15 * r_mass * np.clip(smooth_noise(rng, r.shape, coarse), -2, 2)
    d_core = r + 0.25 * r_core * np.clip(smooth_noise(rng, r.shape, coarse), -2, 2)
    d_oed = r + 0.2 * r_oed * np.clip(smooth_noise(rng, r.shape, 1.5 * coarse), -2, 2)
    w_mass = np.clip((r_mass - d_mass) / sp + 0.5, 0, 1)
    w_core = np.minimum(np.clip((r_core - d_core) / sp + 0.5, 0, 1), w_mass)  # the core lies inside the mass
    tissue_fraction = np.clip(warped["wm"] + 0.6 * warped["gm"], 0, 1)  # oedema spreads in white matter
    w_oed = np.clip((r_oed - d_oed) / (r_oed - r_mass), 0, 1) ** 0.8 * tissue_fraction
    het = s.tumour_heterogeneity
    oed_level = rng.uniform(*s.tumour_oedema_level) * (1 + 0.5 * het * smooth_noise(rng, r.shape, coarse))
    mass_level = rng.uniform(*s.tumour_mass_level) * (1 + het * smooth_noise(rng, r.shape, 1.0))
    core_level = rng.uniform(*s.tumour_core_level) * (1 + 0.8 * het * smooth_noise(rng, r.shape, 1.0))
    remap = tissue.get("remap") or (lambda level: level)
    oed_level, mass_level, core_level = remap(oed_level), remap(mass_level), remap(core_level)
    image = image * (1 - w_oed) + oed_level * w_oed
    image = image * (1 - w_mass) + mass_level * w_mass
    image = image * (1 - w_core) + core_level * w_core
    label = ((w_mass >= 0.5) | (w_oed >= s.tumour_oedema_label_weight)) & anat.mask
    components, _ = ndimage.label(label)
    label = ndimage.binary_fill_holes(components == components[tuple(centre_vox)]) & anat.mask  # one solid tumour
    info = {"centre_mm": centre.round(1).tolist(), "mass_radius_mm": round(r_mass, 1),
            "core_radius_mm": round(r_core, 1), "oedema_radius_mm": round(r_oed, 1), "mass_effect_k": round(k, 3)}
    return image * anat.mask, label, info


def add_ms(anat: Anatomy, image: np.ndarray, rng: np.random.Generator, s: SynthSettings, remap=None):
    """Blend 3-12 ovoid plaques into deep and periventricular white matter.

    Periventricular plaques point away from the ventricle (Dawson's fingers); ``remap`` maps a plaque's level
    to the subject's contrast (:func:`~mddpm.data.synth.individual.lesion_contrast`). Returns (image, label, info).
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
        centre = pick_voxel(rng, periventricular if peri else deep_wm, "MS plaque")
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
        image[box] = image[box] * (1 - w) + (level if remap is None else remap(level)) * w
        label[box] |= (q <= 1.0) & (tissue >= 0.5)
        plaques.append({"centre_vox": centre.tolist(), "semi_axes_mm": semi.round(1).tolist(),
                        "periventricular": bool(peri), "level": round(level, 3)})
    label &= anat.mask
    return image * anat.mask, label, {"plaques": plaques}
