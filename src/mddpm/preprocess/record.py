"""The dataset.json that ``mddpm preprocess`` writes, with one provenance entry per step."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import SimpleITK as sitk

from mddpm._version import __version__
from mddpm.data.dataset import VAL_RULE, VAL_SEED, save_dataset_json, validation_split
from mddpm.preprocess.settings import PIPELINE_VERSION, CaseInputs, PreprocessSettings


def write_dataset_json(out: Path, cases: list[CaseInputs], markers: dict[str, dict], settings: PreprocessSettings,
                       record: dict, *, role: str | None, split_name: str | None, modality: str,
                       sources: dict) -> Path:
    """Write ``out/dataset.json`` for the finished ``cases`` (see docs/dataset-format.md)."""
    entries, healthy, anomalous, non_binary = [], [], [], False
    for c in cases:
        m = markers[c.id]
        rel = m["outputs"]
        case_role = role or ("anomalous" if rel.get("label") else "healthy")
        (anomalous if case_role == "anomalous" else healthy).append(c.id)
        non_binary |= bool(m.get("label_values")) and any(v not in (0, 1) for v in m["label_values"])
        entries.append({"id": c.id, "role": case_role, "group": None, "image": rel["image"], "mask": rel["mask"],
                        "label": rel.get("label")})
    train, val = validation_split(healthy)
    splits = {split_name: [e["id"] for e in entries]} if split_name else {
        k: v for k, v in (("train", train), ("val", val), ("test", anomalous)) if v}
    if settings.register:
        space = "MNI152" if settings.template is None else Path(settings.template).name.split(".")[0]
    else:
        space = "native"
    meta = {
        "name": out.resolve().name, "modality": modality,
        "geometry": {"space": space, "spacing_mm": [settings.spacing_mm] * 3, "shape": None},
        "cases": entries, "splits": splits,
        "label_encoding": "gt0" if non_binary else "binary",
        "provenance": provenance(settings, record, {k: str(Path(v).resolve()) if k != "pattern" and v else v
                                                    for k, v in sources.items()}) + [splits_entry(split_name)],
    }
    save_dataset_json(out, meta)
    return out / "dataset.json"


def splits_entry(split_name: str | None) -> dict:
    """The provenance entry of the splits: every case in ``split_name``, or the default rule with its seed."""
    if split_name:
        return {"step": "splits", "tool": "mddpm", "settings": {"rule": f"every case in split {split_name!r}"}}
    return {"step": "splits", "tool": "mddpm", "settings": {
        "rule": f"healthy cases: train and val ({VAL_RULE}); cases with a label: test", "seed": VAL_SEED}}


def provenance(settings: PreprocessSettings, record: dict, sources: dict) -> list[dict]:
    """One entry per step with its settings, oldest first (the published choice noted where ours differs)."""
    tool = f"mddpm {__version__} preprocess, SimpleITK {sitk.Version.VersionString()}"
    s = settings
    entries = [
        {"step": "inputs", "tool": tool, "settings": {**sources, "settings_hash": hashlib.sha256(
            json.dumps(record, sort_keys=True).encode()).hexdigest(), "pipeline_version": PIPELINE_VERSION}},
        {"step": "reorient", "tool": "sitk.DICOMOrient", "settings": {"orientation": s.orientation,
                                                                      "note": "DICOMOrient 'LPS' = ANTs 'RAI' "
                                                                              "(published)"}},
        {"step": "resample", "tool": "sitk.Resample", "settings": {
            "spacing_mm": s.spacing_mm, "image": "cubic B-spline", "mask_label": "nearest neighbour",
            "note": "the image is interpolated once, from the raw grid to the output grid (resampling and "
                    "registration composed); published: B-spline to 1 mm, then linear in the registration"}},
        {"step": "brain_mask", "tool": {"files": "given mask files", "nonzero": "image > 0",
                                        "hd-bet": "HD-BET"}[s.mask_source],
         "settings": {"source": s.mask_source, **({"device": s.hdbet_device} if s.mask_source == "hd-bet" else {})}},
    ]
    if s.register:
        entries.append({"step": "registration", "tool": "sitk.ImageRegistrationMethod (affine)", "settings": {
            **asdict(s.registration), "template": record["template"], "estimated_on": "brain-masked images",
            "initialisation": "centres of mass", "metric": "Mattes mutual information",
            "optimizer": "regular step gradient descent, scales from physical shift",
            "published": "ANTsPy registration 'Affine' to SRI24 T1_brain (RAI): Mattes MI 32 bins, 20 % regular "
                         "sampling, shrink 6,4,2,1, smoothing 3,2,1,0 vox, 2100,1200,1200,10 iterations, "
                         "centre-of-mass init; masks and segs warped linearly"}})
    entries.append({"step": "crop", "tool": "mddpm", "settings": {
        "box": "inclusive bounding box of the brain mask",
        "published": "cut.py drops the last brain index on each axis (exclusive upper bound) and keeps the "
                     "uncropped affine; here every brain voxel is kept and the affine follows the crop"}})
    if s.bias_correction:
        entries.append({"step": "n4", "tool": "sitk.N4BiasFieldCorrectionImageFilter", "settings": {
            **asdict(s.n4), "mask": "brain mask (and intensity > 0)",
            "published": "ANTsPy n4_bias_field_correction: iterations [200]*4, tol 5e-4, shrink 4 and spline "
                         "distance 200 mm (ANTsPy defaults), mask = ants.get_mask(image), weight = brain mask "
                         "smoothed with sigma 1; SimpleITK has no weight image, so the binary mask is used"}})
    return entries
