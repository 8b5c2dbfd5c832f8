"""Generator families and the test-only lesion kinds of the synthetic brains."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mddpm.data.dataset import load_dataset
from mddpm.data.synth import build as synth
from mddpm.data.synth.individual import FAMILIES, family_settings, individual_tissue
from mddpm.data.synth.unseen import UNSEEN_KINDS
from mddpm.errors import MddpmError
from mddpm.io import read_nifti


@pytest.fixture(scope="module")
def anat():
    return synth.load_anatomy(2.0)


def test_the_template_family_makes_the_cases_it_made_before_families_existed(anat):
    # sums of cases made by the generator before families and unseen kinds were added (shape, float64 sum)
    before = {"healthy": ((77, 88, 76), 164093506.00531006), "tumour": ((74, 88, 79), 79511939.11791992),
              "ms": ((69, 90, 79), 41745927.68585205)}
    for kind, (shape, total) in before.items():
        case = synth.generate_case(anat, kind, synth.case_seed(0, "train" if kind == "healthy" else f"{kind}_test", 3))
        assert case.image.shape == shape
        assert float(case.image.astype(np.float64).sum()) == pytest.approx(total, rel=1e-9)


def test_varied_subjects_have_individual_anatomy(anat):
    s = family_settings("varied")
    maps = individual_tissue(anat, np.random.default_rng(1), s)
    brain = anat.gm + anat.wm + anat.csf
    total = maps["gm"] + maps["wm"] + maps["csf"]
    assert np.abs(total - brain)[anat.mask].max() < 1e-4  # tissue moved between classes, not created
    cortex = anat.mask & (anat.depth_mm < 16) & (anat.gm > 0.3)
    assert maps["csf"][cortex].mean() > anat.csf[cortex].mean() + 0.05  # sulci carved into the cortex
    # sharper boundaries: fewer voxels of mixed tissue
    mixed = lambda m: ((m["gm"] > 0.2) & (m["gm"] < 0.8))[anat.mask].mean()  # noqa: E731
    assert mixed(maps) < mixed({"gm": anat.gm})
    template = individual_tissue(anat, np.random.default_rng(1), family_settings("template"))
    np.testing.assert_array_equal(template["gm"], anat.gm)
    with pytest.raises(ValueError, match="unknown synthetic family"):
        family_settings("nope")


def test_each_family_seeds_its_own_cases():
    assert synth.case_seed(0, "train", 0, "template") == synth.case_seed(0, "train", 0)
    assert synth.case_seed(0, "train", 0, "varied") != synth.case_seed(0, "train", 0)
    assert list(FAMILIES) == ["template", "varied"]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("kind", ("tumour", *UNSEEN_KINDS))
def test_lesion_kinds_keep_their_contrast_among_the_tissues_in_every_family(anat, kind, family):
    case = synth.generate_case(anat, kind, synth.case_seed(5, f"{kind}_test", 0, family), family_settings(family))
    lesion, brain = case.label > 0, case.mask > 0
    assert lesion.sum() >= 20 and not (lesion & ~brain).any()
    rest = case.image[brain & ~lesion]
    white_matter = np.percentile(rest, 25)
    inside = case.image[lesion].mean()
    ring = ndimage.binary_dilation(lesion, iterations=2) & ~lesion & brain
    if kind == "haemorrhage":  # a dark core: the one kind darker than white matter, with a bright rim
        assert np.percentile(case.image[lesion], 5) < 0.7 * white_matter
        assert np.percentile(case.image[lesion], 95) > 1.3 * white_matter
    elif kind == "diffuse":  # faint: above white matter but below grey matter
        assert white_matter < inside < np.percentile(rest, 75)
    elif kind == "tumour":  # a darker core inside, oedema fading outward: brighter than white matter
        assert inside > 1.3 * white_matter
    else:
        assert inside > 1.3 * white_matter and inside > case.image[ring].mean(), kind


def test_other_families_test_sets_are_the_same_subjects_as_their_own_dataset(tmp_path):
    counts = dict(n_train=1, n_val=1, n_test=0, n_tumour_val=0, n_tumour_test=1, n_ms_val=0, n_ms_test=0)
    own = synth.synthesize(tmp_path / "varied", **counts, n_rings_test=1, family="varied", workers=1)
    mixed = synth.synthesize(tmp_path / "template", **counts, n_rings_test=1, test_families=("varied", "template"),
                             workers=1)
    splits = load_dataset(mixed).splits
    assert set(splits) == {"train", "val", "test", "tumour_test", "rings_test", "varied_tumour_test",
                           "varied_rings_test"}
    for split in ("tumour_test", "rings_test"):
        a = load_dataset(own).split(split)[0]
        b = load_dataset(mixed).split(f"varied_{split}")[0]
        np.testing.assert_array_equal(read_nifti(a.image)[0], read_nifti(b.image)[0])
        np.testing.assert_array_equal(read_nifti(a.label)[0], read_nifti(b.label)[0])
    settings = load_dataset(mixed).meta["provenance"][0]["settings"]
    assert settings["family"] == "template" and settings["test_families"] == ["varied"]
    assert settings["test_family_generation"]["varied"]["tissue_sharpness"] == [1.5, 4.0]
    with pytest.raises(MddpmError, match="unknown synthetic family"):
        synth.synthesize(tmp_path / "x", **counts, family="average")
