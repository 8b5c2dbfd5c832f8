"""Lesion sizes of a test set against the post-processing's, measured on the prepared labels."""

from __future__ import annotations

import numpy as np
import pytest

from mddpm.data.cache import load_prepared
from mddpm.data.dataset import load_dataset
from mddpm.data.prepare import prepare_dataset
from mddpm.data.synth.phantom import make_phantom_dataset
from mddpm.evaluation.lesion_scale import lesion_scale


@pytest.fixture(scope="module")
def phantom_test_set(tmp_path_factory):
    """metrics.json-like contents for the phantom's lesion_test split (one blob lesion per volume, 4 mm grid)."""
    phantom_dataset = make_phantom_dataset(tmp_path_factory.mktemp("scale") / "phantom")
    prepared = prepare_dataset(phantom_dataset, "demo", workers=1, progress=False)
    cache = load_prepared(prepared)
    ids = [c.id for c in load_dataset(phantom_dataset).split("lesion_test")]
    sums = [int((cache.labels[cache.index(cid)] > 0).sum()) for cid in ids]
    metrics = {"test": {"prepared": str(prepared)},
               "cases": [{"case_id": cid, "lesion_voxels": n} for cid, n in zip(ids, sums)]}
    return metrics, sums


def _with_postprocess(metrics: dict, kernel: int, removed: int) -> dict:
    return {**metrics, "protocol": {"postprocess": {"median_filter": {"kernel": kernel},
                                                    "components": {"removed_if_voxels_at_most": removed}}}}


def test_sizes_are_measured_per_lesion_on_the_model_grid(phantom_test_set):
    metrics, sums = phantom_test_set
    scale = lesion_scale(_with_postprocess(metrics, kernel=5, removed=7))
    assert scale.volumes == len(sums) == scale.lesions  # one blob per volume
    assert scale.median_voxels == np.median(sums)
    assert scale.voxel_mm == (4.0, 4.0, 4.0) and scale.grid == (48, 48, 25)
    assert f"{np.median(sums) * 64:,.0f} mm³" in scale.sentence()


def test_low_numbers_are_explained_only_when_typical_lesions_are_that_small(phantom_test_set):
    metrics, sums = phantom_test_set
    assert 0 < np.median(sums) < 62  # blobs under half of a 5³ median window
    erased = lesion_scale(_with_postprocess(metrics, kernel=5, removed=7))
    assert erased.typical_lesion_is_erased and "low Dice and AUPRC are expected" in erased.sentence()
    kept = lesion_scale(_with_postprocess(metrics, kernel=1, removed=0))
    assert not kept.typical_lesion_is_erased and "expected" not in kept.sentence()


def test_no_line_without_the_prepared_cache_or_lesions(phantom_test_set, tmp_path):
    metrics, _ = phantom_test_set
    assert lesion_scale({**metrics, "test": {"prepared": str(tmp_path / "gone")}}) is None
    assert lesion_scale({**metrics, "cases": [{**c, "lesion_voxels": 0} for c in metrics["cases"]]}) is None
