"""The stages of a benchmark (train, predict, evaluate per dataset × method × run), where each lives,
and whether it is done: resume compares a training's saved config with the experiment's and a
prediction's or evaluation's recorded input fingerprints with the current ones."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

from mddpm.benchmark.experiment import DatasetSpec, Experiment, RunSpec, TestSet
from mddpm.config import TRAIN_DEFAULTS
from mddpm.evaluation.examples import EXAMPLES
from mddpm.io import file_sha256, read_json, write_json
from mddpm.run_folder import RunFolder

_IGNORED_CONFIG_KEYS = ("mddpm_version", "prepared")


@dataclass(frozen=True)
class RunPaths:
    """Where one dataset × row × run lives under a benchmark's output folder: ``OUT/runs/<dataset>/<row>/<run>``
    (the one place that layout is written)."""

    root: Path

    @classmethod
    def of(cls, out: Path, dataset: str, row: str, run: str) -> "RunPaths":
        return cls(Path(out) / "runs" / dataset / row / run)

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def stages(self) -> Path:
        return self.root / "stages.json"

    def maps(self, split: str) -> Path:
        return self.root / "maps" / split

    def eval(self, test_set: TestSet) -> Path:
        return self.root / "eval" / test_set.name


@dataclass
class Stage:
    """One step of the benchmark: ``kind`` is "train", "predict" (``split``) or "evaluate" (``test_set``)."""

    kind: str
    dataset: DatasetSpec
    method: str  # the row: a method, or a variant of one (Experiment.method_of)
    run: RunSpec
    paths: RunPaths
    split: str | None = None
    test_set: TestSet | None = None

    @property
    def name(self) -> str:
        if self.kind == "predict":
            return f"predict/{self.split}"
        if self.kind == "evaluate":
            return f"evaluate/{self.test_set.name}"
        return "train"

    def describe(self) -> str:
        return f"{self.dataset.name} {self.method} {self.run.tag} {self.name}"


def plan(experiment: Experiment, out: Path, only: list[str] | None = None) -> list[Stage]:
    """Every stage of the experiment in execution order (dataset, method, run; train, predicts, evaluates)."""
    methods = experiment.methods if not only else [m for m in experiment.methods if m in only]
    stages = []
    for d in experiment.datasets:
        splits = list(dict.fromkeys([s for t in d.test_sets for s in (t.val, t.test)]
                                    + ([d.healthy_val] if d.healthy_val else [])))
        for m in methods:
            for r in experiment.runs_of(m):
                paths = RunPaths.of(out, d.name, m, r.tag)
                stages.append(Stage("train", d, m, r, paths))
                stages += [Stage("predict", d, m, r, paths, split=s) for s in splits]
                stages += [Stage("evaluate", d, m, r, paths, test_set=t) for t in d.test_sets]
    return stages


def expected_run_config(experiment: Experiment, stage: Stage, dataset_root: Path) -> dict:
    """The ``config.json`` a finished training of ``stage`` must have (minus version and cache path)."""
    from mddpm.config import resolve_config

    overrides = {**experiment.overrides_of(stage.method), **stage.run.overrides()}
    cfg = resolve_config(experiment.method_of(stage.method), experiment.preset, overrides)
    cfg = {k: v for k, v in cfg.items() if k not in _IGNORED_CONFIG_KEYS}
    # as config.json stores it (tuples become lists)
    return json.loads(json.dumps({**cfg, "dataset": str(dataset_root.resolve()), "fold": stage.run.fold}))


def _config_difference(expected: dict, saved: dict, prefix: str = "") -> str | None:
    """The first key where two configs differ, as ``"key: saved != expected"`` (None if equal)."""
    for key in sorted(set(expected) | set(saved)):
        if key in _IGNORED_CONFIG_KEYS and not prefix:
            continue
        a, b = saved.get(key, "<missing>"), expected.get(key, "<missing>")
        if a == "<missing>" and prefix == "train." and key in TRAIN_DEFAULTS and b == TRAIN_DEFAULTS[key]:
            continue  # a setting added after the run was trained, at its default: the run is what it asks for
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _config_difference(b, a, f"{prefix}{key}.")
            if inner:
                return inner
        elif a != b:
            return f"{prefix}{key}: {json.dumps(a)} (saved) != {json.dumps(b)} (experiment)"
    return None


def _stage_key(stage: Stage, experiment: Experiment) -> dict | None:
    """What a stage's output depends on (None if an input is missing, i.e. an earlier stage must run)."""
    p = stage.paths
    if stage.kind == "predict":
        weights = RunFolder(p.train).weights("best")
        return {"weights_sha256": file_sha256(weights), "split": stage.split} if weights.is_file() else None
    if stage.kind == "evaluate":
        t = stage.test_set
        inputs = {"test": p.maps(t.test), "val": p.maps(t.val)}
        if stage.dataset.healthy_val:
            inputs["healthy_val"] = p.maps(stage.dataset.healthy_val)
        if not all((folder / "predict.json").is_file() for folder in inputs.values()):
            return None
        key = {name: file_sha256(folder / "predict.json") for name, folder in inputs.items()}
        return {**key, "rules": experiment.thresholds, "figures": figures_for(stage, experiment),
                "examples": examples_for(stage, experiment), "postprocess": experiment.postprocess}
    raise ValueError(stage.kind)


def figures_for(stage: Stage, experiment: Experiment) -> int:
    """Case figures are drawn for a row's first run only."""
    return experiment.figures if stage.run == experiment.runs_of(stage.method)[0] else 0


def examples_for(stage: Stage, experiment: Experiment) -> int:
    """The report's example cases (and its pooled precision-recall curve) are made for a row's first run only:
    the run the report shows."""
    return EXAMPLES if stage.run == experiment.runs_of(stage.method)[0] else 0


def read_records(paths: RunPaths) -> dict:
    return read_json(paths.stages) if paths.stages.is_file() else {}


def stage_status(stage: Stage, experiment: Experiment, dataset_root: Path | None,
                 will_run: set[str]) -> tuple[str, str]:
    """``(status, why)``: status is "done", "todo", "resume" (continue an interrupted training) or
    "stale" (a training with another config: retrained only with force). ``will_run`` holds the
    ``root|stage`` ids that run before this one in this invocation (their outputs will change)."""
    p = stage.paths
    if stage.kind == "train":
        if dataset_root is None:
            return "todo", "dataset path not given"
        run = RunFolder(p.train)
        config_path = run.config
        if not config_path.is_file():
            return "todo", ""
        diff = _config_difference(expected_run_config(experiment, stage, dataset_root), read_json(config_path))
        if diff:
            return "stale", f"{config_path}: {diff}"
        if run.weights("best").is_file():
            return "done", ""
        if run.checkpoint("last").is_file():
            return "resume", "continues from checkpoints/last.ckpt"
        return "todo", "earlier attempt left no checkpoint"
    upstream = {f"{p.root}|train"} if stage.kind == "predict" else {f"{p.root}|predict/{s}" for s in (
        stage.test_set.test, stage.test_set.val, stage.dataset.healthy_val) if s}
    if stage.kind == "predict":
        output = p.maps(stage.split) / "predict.json"
    else:
        output = p.eval(stage.test_set) / "metrics.json"
    if not output.is_file():
        return "todo", ""
    if upstream & will_run:
        return "todo", "its inputs are recomputed"
    key = _stage_key(stage, experiment)
    record = read_records(p).get(stage.name, {})
    if key is None or record.get("key") != key:
        return "todo", "inputs changed since it ran"
    return "done", ""


def record_finished(stage: Stage, experiment: Experiment, seconds: float, cpu_seconds: float, resumed: bool) -> None:
    """Store a finished stage: its time (plus the interrupted attempt's when it ``resumed`` one) and,
    for predict and evaluate, the fingerprints of its inputs."""
    records = read_records(stage.paths)
    before = records.get(stage.name, {}) if resumed else {}
    entry = {"seconds": seconds + before.get("interrupted_seconds", 0.0),
             "cpu_seconds": cpu_seconds + before.get("interrupted_cpu_seconds", 0.0), "finished": now_iso()}
    if stage.kind != "train":
        entry["key"] = _stage_key(stage, experiment)
    records[stage.name] = entry
    write_json(stage.paths.stages, records)


def record_interrupted(stage: Stage, seconds: float, cpu_seconds: float) -> None:
    """Store the time an interrupted training spent, so that its resumed run can add it."""
    records = read_records(stage.paths)
    before = records.get(stage.name, {})
    if "finished" in before:
        before = {}
    records[stage.name] = {"interrupted_seconds": seconds + before.get("interrupted_seconds", 0.0),
                           "interrupted_cpu_seconds": cpu_seconds + before.get("interrupted_cpu_seconds", 0.0)}
    write_json(stage.paths.stages, records)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

