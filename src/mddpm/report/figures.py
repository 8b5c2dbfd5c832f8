"""The report's pictures as PNG bytes: pooled precision-recall curves, example cases and training
curves, computed from the maps and logs that ``metrics.json`` names (when they still exist) and
cached per ``metrics.json`` content, so that a rebuilt report does not post-process again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mddpm.errors import MddpmError
from mddpm.io import atomic_write, file_sha256, read_json, write_json
from mddpm.report.evaluations import ReportEvaluation, example_cases
from mddpm.run_folder import RunFolder
from mddpm.viz.training_curves import training_curve_figure


def cache_folder(cache_dir: Path | None, ev: ReportEvaluation) -> Path | None:
    """Where the pictures of ``ev`` are cached (None: no cache)."""
    if cache_dir is None:
        return None
    return Path(cache_dir) / file_sha256(ev.path / "metrics.json")[:20]


def pr_curve(ev: ReportEvaluation, cache_dir: Path | None, device: str) -> dict | None:
    """The pooled PR curve of an evaluation's test maps (cached), or None if the maps are gone."""
    from mddpm.evaluation.scoring import pooled_pr_curve

    cache = cache_folder(cache_dir, ev)
    if cache is not None and (cache / "pr.json").is_file():
        return read_json(cache / "pr.json")
    maps = Path(ev.metrics["test"]["maps"])
    if not (maps / "predict.json").is_file():
        return None
    try:
        curve = pooled_pr_curve(maps, device, ev.metrics["protocol"].get("postprocess"))
    except MddpmError:
        return None  # maps or prepared cache changed since the evaluation
    if cache is not None:
        write_json(cache / "pr.json", curve)
    return curve


def _render_examples(ev: ReportEvaluation, n: int, device: str) -> list[tuple[str, bytes]] | None:
    """Pictures of :func:`~mddpm.report.evaluations.example_cases` from the maps; None if the maps are gone."""
    from mddpm.evaluation.maps import open_maps
    from mddpm.evaluation.scoring import Scoring
    from mddpm.viz.cases import render_case_figure

    maps_dir = Path(ev.metrics["test"]["maps"])
    if not (maps_dir / "predict.json").is_file() or n == 0:
        return None
    try:
        maps = open_maps(maps_dir, "test")
        threshold = ev.metrics["thresholds"][ev.default_rule]["threshold"]
        scoring = Scoring.from_stored(ev.metrics["protocol"].get("postprocess"))
        out = []
        with torch.inference_mode():
            for cid, caption in example_cases(ev, n):
                score, mask, label = maps.load(cid, torch.device(device))
                score = scoring.postprocess(score, mask)
                pred = scoring.segment(score, threshold)
                image = np.asarray(maps.prepared.volume(cid)[0])
                png = render_case_figure(image, maps.reconstruction(cid), score.cpu().numpy(), pred.cpu().numpy(),
                                         label.cpu().numpy(), title=f"{cid} ({caption}, {ev.default_rule})")
                out.append((f"{cid}: {caption}", png))
        return out
    except MddpmError:
        return None


def examples(ev: ReportEvaluation, n: int, cache_dir: Path | None, device: str) -> list[tuple[str, bytes]]:
    """Example pictures (caption, PNG bytes): from the maps (cached), else the evaluation's figures."""
    cache = cache_folder(cache_dir, ev)
    index = cache / f"examples{n}.json" if cache is not None else None
    if index is not None and index.is_file():
        return [(caption, (cache / name).read_bytes()) for caption, name in read_json(index)["examples"]]
    pictures = _render_examples(ev, n, device)
    if pictures is None:
        return [(f"{p.stem} (figure of mddpm evaluate)", p.read_bytes())
                for p in sorted((ev.path / "figures").glob("*.png"))[:n]]
    if cache is not None:
        names = []
        for i, (caption, png) in enumerate(pictures):
            with atomic_write(cache / f"example{n}-{i}.png") as tmp:
                tmp.write_bytes(png)
            names.append((caption, f"example{n}-{i}.png"))
        write_json(index, {"examples": names})
    return pictures


def training_curves(evs: list[ReportEvaluation], label: str) -> bytes | None:
    """The training curve of every run of a method, from the runs' CSV logs (None when no log is left)."""
    runs = {}
    for ev in evs:
        if ev.run_label not in runs and ev.metrics.get("run"):
            runs[ev.run_label] = RunFolder(ev.metrics["run"]).read_losses()
    shown = [(run, losses) for run, losses in runs.items() if losses]
    return training_curve_figure(shown, f"{label}: training") if shown else None
