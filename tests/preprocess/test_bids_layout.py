"""A BIDS tree as ``mddpm preprocess`` input: the scans of one suffix, lesion masks from derivatives/."""

from __future__ import annotations

from pathlib import Path

import pytest

from mddpm.errors import MddpmError
from mddpm.preprocess.layout import find_inputs


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_bids_scans_sessions_and_lesion_masks_from_derivatives(tmp_path):
    _touch(tmp_path, "dataset_description.json", "participants.tsv",
           "sub-01/anat/sub-01_T2w.nii.gz", "sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_T2w.json",
           "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz", "sub-02/ses-2/anat/sub-02_ses-2_T2w.nii.gz",
           "sub-03/anat/sub-03_FLAIR.nii.gz",
           "derivatives/lesions/sub-02/ses-2/anat/sub-02_ses-2_space-orig_label-lesion_mask.nii.gz",
           "derivatives/lesions/sub-01/anat/sub-01_desc-brain_mask.nii.gz")  # a brain mask is no lesion mask
    found = find_inputs(tmp_path)
    assert {cid: [p.name for p in ps] for cid, ps in found.scans.items()} == {
        "sub-01": ["sub-01_T2w.nii.gz"], "sub-02_ses-1": ["sub-02_ses-1_T2w.nii.gz"],
        "sub-02_ses-2": ["sub-02_ses-2_T2w.nii.gz"]}
    assert {cid: [p.name for p in ps] for cid, ps in found.labels.items()} == {
        "sub-02_ses-2": ["sub-02_ses-2_space-orig_label-lesion_mask.nii.gz"]}
    assert list(find_inputs(tmp_path, modality="FLAIR").scans) == ["sub-03"]
    with pytest.raises(MddpmError, match=r"a BIDS tree without PD scans .* --modality"):
        find_inputs(tmp_path, modality="PD")
    with pytest.raises(MddpmError, match="takes its lesion masks from derivatives"):
        find_inputs(tmp_path, labels_dir=tmp_path / "derivatives")


def test_a_lesion_mask_shared_by_two_scans_of_a_session_is_refused(tmp_path):
    _touch(tmp_path, "sub-01/anat/sub-01_acq-a_T2w.nii.gz", "sub-01/anat/sub-01_acq-b_T2w.nii.gz",
           "derivatives/x/sub-01/anat/sub-01_label-lesion_mask.nii.gz")
    with pytest.raises(MddpmError, match="lesion mask matches 2 T2w scans of its subject and session"):
        find_inputs(tmp_path)
    (tmp_path / "derivatives/x/sub-01/anat/sub-01_label-lesion_mask.nii.gz").rename(
        tmp_path / "derivatives/x/sub-01/anat/sub-01_acq-b_label-lesion_mask.nii.gz")
    assert list(find_inputs(tmp_path).labels) == ["sub-01_acq-b"]
