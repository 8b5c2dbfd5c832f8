"""The cases of ``mddpm preprocess``: each scan of the input folder with its brain mask and lesion label.

The folder's layout (plain, nnU-Net raw, BIDS) is told and read by :mod:`mddpm.preprocess.layout`; here the
scans, masks and labels are paired by case id, and a case that cannot run becomes one problem line naming
its file.
"""

from __future__ import annotations

from pathlib import Path

from mddpm.io import case_id_problem
from mddpm.preprocess.layout import Inputs, find_inputs, index_folder
from mddpm.preprocess.settings import CaseInputs


def find_cases(input_dir: str | Path, pattern: str | None = None, masks_dir: str | Path | None = None,
               labels_dir: str | Path | None = None, role: str | None = None,
               inputs: Inputs | None = None) -> tuple[list[CaseInputs], list[str]]:
    """Scans in ``input_dir`` (matching ``pattern``, any supported format; a plain folder or the nnU-Net raw
    layout, :mod:`mddpm.preprocess.layout`), each with the mask and label of the same case id. Returns
    ``(cases, problems)``: a problem is a case that cannot run (its mask file missing, an id used twice),
    one line each naming the file. ``inputs``: :func:`find_inputs`'s answer when the caller has it."""
    inputs = inputs or find_inputs(input_dir, labels_dir, pattern, role)
    scans, labels = inputs.scans, inputs.labels
    masks = index_folder(Path(masks_dir), "masks") if masks_dir else None
    cases, problems = [], []
    for cid, paths in scans.items():
        problem = case_id_problem(cid)
        if problem:
            problems.append(f"{paths[0]}: case id {cid!r} {problem}")
            continue
        if len(paths) > 1:
            problems.append(f"{paths[0]}: case id {cid!r} is used by {len(paths)} files "
                            f"({', '.join(p.name for p in paths)})")
            continue
        mask = label = None
        if masks is not None:
            if cid not in masks:
                problems.append(f"{paths[0]}: no brain mask {Path(masks_dir) / (cid + '.nii.gz')} (or .nii/.nrrd/.mha)")
                continue
            if len(masks[cid]) > 1:
                problems.append(f"{masks[cid][0]}: several mask files for case {cid!r}")
                continue
            mask = masks[cid][0]
        if cid in labels:
            if len(labels[cid]) > 1:
                problems.append(f"{labels[cid][0]}: several label files for case {cid!r}")
                continue
            label = labels[cid][0]
        cases.append(CaseInputs(cid, paths[0], mask, label))
    return cases, problems


def labelled_cases(cases: list[CaseInputs], labels_dir: str | Path | None) -> tuple[list[CaseInputs], list[str]]:
    """Role anomalous: ``(the cases with a label, one problem line for each case without one)``."""
    problems = [f"{c.image}: no label for this case in {labels_dir or 'the labels folder'} (role anomalous)"
                for c in cases if c.label is None]
    return [c for c in cases if c.label is not None], problems
