"""The HTML report: numbers from metrics files, self-contained, pooled PR curves, and a real browser render."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from mddpm.benchmark.table import Evaluation, build_table
from mddpm.errors import MddpmError
from mddpm.report.html import write_report
from mddpm.report.table_files import table_markdown

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def make_metrics(method: str, split: str, dice: list[float], auprc: list[float], run: str = "run0",
                 maps: str = "/nonexistent/maps") -> dict:
    """A metrics.json as ``mddpm evaluate`` writes it, for cases with the given per-volume scores."""
    cases = []
    for i, (d, a) in enumerate(zip(dice, auprc)):
        rules = {"bisection": {"dice": d}, "exact": {"dice": min(1.0, d + 0.01)}}
        cases.append({"case_id": f"case{i:02d}", "lesion_voxels": 100 + i, "auprc": a, "auroc": 0.9,
                      "oracle_dice_bisection": min(1.0, d + 0.1), "rules": rules})

    def stat(values):
        arr = np.asarray(values, dtype=np.float64)
        return {"mean": float(arr.mean()), "std": float(arr.std()), "n": int(arr.size)}

    return {
        "format": "mddpm-metrics", "format_version": 1, "created": "2026-01-01T00:00:00+00:00",
        "test": {"maps": maps, "split": split, "cases": len(cases), "dataset": "/data/phantom"},
        "val": {"maps": maps, "split": split.replace("test", "val"), "cases": 2},
        "protocol": {"postprocess": {"median_filter": {"kernel": 5}}},
        "default_rule": "bisection",
        "thresholds": {"bisection": {"rule": "bisection", "threshold": 0.25, "dice": 0.5, "steps": []},
                       "exact": {"rule": "exact", "threshold": 0.27, "dice": 0.52}},
        "aggregate": {"auprc": stat(auprc), "auroc": stat([0.9] * len(dice)),
                      "oracle_dice_bisection": stat([c["oracle_dice_bisection"] for c in cases]),
                      "rules": {r: {"dice": stat([c["rules"][r]["dice"] for c in cases])}
                                for r in ("bisection", "exact")}},
        "cases": cases,
        "run": f"/runs/{method}/{run}", "config": {"method": method, "preset": "demo", "model": {"width": 8},
                                                  "train": {"max_steps": 1200, "batch_size": 16}},
        "predict_settings": {"precision": "32"},
    }


def small_png() -> bytes:
    fig = Figure(figsize=(3, 1))
    ax = fig.subplots()
    ax.imshow(np.arange(64, dtype=float).reshape(8, 8))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_evaluation(folder: Path, metrics: dict, figures: int = 1) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    for i in range(figures):
        (folder / "figures").mkdir(exist_ok=True)
        (folder / "figures" / f"case{i:02d}.png").write_bytes(small_png())
    return folder


@pytest.fixture
def two_methods(tmp_path) -> tuple[list[Path], dict]:
    """Evaluation folders of methods "alpha" and "beta" (2 runs each) and their benchmark table."""
    folders, evaluations = [], []
    scores = {"alpha": ([0.5, 0.6, 0.7], [0.4, 0.5, 0.6]), "beta": ([0.3, 0.35, 0.2], [0.2, 0.3, 0.25])}
    for method, (dice, auprc) in scores.items():
        for r, shift in (("seed1", 0.0), ("seed2", 0.02)):
            m = make_metrics(method, "tumour_test", [d + shift for d in dice], auprc, run=r)
            folder = write_evaluation(tmp_path / method / r, m)
            folders.append(folder)
            evaluations.append(Evaluation("synth", "tumour", method, r, m, folder))
    table = build_table(evaluations, ["alpha", "beta"], reference="alpha", labels={"alpha": "Alpha model"},
                        extra_rows=["beta"])
    return folders, table


def assert_self_contained(text: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"https?://", text)
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    srcs = re.findall(r"""<img[^>]*\bsrc="([^"]*)\"""", text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_single_evaluation_report_shows_its_numbers(tmp_path):
    m = make_metrics("alpha", "tumour_test", [0.5, 0.7], [0.4, 0.6])
    folder = write_evaluation(tmp_path / "eval", m, figures=2)
    out = write_report(tmp_path / "r" / "report.html", [folder], "Demo")
    text = out.read_text()
    assert_self_contained(text)
    assert "<table" in text and "Demo" in text
    assert "60.00" in text and "± 10.00" in text  # DICE 0.6 ± 0.1 over volumes, in %
    assert "61.00" in text  # exact rule, side by side
    assert "50.00" in text  # AUPRC
    assert "ORACLE" in text and "oracle" in text
    assert text.count("<img") == 2  # the evaluation's figures (no maps to draw from)
    assert "&#34;width&#34;: 8" in text  # configuration JSON, escaped (jinja2)
    assert "Trained here: preset demo, 1,200 steps of batch 16." in text


def test_report_describes_the_registered_preset(tmp_path):
    folder = write_evaluation(tmp_path / "eval", make_metrics("mddpm-fpmcm", "tumour_test", [0.5], [0.4]), figures=0)
    text = write_report(tmp_path / "report.html", [folder], "Demo").read_text()
    assert "Trained here: preset demo, 1,200 steps of batch 16 (the preset: CPU-sized" in text
    assert "train_t_band=[399, 599]" in text


def test_training_curve_of_every_run_is_drawn_from_its_csv_log(tmp_path):
    folders = []
    for run in ("seed1", "seed2"):
        m = make_metrics("alpha", "tumour_test", [0.5, 0.7], [0.4, 0.6], run=run)
        m["run"] = str(tmp_path / "runs" / run)
        log = tmp_path / "runs" / run / "logs" / "csv" / "metrics.csv"
        log.parent.mkdir(parents=True)
        log.write_text("epoch,step,train/loss,val/loss\n0,0,0.5,\n0,1,0.3,\n0,1,,0.2\n")  # Lightning's layout
        folders.append(write_evaluation(tmp_path / "eval" / run, m))
    text = write_report(tmp_path / "report.html", folders, "Demo").read_text()
    assert text.count('alt="training alpha"') == 1 and "RUN/logs/csv/metrics.csv" in text  # both runs, one figure
    for run in ("seed1", "seed2"):
        (tmp_path / "runs" / run / "logs" / "csv" / "metrics.csv").unlink()
    assert 'alt="training' not in write_report(tmp_path / "none.html", folders, "Demo").read_text()


def test_benchmark_report_has_table1_and_p_values(two_methods, tmp_path):
    folders, table = two_methods
    text = write_report(tmp_path / "report.html", folders, "Bench", table=table).read_text()
    assert_self_contained(text)
    assert "Alpha model" in text and "reference" in text
    assert "Not rows of the paper" in text
    p = table["rows"][1]["cells"]["synth/tumour"]["p_dice"]["p"]
    assert f"p {p:.2f}" in text
    dice = table["rows"][0]["cells"]["synth/tumour"]["dice"]
    assert f"{100 * dice['mean']:.2f}" in text and f"± {100 * dice['std']:.2f}" in text


def test_oracle_is_named_for_what_it_is_and_few_pairs_give_no_p_value(tmp_path):
    """The ORACLE column is the bisection search on the test labels (no upper bound); 2 pairs give no p."""
    folders, evaluations = [], []
    for method, dice in (("alpha", [0.5, 0.6]), ("beta", [0.2, 0.3])):
        m = make_metrics(method, "tumour_test", dice, [0.4, 0.5])
        folders.append(write_evaluation(tmp_path / method, m))
        evaluations.append(Evaluation("synth", "tumour", method, "seed1", m, folders[-1]))
    table = build_table(evaluations, ["alpha", "beta"], reference="alpha")
    test = table["rows"][1]["cells"]["synth/tumour"]["p_dice"]
    assert test["n_pairs"] == 2 and test["p"] is None and "fewer than 6 pairs" in test["note"]
    text = write_report(tmp_path / "report.html", folders, "Bench", table=table).read_text()
    md = table_markdown(table)
    for shown in (text, md):
        assert "an upper bound" not in shown and "ORACLE best" not in shown
        assert "bisection search run on each test volume" in shown and "no upper bound" in shown
        assert "No p (–) from fewer than 6 pairs" in shown
    assert "| beta | – (-30.00) | – (+0.00) | 2 |" in md and "ORACLE bisection Dice" in md
    assert "p 0.50" not in text and "Δ -30.00" in text and "bisection DICE" in text


def test_report_refuses_no_evaluations_and_foreign_files(tmp_path):
    with pytest.raises(MddpmError):
        write_report(tmp_path / "r.html", [], "x")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "metrics.json").write_text("{}")
    with pytest.raises(MddpmError, match="metrics.json"):
        write_report(tmp_path / "r.html", [tmp_path / "e"], "x")
    assert not (tmp_path / "r.html").exists()


_PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const d = document.createElement('div');
  d.id = 'probe';
  d.setAttribute('data-images', imgs.length);
  d.setAttribute('data-decoded', imgs.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length);
  d.setAttribute('data-tables', document.querySelectorAll('table').length);
  d.setAttribute('data-rows', document.querySelectorAll('table tbody tr').length);
  document.body.appendChild(d);
});
</script>"""


def test_report_renders_in_headless_chromium(browser, two_methods, tmp_path):
    folders, table = two_methods
    report = write_report(tmp_path / "report.html", folders, "Browser check", table=table)
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", _PROBE + "</body>"))
    flags = BROWSER_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]

    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'<div id="probe" data-images="(\d+)" data-decoded="(\d+)" data-tables="(\d+)" data-rows="(\d+)"',
                      dom.stdout)
    assert found, f"no probe in the rendered DOM (rc {dom.returncode}): {dom.stderr[-500:]}"
    images, decoded, tables, rows = map(int, found.groups())
    assert images == report.read_text().count("<img") and images >= 2
    assert decoded == images
    assert tables >= 2 and rows >= 4

    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, "--window-size=1280,1600", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(data))
    assert pixels.shape[:2] == (1600, 1280) and pixels.std() > 0.01  # not a blank page
