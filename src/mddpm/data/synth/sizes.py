"""Named sizes of a synthetic dataset (set counts and voxel spacing) and the names of the generator families
(light: the CLI reads it to build --help; the families' settings are in synth_individual.py)."""

from __future__ import annotations

FAMILY_NAMES = ("template", "varied")
# what the demo trains on: for mDDPM (FPM-CM) at the demo budget, training on `varied` lost more on template
# brains than it gained on varied ones (benchmarks/results/generalisation.md); the demo tests the other family
DEMO_FAMILY = "template"
COUNT_ARGS = ["n_train", "n_val", "n_test", "n_tumour_val", "n_tumour_test", "n_ms_val", "n_ms_test",
              "n_infarct_test", "n_haemorrhage_test", "n_rings_test", "n_diffuse_test"]
UNSEEN_8 = dict(n_infarct_test=8, n_haemorrhage_test=8, n_rings_test=8, n_diffuse_test=8)

# Named sizes: set counts and voxel spacing (mm). "paper-like" mirrors the published splits
# (IXI fold-0 train/val, IXI test, BraTS21 val, MSLUB val/test) except BraTS test (1151 there).
SIZES: dict[str, dict] = {
    "small": dict(n_train=4, n_val=2, n_test=1, n_tumour_val=2, n_tumour_test=2, n_ms_val=2, n_ms_test=2,
                  spacing_mm=2.0),
    "demo": dict(n_train=40, n_val=8, n_test=8, n_tumour_val=8, n_tumour_test=16, n_ms_val=8, n_ms_test=16,
                 spacing_mm=2.0),
    # the demo's sets plus eight cases of each test-only lesion kind
    "demo-unseen": dict(n_train=40, n_val=8, n_test=8, n_tumour_val=8, n_tumour_test=16, n_ms_val=8, n_ms_test=16,
                        spacing_mm=2.0, **UNSEEN_8),
    # four times the demo's training brains (generation is cheap; a training's steps stay the same)
    "demo-large": dict(n_train=160, n_val=8, n_test=8, n_tumour_val=8, n_tumour_test=16, n_ms_val=8, n_ms_test=16,
                       spacing_mm=2.0, **UNSEEN_8),
    "paper-like": dict(n_train=385, n_val=44, n_test=158, n_tumour_val=100, n_tumour_test=300, n_ms_val=10,
                       n_ms_test=20, spacing_mm=1.0),
}
