"""Which files of an input folder are the scans and labels of which case: a plain folder, nnU-Net v2 raw, or
a BIDS tree (:mod:`mddpm.preprocess.bids`).

Plain: the case id is the file name without its extension (``sub-01_T2w.nii.gz`` -> ``sub-01_T2w``), and a
label is named like its scan's case id.

nnU-Net v2 raw (``Dataset001_X/{dataset.json, imagesTr/, labelsTr/, imagesTs/[, labelsTs/]}``): images are
``{case}_{XXXX}{file_ending}`` (``XXXX`` = the channel, named in dataset.json's ``channel_names``), labels
``{case}{file_ending}``. The layout is recognised by its folders, never by file names: a dataset folder
(dataset.json beside ``imagesTr/``), or an ``imagesTr/`` or ``imagesTs/`` folder.

Channel suffixes are stripped from the case ids in the nnU-Net layout, and in a plain folder whose files all
end in ``_XXXX`` when the folder is called ``images`` (mddpm's own ``images/<id>_0000`` naming) or its labels
are named by the stripped ids; one channel is kept (the only one, the one ``--pattern`` leaves, or the one
whose ``channel_names`` entry is the ``--modality``).

Both layouts refuse, with one :class:`MddpmError` line: a label that matches no scan (it would be dropped),
and, in the nnU-Net layout only, an image without a label unless every case is declared healthy (nnU-Net
images are lesion cases: unlabelled, they would become healthy training data; in a plain folder, mddpm's
own naming included, a scan without a label is a healthy case).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mddpm.errors import MddpmError
from mddpm.io import read_json
from mddpm.preprocess.bids import bids_cases, is_bids
from mddpm.preprocess.steps import SUPPORTED_SUFFIXES, case_id

CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
NNUNET_IMAGE_FOLDERS = (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs"))
NNUNET_IMAGES = tuple(images for images, _ in NNUNET_IMAGE_FOLDERS)


@dataclass
class Inputs:
    """What :func:`find_inputs` found: ``scans`` and ``labels`` map a case id to its files (several files
    for one id are reported later as a duplicate); ``channel``: the kept nnU-Net channel's name, if known."""

    scans: dict[str, list[Path]] = field(default_factory=dict)
    labels: dict[str, list[Path]] = field(default_factory=dict)
    nnunet: bool = False
    channel: str | None = None


def index_folder(folder: Path, what: str, file_ending: str | None = None) -> dict[str, list[Path]]:
    """``{case id: [files]}`` of the supported images directly in ``folder`` (ending in ``file_ending`` if given)."""
    if not folder.is_dir():
        raise MddpmError(f"{folder}: {what} folder not found")
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        cid = case_id(p)
        if cid is not None and p.is_file() and (file_ending is None or p.name.endswith(file_ending)):
            found.setdefault(cid, []).append(p)
    return found


def read_nnunet_meta(path: Path) -> dict:
    """``{"channels": {"0000": name, ...}, "file_ending": str}`` from an nnU-Net v2 dataset.json."""
    meta = read_json(path)
    names = meta.get("channel_names", meta.get("modality"))  # "modality": nnU-Net v1's name for it
    if not isinstance(names, dict) or not names:
        raise MddpmError(f"{path}: no \"channel_names\" object (not an nnU-Net v2 dataset.json)")
    try:
        channels = {f"{int(k):04d}": str(v) for k, v in names.items()}
    except ValueError:
        raise MddpmError(f"{path}: \"channel_names\" keys must be channel numbers (\"0\", \"1\", ...)") from None
    ending = meta.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or ending.lower() not in SUPPORTED_SUFFIXES:
        raise MddpmError(f"{path}: file_ending {ending!r} is not a supported image format "
                         f"({', '.join(SUPPORTED_SUFFIXES)})")
    return {"channels": channels, "file_ending": ending}


def find_inputs(input_dir: str | Path, labels_dir: str | Path | None = None, pattern: str | None = None,
                role: str | None = None, modality: str | None = None) -> Inputs:
    """The scans and labels of ``input_dir`` (a plain folder, an nnU-Net ``images*`` folder, or an nnU-Net
    dataset folder holding dataset.json and imagesTr/), checked as the module docstring says."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise MddpmError(f"{input_dir}: input folder not found")
    if is_bids(input_dir):
        if labels_dir is not None:
            raise MddpmError(f"{input_dir}: a BIDS tree takes its lesion masks from derivatives/ (no --labels)")
        scans, labels = bids_cases(input_dir, modality, pattern)
        return Inputs(scans=scans, labels=labels)
    if is_nnunet_dataset(input_dir):
        if labels_dir is not None:
            raise MddpmError(f"{input_dir}: an nnU-Net dataset folder takes its labels from labelsTr/ and labelsTs/ "
                             "(no --labels; or give its imagesTr/ folder with --labels)")
        meta = read_nnunet_meta(input_dir / "dataset.json")
        pairs = [(input_dir / i, input_dir / lab) for i, lab in NNUNET_IMAGE_FOLDERS if (input_dir / i).is_dir()]
    else:
        inside = input_dir.name in NNUNET_IMAGES and is_nnunet_dataset(input_dir.parent)
        meta = read_nnunet_meta(input_dir.parent / "dataset.json") if inside else None
        pairs = [(input_dir, Path(labels_dir) if labels_dir else None)]
    found = Inputs()
    for images, labels in pairs:
        _add_folder(found, images, labels, meta, pattern, role, modality)
    if not found.scans:
        looked = pattern or ", ".join("*" + s for s in SUPPORTED_SUFFIXES)
        raise MddpmError(f"{input_dir}: no scans found (looked for {looked})")
    return found


def is_nnunet_dataset(folder: Path) -> bool:
    """An nnU-Net v2 raw dataset folder (``Dataset###_Name``): dataset.json beside ``imagesTr/``."""
    return (folder / "dataset.json").is_file() and (folder / "imagesTr").is_dir()


def _add_folder(found: Inputs, images: Path, labels_dir: Path | None, meta: dict | None, pattern: str | None,
                role: str | None, modality: str | None) -> None:
    ending = meta["file_ending"] if meta else None
    scans = index_folder(images, "input", ending)
    labels = index_folder(labels_dir, "labels", ending) if labels_dir and (meta is None or labels_dir.is_dir()) else {}
    split = {cid: CHANNEL_SUFFIX.match(cid) for cid in scans}
    nnunet = meta is not None or images.name in NNUNET_IMAGES  # the folders say so, not the file names
    found.nnunet |= nnunet
    channels = bool(scans) and all(split.values()) and (
        nnunet or images.name == "images" or any(m["case"] in labels for m in split.values()))
    if channels:
        by_channel: dict[str, dict[str, list[Path]]] = {}
        for cid, paths in scans.items():
            for p in paths:
                by_channel.setdefault(split[cid]["channel"], {}).setdefault(split[cid]["case"], []).append(p)
        every_case = {case for cases in by_channel.values() for case in cases}
        wanted = {ch: {c: [p for p in ps if not pattern or p.match(pattern)] for c, ps in cases.items()}
                  for ch, cases in by_channel.items()}
        wanted = {ch: {c: ps for c, ps in cases.items() if ps} for ch, cases in wanted.items()}
        wanted = {ch: cases for ch, cases in wanted.items() if cases}
        channel = _choose_channel(images, wanted, meta, modality)
        kept = wanted.get(channel, {})
        found.channel = meta["channels"].get(channel) if meta and channel else found.channel
    else:
        every_case = set(scans)
        kept = {c: [p for p in ps if not pattern or p.match(pattern)] for c, ps in scans.items()}
        kept = {c: ps for c, ps in kept.items() if ps}
    orphans = sorted(set(labels) - every_case)
    if orphans:
        example = labels[orphans[0]][0]
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        expected = f"{orphans[0]}{'_0000' if channels or nnunet else ''}{ending or '.nii.gz'}"
        raise MddpmError(f"{example}: label matches no scan in {images}{more}; scans are expected as {expected} "
                         "(a label left behind would drop a lesion case)")
    if nnunet and role != "healthy":
        unlabelled = sorted(c for c in kept if c not in labels)
        if unlabelled:
            more = f" (and {len(unlabelled) - 1} more)" if len(unlabelled) > 1 else ""
            where = (labels_dir if labels_dir and labels_dir.is_dir()
                     else f"{labels_dir or 'the labels folder'} (absent)")
            missing = f"{unlabelled[0]}{ending or '.nii.gz'}"
            raise MddpmError(f"{kept[unlabelled[0]][0]}: no label {missing} in {where}{more}; "
                             "an nnU-Net image is a lesion case and would become healthy (give it a label, leave "
                             "it out with --pattern, or pass --role healthy if every scan is healthy)")
    for case, paths in kept.items():
        found.scans.setdefault(case, []).extend(paths)
    for case, paths in labels.items():
        if case in kept:
            found.labels.setdefault(case, []).extend(paths)


def _choose_channel(images: Path, by_channel: dict[str, dict], meta: dict | None, modality: str | None) -> str | None:
    """The one channel present, else the one ``channel_names`` calls ``modality``; several: an error."""
    if len(by_channel) <= 1:
        return next(iter(by_channel), None)
    names = (meta or {}).get("channels", {})
    matching = [ch for ch in by_channel if modality and names.get(ch, "").lower() == modality.lower()]
    if len(matching) == 1:
        return matching[0]
    listed = ", ".join(f"_{ch}" + (f" ({names[ch]})" if ch in names else "") for ch in sorted(by_channel))
    raise MddpmError(f"{images}: {len(by_channel)} channels per case ({listed}); keep one with "
                     f"--pattern '*_0000{(meta or {}).get('file_ending', '.nii.gz')}'"
                     + (" or --modality NAME (a channel name of dataset.json)" if names else ""))
