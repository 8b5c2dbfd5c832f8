"""The evaluations a report shows: ``metrics.json`` folders with their display names, and what is
read from them (example cases, the run's configuration, its training summary)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mddpm.errors import MddpmError
from mddpm.io import read_json
from mddpm.methods import all_methods


@dataclass
class ReportEvaluation:
    """An evaluation folder with its metrics and display names."""

    path: Path
    metrics: dict
    method: str
    label: str
    test_set: str
    run: str
    dataset: str

    @property
    def rules(self) -> list[str]:
        return list(self.metrics.get("thresholds", {}))

    @property
    def default_rule(self) -> str:
        return self.metrics.get("default_rule", "bisection")

    @property
    def column(self) -> str:
        return f"{self.dataset}/{self.test_set}"

    @property
    def run_label(self) -> str:
        """"run seed3141" for a run folder named seed3141; a folder already named run… as it is."""
        return self.run if self.run.lower().startswith("run") else f"run {self.run}"


def load_evaluations(folders: list, table: dict | None, labels: dict[str, str]) -> list[ReportEvaluation]:
    """Read every folder's ``metrics.json``; names come from the benchmark ``table`` when it lists the
    folder, else from the metrics (method of its config, test split, run folder, dataset folder)."""
    named = {str(Path(e["path"]).resolve()): e for e in (table or {}).get("evaluations", []) if e.get("path")}
    out = []
    for folder in folders:
        folder = Path(folder).resolve()
        metrics = read_json(folder / "metrics.json")
        if metrics.get("format") != "mddpm-metrics":
            raise MddpmError(f"{folder / 'metrics.json'}: not a metrics file of mddpm evaluate")
        config = metrics.get("config") or {}
        info = named.get(str(folder))
        if info:
            method, test_set, run, dataset = info["method"], info["test_set"], info["run"], info["dataset"]
        else:
            method = config.get("method", "?")
            test_set = metrics["test"].get("split", "?")
            run = Path(metrics["run"]).name if metrics.get("run") else folder.name
            dataset = Path(metrics["test"].get("dataset") or "").name or "data"
        out.append(ReportEvaluation(folder, metrics, method, labels.get(method, method), test_set, run, dataset))
    return out


def run_config(ev: ReportEvaluation) -> dict:
    """What the report shows as a run's configuration."""
    m = ev.metrics
    return {"config": m.get("config"), "predict_settings": m.get("predict_settings"), "run": m.get("run"),
            "test": m.get("test"), "val": m.get("val"), "healthy_val": m.get("healthy_val"),
            "thresholds": {r: {k: v for k, v in t.items() if k != "steps"} for r, t in m.get("thresholds", {}).items()},
            "evaluation": str(ev.path)}


def training_summary(config: dict) -> str:
    """"preset demo, 800 steps of batch 16 (the preset: ...)" from a run's resolved config, with the
    registered preset's description ('' when it has no training)."""
    train = config.get("train") or {}
    if not train.get("max_steps"):
        return ""
    summary = (f"preset {config.get('preset', '?')}, {train['max_steps']:,} steps of batch "
               f"{train.get('batch_size', '?')}")
    spec = all_methods().get(config.get("method"))
    about = spec.presets.get(config.get("preset"), {}).get("about") if spec else None
    return f"{summary} (the preset: {about})" if about else summary


def method_description(method: str) -> str:
    spec = all_methods().get(method)
    return spec.description if spec else ""
