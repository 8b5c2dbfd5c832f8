"""The report's pictures, as ``mddpm evaluate`` stored them: the pooled precision-recall curve
(``pr.json``), example cases (``examples/``, else the evaluation's ``figures/``) and, from the runs'
CSV logs, training curves. Nothing is post-processed or thresholded again here."""

from __future__ import annotations

from mddpm.errors import MddpmError
from mddpm.io import read_json
from mddpm.report.evaluations import ReportEvaluation
from mddpm.run_folder import RunFolder
from mddpm.viz.training_curves import training_curve_figure


def pr_curve(ev: ReportEvaluation) -> dict | None:
    """The pooled PR curve evaluate stored, or None (an evaluation written before ``pr.json`` existed)."""
    path = ev.path / "pr.json"
    return read_json(path) if path.is_file() else None


def examples(ev: ReportEvaluation, n: int) -> list[tuple[str, bytes]]:
    """At most ``n`` example pictures (caption, PNG bytes): evaluate's ``examples/``, else its ``figures/``."""
    index = ev.path / "examples" / "examples.json"
    if index.is_file():
        try:
            listed = read_json(index)["examples"][:n]
            return [(f"{e['case_id']}: {e['caption']}", (index.parent / e["file"]).read_bytes()) for e in listed]
        except (MddpmError, KeyError, TypeError, OSError):
            pass  # an edited or half-copied folder: fall back to the figures
    return [(f"{p.stem} (figure of mddpm evaluate)", p.read_bytes())
            for p in sorted((ev.path / "figures").glob("*.png"))[:n]]


def training_curves(evs: list[ReportEvaluation], label: str) -> bytes | None:
    """The training curve of every run of a method, from the runs' CSV logs (None when no log is left)."""
    runs = {}
    for ev in evs:
        if ev.run_label not in runs and ev.metrics.get("run"):
            runs[ev.run_label] = RunFolder(ev.metrics["run"]).read_losses()
    shown = [(run, losses) for run, losses in runs.items() if losses]
    return training_curve_figure(shown, f"{label}: training") if shown else None
