"""BIDS raw trees as ``mddpm preprocess`` input: ``sub-<label>[/ses-<label>]/anat/<entities>_<suffix>.nii[.gz]``.

The scans are the files of the chosen suffix (``--modality``, default ``T2w``), one case each, its id the
file's entities without the suffix (``sub-01_ses-2_T2w.nii.gz`` -> ``sub-01_ses-2``). Lesion masks come from
``derivatives/<pipeline>/sub-*/[ses-*/]anat/`` where present: a file whose name holds ``label-lesion`` belongs
to the scan of the same subject and session (several scans of one subject and session need the mask to name
the same entities; a mask of a subject and session without such a scan is left alone). A scan without a
mask is a healthy case, as in a plain folder. The tree is recognised by
its ``dataset_description.json`` or its ``sub-*/anat`` folders.
"""

from __future__ import annotations

import re
from pathlib import Path

from mddpm.errors import MddpmError
from mddpm.preprocess.steps import case_id

DEFAULT_SUFFIX = "T2w"
LESION = "label-lesion"
_SESSION = re.compile(r"^(?P<key>sub-[^_]+(?:_ses-[^_]+)?)")


def is_bids(folder: Path) -> bool:
    """A BIDS raw tree: ``dataset_description.json``, or subject folders with ``anat/``."""
    return (folder / "dataset_description.json").is_file() or any(folder.glob("sub-*/anat")) or \
        any(folder.glob("sub-*/ses-*/anat"))


def _anat_files(root: Path) -> list[Path]:
    return sorted([*root.glob("sub-*/anat/*"), *root.glob("sub-*/ses-*/anat/*")])


def bids_cases(folder: Path, suffix: str | None = None, pattern: str | None = None
               ) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """``({case id: [scan]}, {case id: [lesion mask]})`` of a BIDS tree (module docstring)."""
    suffix = suffix or DEFAULT_SUFFIX
    scans: dict[str, list[Path]] = {}
    for p in _anat_files(folder):
        cid = case_id(p)
        if cid is not None and cid.endswith(f"_{suffix}") and p.is_file() and (not pattern or p.match(pattern)):
            scans.setdefault(cid[: -len(suffix) - 1], []).append(p)
    if not scans:
        raise MddpmError(f"{folder}: a BIDS tree without {suffix} scans (sub-*/[ses-*/]anat/*_{suffix}.nii.gz); "
                         "choose the suffix with --modality, e.g. --modality FLAIR")
    by_session: dict[str, list[str]] = {}
    for cid in scans:
        by_session.setdefault(_SESSION.match(cid)["key"], []).append(cid)
    labels: dict[str, list[Path]] = {}
    for p in _anat_files(folder / "derivatives") + sorted((folder / "derivatives").glob("*/sub-*/**/anat/*")):
        name = case_id(p)
        if name is None or LESION not in name or not p.is_file() or not _SESSION.match(name):
            continue
        owners = [c for c in by_session.get(_SESSION.match(name)["key"], []) if name.startswith(c + "_")] or \
            by_session.get(_SESSION.match(name)["key"], [])
        if not owners:  # a subject and session without a scan of this suffix: no case to label
            continue
        if len(owners) > 1:
            raise MddpmError(f"{p}: lesion mask matches {len(owners)} {suffix} scans of its subject and session "
                             "(name the scan's entities in the mask's name)")
        if p not in labels.get(owners[0], []):
            labels.setdefault(owners[0], []).append(p)
    return scans, labels
