"""Pictures of mddpm.viz: PNG bytes that decode to the promised size, overlays, case, curve and montage figures."""

from __future__ import annotations

import base64
import io

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from mddpm.data.dataset import Case, load_dataset
from mddpm.errors import MddpmError
from mddpm.viz import pr_curves, training_curves
from mddpm.viz.cases import lesion_slice, render_case_figure
from mddpm.viz.montage import _pick_slices, _select_cases, preview_montage
from mddpm.viz.overlay import overlay_slices, save_overlay
from mddpm.viz.png import img_tag, png_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    return matplotlib.image.imread(io.BytesIO(png))


def _captured(monkeypatch, module) -> list[Figure]:
    """Keep the figures ``module`` turns into PNG bytes, to look at their axes."""
    figures: list[Figure] = []

    def keep(fig, dpi=110):
        figures.append(fig)
        return png_bytes(fig, dpi)

    monkeypatch.setattr(module, "png_bytes", keep)
    return figures


# --- png.py --------------------------------------------------------------------------------------------------


def _line_figure(y) -> Figure:
    fig = Figure(figsize=(2.0, 1.0))
    fig.subplots().plot([0, 1], y)
    return fig


def test_png_bytes_decode_to_figure_size_and_are_reproducible():
    png = png_bytes(_line_figure([0, 1]), dpi=50)
    assert _decode(png).shape == (50, 100, 4)  # 2 x 1 inches at 50 dpi, RGBA
    assert b"Software" not in png  # no software tag ...
    assert png_bytes(_line_figure([0, 1]), dpi=50) == png  # ... so the same figure gives the same bytes
    assert png_bytes(_line_figure([1, 0]), dpi=50) != png


def test_img_tag_holds_the_png_inline_and_escapes_the_alt_text():
    png = png_bytes(_line_figure([0, 1]), dpi=20)
    tag = img_tag(png, 'a "quoted" <b>&')
    prefix = '<img src="data:image/png;base64,'
    assert tag.startswith(prefix)
    encoded = tag[len(prefix):tag.index('"', len(prefix))]
    assert base64.b64decode(encoded) == png
    assert tag.endswith('alt="a &quot;quoted&quot; &lt;b&gt;&amp;">')


# --- cases.py ------------------------------------------------------------------------------------------------


def test_lesion_slice_prefers_the_lesion_then_the_scores_then_the_middle():
    label = np.zeros((10, 4, 4), bool)
    label[[2, 3, 7], 1, 1] = True
    assert lesion_slice(label) == 3  # the middle of the slices holding lesion voxels
    scores = np.zeros((10, 4, 4))
    scores[6] = 0.1
    scores[8, 0, 0] = 5.0  # highest total score
    assert lesion_slice(np.zeros_like(label), scores) == 8
    assert lesion_slice(np.zeros_like(label), np.zeros_like(scores)) == 5
    assert lesion_slice(np.zeros((9, 4, 4), bool)) == 4


def _case_volumes():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (6, 12, 12)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[4, 3:6, 3:6] = 1
    amap = np.where(label > 0, 2.0, 0.1).astype(np.float32)
    return image, image * 0.9, amap, (amap > 1).astype(np.uint8), label


def test_case_figure_is_a_png_of_five_panels_on_the_lesion_slice():
    image, recon, amap, pred, label = _case_volumes()
    png = render_case_figure(image, recon, amap, pred, label, title="case001")
    assert _decode(png).shape[:2] == (340, 1500)  # five 3-inch panels, 3.4 inches high, at 100 dpi
    assert render_case_figure(image, recon, amap, pred, label, title="case001", z=4) == png  # default z: the lesion
    assert render_case_figure(image, recon, amap, pred, label, title="case001", z=1) != png


def test_case_figure_without_reconstruction_or_scores_still_renders():
    image, _, amap, pred, label = _case_volumes()
    png = render_case_figure(image, None, np.zeros_like(amap), np.zeros_like(pred), np.zeros_like(label))
    assert _decode(png).shape[:2] == (340, 1500)
    assert png != render_case_figure(image, image, np.zeros_like(amap), np.zeros_like(pred), np.zeros_like(label))


# --- overlay.py ----------------------------------------------------------------------------------------------


@pytest.fixture
def scan():
    """A random grey scan [X, Y, Z], its brain (slices 1-6) and an empty segmentation."""
    image = np.random.default_rng(1).uniform(0.2, 0.8, (16, 16, 8)).astype(np.float32)
    brain = np.zeros(image.shape, bool)
    brain[:, :, 1:7] = True
    return image, brain, np.zeros(image.shape, bool)


def _overlay(tmp_path, name, scan, score, unscored=0.0) -> np.ndarray:
    image, brain, seg = scan
    save_overlay(tmp_path / name, image, brain, score, seg, np.eye(4), unscored_fraction=unscored)
    return matplotlib.image.imread(tmp_path / name)


def test_overlay_colours_scored_voxels_and_leaves_the_rest_grey(tmp_path, scan):
    image, brain, seg = scan
    base = np.zeros(image.shape, np.float32)
    base[0, 0, 0] = 1.0  # on a slice not shown: both pictures share the colour scale 0..1
    scored = base.copy()
    scored[4:8, 4:8, 1:7] = 0.5
    plain, coloured = _overlay(tmp_path, "plain.png", scan, base), _overlay(tmp_path, "scored.png", scan, scored)
    assert plain.shape == (320, 260 * len(overlay_slices(brain, seg)), 4)  # 2.6 x 3.2 inches per slice at 100 dpi
    changed = (plain != coloured).any(axis=-1)
    assert 0 < changed.mean() < 0.1  # only where the scored voxels are drawn
    before, after = plain[changed], coloured[changed]
    assert np.allclose(before[:, 0], before[:, 1]) and np.allclose(before[:, 1], before[:, 2])  # grey scan
    assert (after[:, 0] - after[:, 2] > 0.3).all()  # "hot" colour map: red over blue

    unscored = scored.copy()
    unscored[4:8, 4:8, 1:7] = np.nan  # NaN: outside the model grid, left uncoloured
    np.testing.assert_array_equal(_overlay(tmp_path, "nan.png", scan, unscored), plain)


def test_overlay_title_warns_of_an_unscored_share_in_red(tmp_path, scan):
    score = np.zeros(scan[0].shape, np.float32)
    plain, warned = _overlay(tmp_path, "a.png", scan, score), _overlay(tmp_path, "b.png", scan, score, 0.25)
    changed = (plain != warned).any(axis=-1)
    rows = np.flatnonzero(changed.any(axis=1))
    assert rows.size and rows.max() < 0.16 * plain.shape[0]  # in the title band above the panels (top=0.84)
    red = warned[changed]
    assert (red[:, 0] > red[:, 1]).all()


# --- pr_curves.py --------------------------------------------------------------------------------------------


def _curve(top: float, ap: float) -> dict:
    return {"recall": [0.0, 0.5, 1.0], "precision": [top, top / 2, top / 4], "ap": ap}


def test_pr_figure_of_no_curves_is_an_empty_chart(monkeypatch):
    figures = _captured(monkeypatch, pr_curves)
    png = pr_curves.pr_figure([], "PR")
    assert _decode(png).shape[:2] == (440, 660)  # 6 x 4 inches at 110 dpi, no legend rows
    ax = figures[0].axes[0]
    assert ax.get_title() == "PR" and ax.get_legend() is None and ax.get_ylim() == (0, 1.02)
    # curves without points (or missing) are left out: the same picture
    assert pr_curves.pr_figure([("a", {"recall": [], "precision": [], "ap": 0.0}), ("b", None)], "PR") == png


def test_pr_figure_labels_dashes_and_zooms(monkeypatch):
    figures = _captured(monkeypatch, pr_curves)
    curves = [("a", _curve(0.8, 0.41234)), ("b", _curve(0.6, 0.2)), ("c", _curve(0.4, 0.1))]
    png = pr_curves.pr_figure(curves, "PR", dashed={"b"})
    ax = figures[-1].axes[0]
    assert _decode(png).shape[1] == 660 and _decode(png).shape[0] > 440  # a taller figure for the legend rows
    assert ax.get_title() == "PR (AP: pooled)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a · AP 0.412", "b · AP 0.2", "c · AP 0.1"]
    assert [line.get_linestyle() for line in ax.get_lines()] == ["-", "--", "-"]
    assert ax.get_ylim() == (0, 1.02) and "zoomed" not in ax.get_ylabel()

    pr_curves.pr_figure([("low", _curve(0.2, 0.05))], "PR")  # every precision below 0.25
    ax = figures[-1].axes[0]
    assert ax.get_ylim() == pytest.approx((0, 0.2 * 1.08)) and ax.get_ylabel() == "precision (axis zoomed)"


# --- training_curves.py --------------------------------------------------------------------------------------


def test_training_curves_use_a_log_axis_only_for_a_wide_positive_span(monkeypatch):
    figures = _captured(monkeypatch, training_curves)
    wide = {"train/loss": [(0, 100.0), (1, 10.0), (2, 1.0)], "val/loss": [(2, 2.0)]}
    png = training_curves.training_curve_figure([("run", wide)], "losses")
    assert _decode(png).shape[:2] == (374, 660)  # 6 x 3.4 inches at 110 dpi
    ax = figures[-1].axes[0]
    assert ax.get_yscale() == "log" and ax.get_title() == "losses"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training", "validation"]  # one run: no names

    narrow = {"train/loss": [(0, 10.0), (1, 1.0)], "val/loss": [(1, float("nan"))]}  # NaN does not widen the span
    training_curves.training_curve_figure([("run", narrow)], "losses")
    assert figures[-1].axes[0].get_yscale() == "linear"
    with_zero = {"train/loss": [(0, 100.0), (1, 0.0)]}  # a zero loss has no logarithm
    training_curves.training_curve_figure([("run", with_zero)], "losses")
    assert figures[-1].axes[0].get_yscale() == "linear"


@pytest.mark.filterwarnings("error:No artists with labels found")  # an empty chart draws no empty legend
def test_training_curves_name_runs_and_accept_no_losses(monkeypatch):
    figures = _captured(monkeypatch, training_curves)
    runs = [("a", {"train/loss": [(0, 1.0)]}), ("b", {"train/loss": [(0, 2.0)], "val/loss": [(0, 1.5)]}),
            ("c", {})]
    training_curves.training_curve_figure(runs, "losses")
    labels = [t.get_text() for t in figures[-1].axes[0].get_legend().get_texts()]
    assert labels == ["a: training", "b: training", "b: validation"]
    assert _decode(training_curves.training_curve_figure([], "nothing yet")).shape[:2] == (374, 660)
    assert figures[-1].axes[0].get_legend() is None


# --- montage.py ----------------------------------------------------------------------------------------------


def test_montage_slices_follow_the_lesion_else_span_the_brain():
    label = np.zeros((4, 4, 20), bool)
    label[0, 0, 10] = label[:2, 0, 11] = label[:3, 0, 12] = label[0, 0, 5] = True  # areas: z12 > z11 > z10 = z5
    assert _pick_slices(np.ones_like(label), label, 3) == [5, 10, 12]  # z11 is next to z12: skipped
    assert _pick_slices(np.ones_like(label), label, 10) == [5, 10, 12]  # no more slices than lesion slices
    mask = np.zeros((4, 4, 20), bool)
    mask[:, :, 4:15] = True  # brain from z=4 to z=14
    assert _pick_slices(mask, None, 4) == [round(4 + f * 10) for f in np.linspace(0.35, 0.8, 4)]


def test_montage_picks_healthy_cases_first_then_each_group():
    def case(i, role, group=None):
        return Case(f"c{i}", role, None, None, group=group)

    cases = [case(1, "anomalous", "ms"), case(2, "healthy"), case(3, "anomalous", "tumour"), case(4, "healthy"),
             case(5, "anomalous", "ms"), case(6, "anomalous"), case(7, "healthy"), case(8, "anomalous", "ms")]
    assert [c.id for c in _select_cases(cases, 2)] == ["c2", "c4", "c1", "c5", "c3", "c6"]


def test_montage_is_a_png_with_one_row_per_case(phantom_dataset, tmp_path):
    path = preview_montage(phantom_dataset, tmp_path / "out" / "m.png", n=1, slices=2)
    picture = matplotlib.image.imread(path)
    rows = len(_select_cases(list(load_dataset(phantom_dataset).cases.values()), 1))
    assert picture.shape[:2] == (round(2.0 * rows * 110), round(1.9 * 2 * 110))
    assert np.allclose(picture[0, 0, :3], 0)  # black background
    with pytest.raises(MddpmError, match="need at least one case and one slice"):
        preview_montage(phantom_dataset, tmp_path / "none.png", n=0)
    assert not (tmp_path / "none.png").exists()
