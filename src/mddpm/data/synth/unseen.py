"""Lesion kinds made for test splits only: they differ from the tumour and MS-like training-free kinds in
shape, size and contrast sign, so a benchmark can ask whether a model found "not healthy" or only
"looks like the lesions we tuned on". Intensities relative to CSF = 1 (T2-like: WM about 0.38, GM
0.55); each function blends into ``image`` on the working grid and returns (image, label bool, info).

- ``infarct``: a wedge from the cortical surface inward (base 8-16 mm half-width, 15-30 mm deep), bright.
- ``haemorrhage``: a dark core (below white matter: the contrast sign no other kind has) with a bright
  oedema rim.
- ``rings``: 2-5 small ring lesions (bright fluid centre, darker wall, bright oedema around).
- ``diffuse``: one large, faint white-matter change (+0.05 to +0.10 over WM, i.e. 15-25 %).
"""

from __future__ import annotations

import numpy as np

from mddpm.data.synth.anatomy import Anatomy, SynthSettings
from mddpm.data.synth.lesions import pick_voxel, smooth_noise, world_mm

UNSEEN_KINDS = ("infarct", "haemorrhage", "rings", "diffuse")
LESION_Z_MM = (-10.0, 45.0)  # centres in the supratentorial range the model grid keeps (as the tumour)


def _z_ok(anat: Anatomy) -> np.ndarray:
    world_z = anat.affine[2, 2] * np.arange(anat.mask.shape[2]) + anat.affine[2, 3]
    return ((world_z >= LESION_Z_MM[0]) & (world_z <= LESION_Z_MM[1]))[None, None, :]


def _voxel_mm(anat: Anatomy, voxel: np.ndarray) -> np.ndarray:
    """World position [3] (mm, float32) of working-grid ``voxel``."""
    return (anat.affine[:3, :3] @ voxel + anat.affine[:3, 3]).astype(np.float32)


def _offset_mm(anat: Anatomy, voxel: np.ndarray) -> np.ndarray:
    """World offset [3, X, Y, Z] (mm) of every working-grid voxel from ``voxel``."""
    return world_mm(anat) - _voxel_mm(anat, voxel)[:, None, None, None]


def _blend(image: np.ndarray, weight: np.ndarray, level, tissue: dict) -> np.ndarray:
    """``level`` (set for the template's contrast) blended in with ``weight``, through the subject's contrast
    map where it has one (``tissue["remap"]``)."""
    remap = tissue.get("remap")
    return image * (1 - weight) + (level if remap is None else remap(level)) * weight


def _shell(r: np.ndarray, radius: float, sp: float) -> np.ndarray:
    """Soft inside-indicator of a ball of ``radius`` mm (0.5 at the surface, one voxel ramp)."""
    return np.clip((radius - r) / sp + 0.5, 0, 1)


def add_infarct(anat: Anatomy, image: np.ndarray, tissue: dict, rng: np.random.Generator):
    sp = anat.spacing_mm
    candidates = _z_ok(anat) & (anat.depth_mm > 1) & (anat.depth_mm < 5) & (tissue["gm"] > 0.4)
    c = pick_voxel(rng, candidates, "cortical infarct")
    grad = np.array([g[tuple(c)] for g in np.gradient(anat.depth_mm)], dtype=np.float64)  # points inward
    axis = grad / max(np.linalg.norm(grad), 1e-6)
    depth, half_width = rng.uniform(15, 30), rng.uniform(8, 16)
    offset = _offset_mm(anat, c)
    along = np.einsum("i,i...->...", axis.astype(np.float32), offset)
    perp = np.sqrt(np.maximum((offset**2).sum(0) - along**2, 0))
    width = half_width * np.clip((depth - along) / depth, 0, 1)
    weight = np.clip((width - perp) / sp + 0.5, 0, 1) * (along >= -6) * _shell(along, depth, sp)
    weight *= 1 - tissue["csf"]
    image = _blend(image, weight, rng.uniform(0.75, 0.9) * (1 + 0.05 * smooth_noise(rng, image.shape, 1.0)), tissue)
    label = (weight >= 0.5) & anat.mask
    return image * anat.mask, label, {"apex_depth_mm": round(depth, 1), "half_width_mm": round(half_width, 1)}


def add_haemorrhage(anat: Anatomy, image: np.ndarray, tissue: dict, rng: np.random.Generator):
    sp = anat.spacing_mm
    radius, rim = rng.uniform(5, 12), rng.uniform(2, 5)
    candidates = _z_ok(anat) & (anat.depth_mm > radius + rim + 4) & (tissue["gm"] + tissue["wm"] > 0.8) & \
        (anat.ventricle_distance_mm > 4)
    c = pick_voxel(rng, candidates, "haemorrhage")
    r = np.sqrt((_offset_mm(anat, c) ** 2).sum(0))
    r = r + 0.15 * radius * np.clip(smooth_noise(rng, r.shape, 3.0 / sp), -2, 2)
    core, outer = _shell(r, radius, sp), _shell(r, radius + rim, sp)
    image = _blend(image, outer * (1 - tissue["csf"]), rng.uniform(0.7, 0.85), tissue)
    image = _blend(image, core, rng.uniform(0.10, 0.25) * (1 + 0.1 * smooth_noise(rng, r.shape, 1.0)), tissue)
    label = (outer >= 0.5) & anat.mask
    return image * anat.mask, label, {"core_radius_mm": round(radius, 1), "rim_mm": round(rim, 1)}


def add_rings(anat: Anatomy, image: np.ndarray, tissue: dict, rng: np.random.Generator):
    sp = anat.spacing_mm
    world = world_mm(anat)
    candidates = _z_ok(anat) & (anat.depth_mm > 12) & (tissue["wm"] + tissue["gm"] > 0.8) & \
        (anat.ventricle_distance_mm > 6)
    label = np.zeros(anat.mask.shape, dtype=bool)
    rings = []
    for _ in range(int(rng.integers(2, 6))):
        c = pick_voxel(rng, candidates, "ring lesion")
        centre = _voxel_mm(anat, c)
        half = int(np.ceil(16 / sp)) + 1  # room for radius + wall + oedema (at most 15.5 mm)
        box = tuple(slice(max(0, int(v) - half), int(v) + half + 1) for v in c)
        r = np.sqrt(((world[(slice(None), *box)] - centre[:, None, None, None]) ** 2).sum(0))
        radius, wall, oedema = rng.uniform(3, 7), rng.uniform(1.5, 2.5), rng.uniform(3, 6)
        sub = image[box]
        sub = _blend(sub, _shell(r, radius + wall + oedema, sp) * tissue["wm"][box], rng.uniform(0.65, 0.78), tissue)
        sub = _blend(sub, _shell(r, radius + wall, sp), rng.uniform(0.33, 0.45), tissue)
        image[box] = _blend(sub, _shell(r, radius, sp), rng.uniform(0.8, 0.95), tissue)
        label[box] |= (_shell(r, radius + wall, sp) >= 0.5) | \
            (_shell(r, radius + wall + oedema, sp) * tissue["wm"][box] >= 0.5)
        rings.append({"centre_vox": c.tolist(), "radius_mm": round(radius, 1)})
    return image * anat.mask, label & anat.mask, {"rings": rings}


def add_diffuse(anat: Anatomy, image: np.ndarray, tissue: dict, rng: np.random.Generator):
    sp = anat.spacing_mm
    candidates = _z_ok(anat) & (tissue["wm"] >= 0.7) & (anat.depth_mm > 15)
    c = pick_voxel(rng, candidates, "diffuse white-matter change")
    radius = rng.uniform(15, 30)
    r = np.sqrt((_offset_mm(anat, c) ** 2).sum(0))
    r = r + 0.25 * radius * np.clip(smooth_noise(rng, r.shape, 6.0 / sp), -2, 2)
    weight = np.clip((radius - r) / (0.3 * radius), 0, 1) * tissue["wm"]  # a soft edge over 30 % of r
    delta = rng.uniform(0.05, 0.10)
    remap = tissue.get("remap")
    wm = float(np.mean(SynthSettings().wm_level))  # the change is set against the template's mean WM level
    shift = delta if remap is None else float(remap(wm + delta) - remap(wm))
    image = image + shift * weight
    label = (weight >= 0.5) & anat.mask
    return image * anat.mask, label, {"radius_mm": round(radius, 1), "delta": round(delta, 3)}


ADD_UNSEEN = {"infarct": add_infarct, "haemorrhage": add_haemorrhage, "rings": add_rings, "diffuse": add_diffuse}
