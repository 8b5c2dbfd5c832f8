"""``mddpm benchmark``: methods × runs (folds or seeds) × test sets -> Table 1 with p-values.

A *grid* (JSON; shipped: ``paper``, ``synthetic`` in ``mddpm/grids/``) names the datasets with their
test sets (a test split and the lesion validation split its threshold is chosen on), the methods,
the runs (``{"folds": [...]}`` or ``{"seeds": [...]}``), the preset, per-method ``--set`` overrides,
the post-processing rule of evaluate (``"published"`` or ``"physical"``) and the reference method of
the significance tests. For every dataset × method × run it trains, predicts
the validation and test splits and evaluates each test set; then it builds the table.

Layout of the output folder::

    OUT/benchmark.json                              grid as run, data paths, every stage's status and wall time
    OUT/data/<dataset>/                             a dataset the grid generates ("synth")
    OUT/runs/<dataset>/<method>/<run>/train/        run folder (mddpm train)
    OUT/runs/<dataset>/<method>/<run>/maps/<split>/ anomaly maps (mddpm predict)
    OUT/runs/<dataset>/<method>/<run>/eval/<test>/  metrics (mddpm evaluate)
    OUT/runs/<dataset>/<method>/<run>/stages.json   wall time and inputs of each finished stage
    OUT/table.md, table.csv, table.json             Table 1 (+ every metric, p-values, wall times)
    OUT/report.html                                 the report (mddpm.viz.report)
    OUT/cache/                                      the report's precision-recall curves and pictures

Resume (the default): a training is skipped when ``train/best.pt`` exists and its ``config.json`` equals
the grid's config (an interrupted one continues from its last checkpoint); a prediction or evaluation is
skipped when its output exists and was made from the same inputs (weights file, maps). A run whose saved
config differs from the grid is an error unless ``force`` (then it is retrained). Without resume every
stage runs again (an existing output folder then needs ``force``).

Table 1 (as the paper): per test set, DICE (per-volume Dice at the threshold chosen on the validation
split, default rule) and AUPRC (per-volume average precision), each the mean ± std ACROSS RUNS of the
per-volume means of each run (std: population, ddof 0, as numpy and the published aggregation; the
sample std is in table.json/csv too). p-values: paired Wilcoxon signed-rank test
(``scipy.stats.wilcoxon``, two-sided, zero_method "wilcox") of each method against the reference on
per-volume scores, pairs matched by (run, case) and pooled over runs. Pooling repeats each case once per
run, so the pairs are not independent and the p-values are optimistic; they are a screening aid.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import math
import os
import re
import resource
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mddpm import __version__
from mddpm.errors import MddpmError
from mddpm.io import atomic_write, case_id_problem, check_new_output, read_json, write_json

GRID_DIR = Path(__file__).parent / "grids"
RUN_KINDS = ("folds", "seeds")
_GRID_KEYS = {"name", "description", "preset", "datasets", "methods", "extra_rows", "labels", "runs", "overrides",
              "reference", "thresholds", "figures", "published", "postprocess"}
_DATASET_KEYS = {"name", "path", "synth", "healthy_val", "test_sets"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_IGNORED_CONFIG_KEYS = ("mddpm_version", "prepared")


# ---- grid -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TestSet:
    """A test split scored with the threshold chosen on the lesion validation split ``val``."""

    name: str
    test: str
    val: str


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the grid. ``path`` None: given with ``--data NAME=PATH`` or generated (``synth``)."""

    name: str
    path: str | None
    synth: dict | None
    healthy_val: str | None
    test_sets: tuple[TestSet, ...]


@dataclass(frozen=True)
class RunSpec:
    """One training run: a fold of the dataset (``fold``) or a training seed (``seed``)."""

    tag: str
    fold: int | None = None
    seed: int | None = None

    def overrides(self) -> list[str]:
        return [] if self.seed is None else [f"train.seed={self.seed}"]


@dataclass
class Grid:
    """A parsed and validated grid file (see the module docstring)."""

    name: str
    description: str
    preset: str
    datasets: list[DatasetSpec]
    methods: list[str]
    runs: list[RunSpec]
    reference: str | None
    extra_rows: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, list[str]] = field(default_factory=dict)
    thresholds: list[str] = field(default_factory=lambda: ["bisection"])
    figures: int = 3
    published: dict | None = None
    postprocess: str = "published"
    source: str = ""

    @property
    def run_kind(self) -> str:
        return "folds" if self.runs[0].fold is not None else "seeds"

    def label(self, method: str) -> str:
        return self.labels.get(method, method)

    def to_json(self) -> dict:
        return {
            "name": self.name, "description": self.description, "preset": self.preset, "source": self.source,
            "datasets": [{"name": d.name, "path": d.path, "synth": d.synth, "healthy_val": d.healthy_val,
                          "test_sets": [vars(t) for t in d.test_sets]} for d in self.datasets],
            "methods": self.methods, "extra_rows": self.extra_rows, "labels": self.labels,
            "runs": {self.run_kind: [r.fold if r.fold is not None else r.seed for r in self.runs]},
            "overrides": self.overrides, "reference": self.reference, "thresholds": self.thresholds,
            "figures": self.figures, "published": self.published, "postprocess": self.postprocess,
        }


def shipped_grids() -> list[str]:
    """Names of the grids shipped in ``mddpm/grids``."""
    return sorted(p.stem for p in GRID_DIR.glob("*.json"))


def grid_path(spec: str | os.PathLike) -> Path:
    """The file of a grid given as a path or as a shipped name (``paper``, ``synthetic``)."""
    path = Path(spec)
    if path.is_file():
        return path
    if str(spec) in shipped_grids():
        return GRID_DIR / f"{spec}.json"
    raise MddpmError(f"{spec}: no such grid file (shipped grids: {', '.join(shipped_grids())})")


def _simple_name(name) -> bool:
    """Grid, dataset and test-set names become folder names: letters, digits, ``_.+-`` and the case-id rule."""
    return isinstance(name, str) and bool(_SAFE_NAME.match(name)) and case_id_problem(name, "names") is None


def load_grid(spec: str | os.PathLike) -> Grid:
    """Read and validate a grid (path or shipped name); every problem is a one-line MddpmError naming the file."""
    from mddpm.config import resolve_config
    from mddpm.data.synth_sizes import SIZES
    from mddpm.evaluation.evaluate import RULES
    from mddpm.evaluation.postprocess import POSTPROCESS_RULES
    from mddpm.registry import all_methods

    path = grid_path(spec)
    raw = read_json(path)

    def check(ok: bool, msg: str) -> None:
        if not ok:
            raise MddpmError(f"{path}: {msg}")

    def str_list(value, what: str, allow_empty: bool = False) -> list[str]:
        check(isinstance(value, list) and (allow_empty or value) and all(isinstance(v, str) and v for v in value),
              f"{what} must be a {'' if allow_empty else 'non-empty '}list of names")
        check(len(set(value)) == len(value), f"{what} lists a name twice")
        return list(value)

    check(isinstance(raw, dict), "a grid is a JSON object")
    unknown = set(raw) - _GRID_KEYS
    check(not unknown, f"unknown key(s) {sorted(unknown)} (known: {', '.join(sorted(_GRID_KEYS))})")
    for key in ("name", "preset", "datasets", "methods", "runs"):
        check(key in raw, f"missing key {key!r}")
    check(_simple_name(raw["name"]), "name must be a simple name")
    check(isinstance(raw["preset"], str) and raw["preset"], "preset must be a name")

    methods = str_list(raw["methods"], "methods")
    known = all_methods()
    for m in methods:
        check(m in known, f"unknown method {m!r} (known: {', '.join(sorted(known))})")
        check(raw["preset"] in known[m].presets, f"method {m!r} has no preset {raw['preset']!r}")
    extra_rows = str_list(raw.get("extra_rows", []), "extra_rows", allow_empty=True)
    check(set(extra_rows) <= set(methods), "extra_rows must be methods of the grid")
    labels = raw.get("labels", {})
    check(isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values()), "labels must map names to text")
    reference = raw.get("reference")
    check(reference is None or reference in methods, f"reference {reference!r} is not one of the grid's methods")

    runs_raw = raw["runs"]
    check(isinstance(runs_raw, dict) and len(runs_raw) == 1 and next(iter(runs_raw), None) in RUN_KINDS,
          'runs must be {"folds": [...]} or {"seeds": [...]}')
    kind, values = next(iter(runs_raw.items()))
    check(isinstance(values, list) and values and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                          for v in values), f"runs.{kind} must be non-negative integers")
    check(len(set(values)) == len(values), f"runs.{kind} lists a value twice")
    runs = [RunSpec(f"fold{v}", fold=v) if kind == "folds" else RunSpec(f"seed{v}", seed=v) for v in values]

    overrides = raw.get("overrides", {})
    check(isinstance(overrides, dict), "overrides must map method names to lists of key=value strings")
    for m, items in overrides.items():
        check(m in methods, f"overrides for {m!r}, which is not one of the grid's methods")
        check(isinstance(items, list) and all(isinstance(s, str) for s in items),
              f"overrides of {m!r} must be a list of key=value strings")
    for m in methods:
        try:
            resolve_config(m, raw["preset"], overrides.get(m, []) + runs[0].overrides())
        except MddpmError as e:
            raise MddpmError(f"{path}: overrides of {m!r}: {e}") from None

    thresholds = str_list(raw.get("thresholds", ["bisection"]), "thresholds")
    for rule in thresholds:
        check(rule in RULES, f"unknown threshold rule {rule!r} (known: {', '.join(RULES)})")
    figures = raw.get("figures", 3)
    check(isinstance(figures, int) and not isinstance(figures, bool) and figures >= 0, "figures must be an integer >= 0")
    postprocess = raw.get("postprocess", "published")
    check(postprocess in POSTPROCESS_RULES, f"postprocess must be one of {', '.join(POSTPROCESS_RULES)}")
    published = raw.get("published")
    check(published is None or (isinstance(published, dict) and isinstance(published.get("values"), dict)),
          'published must be {"source": ..., "values": {method: {test set: {"dice": [mean, std], ...}}}}')

    check(isinstance(raw["datasets"], list) and raw["datasets"], "datasets must be a non-empty list")
    datasets = []
    for i, d in enumerate(raw["datasets"]):
        where = f"datasets[{i}]"
        check(isinstance(d, dict), f"{where} must be an object")
        unknown = set(d) - _DATASET_KEYS
        check(not unknown, f"{where}: unknown key(s) {sorted(unknown)} (known: {', '.join(sorted(_DATASET_KEYS))})")
        name = d.get("name")
        check(_simple_name(name), f"{where}: name must be a simple name")
        check(d.get("path") is None or isinstance(d.get("path"), str), f"{where}: path must be a string or null")
        synth = d.get("synth")
        if synth is not None:
            check(isinstance(synth, dict) and set(synth) <= {"size", "seed"} and synth.get("size") in SIZES
                  and isinstance(synth.get("seed", 0), int),
                  f"{where}: synth must be {{\"size\": one of {', '.join(SIZES)}, \"seed\": int}}")
        healthy_val = d.get("healthy_val")
        check(healthy_val is None or isinstance(healthy_val, str), f"{where}: healthy_val must be a split name")
        check(healthy_val is None or kind == "seeds",
              f"{where}: healthy_val needs seed runs (with folds, predict would score fold 0's val split for every fold)")
        sets = d.get("test_sets")
        check(isinstance(sets, list) and sets, f"{where}: test_sets must be a non-empty list")
        test_sets = []
        for j, t in enumerate(sets):
            check(isinstance(t, dict) and set(t) == {"name", "test", "val"}
                  and all(isinstance(t[k], str) and t[k] for k in t) and _simple_name(t["name"]),
                  f'{where}.test_sets[{j}] must be {{"name", "test", "val"}} (simple names)')
            test_sets.append(TestSet(t["name"], t["test"], t["val"]))
        check(len({t.name for t in test_sets}) == len(test_sets), f"{where}: test set names must be unique")
        datasets.append(DatasetSpec(name, d.get("path"), synth, healthy_val, tuple(test_sets)))
    check(len({d.name for d in datasets}) == len(datasets), "dataset names must be unique")

    return Grid(name=raw["name"], description=str(raw.get("description", "")), preset=raw["preset"],
                datasets=datasets, methods=methods, runs=runs, reference=reference, extra_rows=extra_rows,
                labels=dict(labels), overrides={m: list(v) for m, v in overrides.items()}, thresholds=thresholds,
                figures=figures, published=published, postprocess=postprocess, source=str(path.resolve()))


def parse_data_args(items: list[str] | None) -> dict[str, str]:
    """``["NAME=PATH", ...]`` (``--data``) -> ``{NAME: PATH}``."""
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise MddpmError(f"--data {item!r}: expected NAME=PATH, e.g. --data ixi=data/pddpm")
        out[name] = path
    return out


# ---- stages ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunPaths:
    """Where one dataset × method × run lives under the output folder."""

    root: Path

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
    method: str
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


def plan(grid: Grid, out: Path, only: list[str] | None = None) -> list[Stage]:
    """Every stage of the grid in execution order (dataset, method, run; train, predicts, evaluates)."""
    methods = grid.methods if not only else [m for m in grid.methods if m in only]
    stages = []
    for d in grid.datasets:
        splits = list(dict.fromkeys([s for t in d.test_sets for s in (t.val, t.test)]
                                    + ([d.healthy_val] if d.healthy_val else [])))
        for m in methods:
            for r in grid.runs:
                paths = RunPaths(out / "runs" / d.name / m / r.tag)
                stages.append(Stage("train", d, m, r, paths))
                stages += [Stage("predict", d, m, r, paths, split=s) for s in splits]
                stages += [Stage("evaluate", d, m, r, paths, test_set=t) for t in d.test_sets]
    return stages


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (remembered per path, size and modification time within the process)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def expected_run_config(grid: Grid, stage: Stage, dataset_root: Path) -> dict:
    """The ``config.json`` a finished training of ``stage`` must have (minus version and cache path)."""
    from mddpm.config import resolve_config

    cfg = resolve_config(stage.method, grid.preset, grid.overrides.get(stage.method, []) + stage.run.overrides())
    cfg = {k: v for k, v in cfg.items() if k not in _IGNORED_CONFIG_KEYS}
    # as config.json stores it (tuples become lists)
    return json.loads(json.dumps({**cfg, "dataset": str(dataset_root.resolve()), "fold": stage.run.fold}))


def _config_difference(expected: dict, saved: dict, prefix: str = "") -> str | None:
    """The first key where two configs differ, as ``"key: saved != expected"`` (None if equal)."""
    for key in sorted(set(expected) | set(saved)):
        if key in _IGNORED_CONFIG_KEYS and not prefix:
            continue
        a, b = saved.get(key, "<missing>"), expected.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _config_difference(b, a, f"{prefix}{key}.")
            if inner:
                return inner
        elif a != b:
            return f"{prefix}{key}: {json.dumps(a)} (saved) != {json.dumps(b)} (grid)"
    return None


def _stage_key(stage: Stage, grid: Grid) -> dict | None:
    """What a stage's output depends on (None if an input is missing, i.e. an earlier stage must run)."""
    p = stage.paths
    if stage.kind == "predict":
        weights = p.train / "best.pt"
        return {"weights_sha256": file_sha256(weights), "split": stage.split} if weights.is_file() else None
    if stage.kind == "evaluate":
        t = stage.test_set
        inputs = {"test": p.maps(t.test), "val": p.maps(t.val)}
        if stage.dataset.healthy_val:
            inputs["healthy_val"] = p.maps(stage.dataset.healthy_val)
        if not all((folder / "predict.json").is_file() for folder in inputs.values()):
            return None
        key = {name: file_sha256(folder / "predict.json") for name, folder in inputs.items()}
        return {**key, "rules": grid.thresholds, "figures": _figures_for(stage, grid), "postprocess": grid.postprocess}
    raise ValueError(stage.kind)


def _figures_for(stage: Stage, grid: Grid) -> int:
    """Case figures are drawn for the first run only."""
    return grid.figures if stage.run == grid.runs[0] else 0


def _read_records(paths: RunPaths) -> dict:
    return read_json(paths.stages) if paths.stages.is_file() else {}


def stage_status(stage: Stage, grid: Grid, dataset_root: Path | None, will_run: set[str]) -> tuple[str, str]:
    """``(status, why)``: status is "done", "todo", "resume" (continue an interrupted training) or
    "stale" (a training with another config: retrained only with force). ``will_run`` holds the
    ``root|stage`` ids that run before this one in this invocation (their outputs will change)."""
    p = stage.paths
    if stage.kind == "train":
        if dataset_root is None:
            return "todo", "dataset path not given"
        config_path = p.train / "config.json"
        if not config_path.is_file():
            return "todo", ""
        diff = _config_difference(expected_run_config(grid, stage, dataset_root), read_json(config_path))
        if diff:
            return "stale", f"{config_path}: {diff}"
        if (p.train / "best.pt").is_file():
            return "done", ""
        if (p.train / "checkpoints" / "last.ckpt").is_file():
            return "resume", "continues from checkpoints/last.ckpt"
        return "todo", "earlier attempt left no checkpoint"
    upstream = {f"{p.root}|train"} if stage.kind == "predict" else {f"{p.root}|predict/{s}" for s in (
        stage.test_set.test, stage.test_set.val, stage.dataset.healthy_val) if s}
    output = p.maps(stage.split) / "predict.json" if stage.kind == "predict" else p.eval(stage.test_set) / "metrics.json"
    if not output.is_file():
        return "todo", ""
    if upstream & will_run:
        return "todo", "its inputs are recomputed"
    key = _stage_key(stage, grid)
    record = _read_records(p).get(stage.name, {})
    if key is None or record.get("key") != key:
        return "todo", "inputs changed since it ran"
    return "done", ""


# ---- running --------------------------------------------------------------------------------------

def resolve_datasets(grid: Grid, data: dict[str, str], out: Path, grid_file: Path,
                     create: bool = True, progress: bool = True) -> dict[str, Path | None]:
    """Dataset folder of every dataset: ``--data`` first, then the grid's path (relative to the grid
    file), then a generated one (``synth``, written to ``OUT/data/<name>`` when ``create``). None where
    nothing is known yet (only allowed for a dry run, which passes ``create=False``)."""
    unknown = set(data) - {d.name for d in grid.datasets}
    if unknown:
        raise MddpmError(f"--data {sorted(unknown)[0]}=...: the grid has no dataset of that name "
                         f"(datasets: {', '.join(d.name for d in grid.datasets)})")
    roots: dict[str, Path | None] = {}
    for d in grid.datasets:
        if d.name in data:
            roots[d.name] = Path(data[d.name]).resolve()
        elif d.path is not None:
            roots[d.name] = (grid_file.parent / d.path).resolve()
        elif d.synth is not None:
            root = (out / "data" / d.name).resolve()
            if create and not (root / "dataset.json").is_file():
                from mddpm.data.synth import synthesize
                from mddpm.data.synth_sizes import SIZES

                print(f"generating the {d.synth['size']} synthetic dataset in {root}", file=sys.stderr)
                synthesize(root, **SIZES[d.synth["size"]], seed=d.synth.get("seed", 0), progress=progress)
            roots[d.name] = root if (root / "dataset.json").is_file() else None
        elif create:
            raise MddpmError(f"{grid_file}: dataset {d.name!r} has no path: pass --data {d.name}=PATH")
        else:
            roots[d.name] = None
    return roots


def check_dataset(grid: Grid, spec: DatasetSpec, root: Path) -> None:
    """Fail before any training if the dataset lacks a split or fold the grid needs."""
    from mddpm.data.dataset import load_dataset

    dataset = load_dataset(root)
    needed = [s for t in spec.test_sets for s in (t.val, t.test)] + ([spec.healthy_val] if spec.healthy_val else [])
    for split in needed:
        if not dataset.split(split):
            raise MddpmError(f"{root / 'dataset.json'}: split {split!r} is empty")
    for r in grid.runs:
        for part in ("train", "val"):
            if not dataset.split(part, r.fold):
                raise MddpmError(f"{root / 'dataset.json'}: split {part!r}"
                                 f"{'' if r.fold is None else f' of fold {r.fold}'} is empty")


def _device_choice(device: str) -> tuple[str, str]:
    """``--device`` -> (predict device, evaluate device)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise MddpmError(f"--device {device!r}: expected auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise MddpmError("--device cuda: no CUDA device is available")
    return device, device


def run_stage(stage: Stage, status: str, grid: Grid, dataset_root: Path, device: str, force: bool,
              progress: bool, log: Callable[[str], None]) -> None:
    """Run one stage (its output folder is the benchmark's own: an outdated one is replaced)."""
    p = stage.paths
    if stage.kind == "train":
        from mddpm.training.train import train

        if status == "resume":
            train(None, None, out=p.train, resume=True, progress=progress,
                  accelerator="gpu" if device == "cuda" else "cpu")
        else:
            train(dataset_root, stage.method, grid.preset, out=p.train, fold=stage.run.fold,
                  overrides=grid.overrides.get(stage.method, []) + stage.run.overrides(), force=True,
                  progress=progress, accelerator="gpu" if device == "cuda" else "cpu")
    elif stage.kind == "predict":
        from mddpm.inference.predict import predict

        predict(p.train, dataset_root, stage.split, p.maps(stage.split), device=device, force=True, progress=progress)
    else:
        from mddpm.evaluation.evaluate import evaluate

        t = stage.test_set
        evaluate(p.maps(t.test), p.maps(t.val), p.eval(t), rules=grid.thresholds,
                 healthy_val=p.maps(stage.dataset.healthy_val) if stage.dataset.healthy_val else None,
                 figures=_figures_for(stage, grid), device=device, force=True, log=log, postprocess=grid.postprocess,
                 progress=progress)


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _record(stage: Stage, grid: Grid, seconds: float, cpu_seconds: float, resumed: bool) -> None:
    """Store a finished stage: its time (plus the interrupted attempt's when it ``resumed`` one) and,
    for predict and evaluate, the fingerprints of its inputs."""
    records = _read_records(stage.paths)
    before = records.get(stage.name, {}) if resumed else {}
    entry = {"seconds": seconds + before.get("interrupted_seconds", 0.0),
             "cpu_seconds": cpu_seconds + before.get("interrupted_cpu_seconds", 0.0), "finished": _now()}
    if stage.kind != "train":
        entry["key"] = _stage_key(stage, grid)
    records[stage.name] = entry
    write_json(stage.paths.stages, records)


def _record_interrupted(stage: Stage, seconds: float, cpu_seconds: float) -> None:
    """Store the time an interrupted training spent, so that its resumed run can add it."""
    records = _read_records(stage.paths)
    before = records.get(stage.name, {})
    if "finished" in before:
        before = {}
    records[stage.name] = {"interrupted_seconds": seconds + before.get("interrupted_seconds", 0.0),
                           "interrupted_cpu_seconds": cpu_seconds + before.get("interrupted_cpu_seconds", 0.0)}
    write_json(stage.paths.stages, records)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_benchmark(grid_spec: str | os.PathLike, out: str | os.PathLike | None = None, data: dict[str, str] | None = None,
                  resume: bool = True, dry_run: bool = False, only: list[str] | None = None, device: str = "auto",
                  force: bool = False, progress: bool = True, report: bool = True, table_only: bool = False,
                  max_runs: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run (or, with ``dry_run``, only list) the grid's stages and build the table; see the module docstring.
    ``table_only``: run nothing, rebuild the table files and the report from the finished evaluations.
    ``max_runs``: only the grid's first ``max_runs`` runs (a later call with more resumes them).

    Returns ``{"out", "stages": [{"dataset", "method", "run", "stage", "status", "seconds"}], "table"}``
    (no table for a dry run).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    grid = load_grid(grid_spec)
    if max_runs is not None:
        if max_runs < 1:
            raise MddpmError(f"--runs {max_runs}: must be at least 1")
        grid.runs = grid.runs[:max_runs]
    grid_file = Path(grid.source)
    out = Path(out or Path("benchmarks") / grid.name).resolve()
    for m in only or []:
        if m not in grid.methods:
            raise MddpmError(f"--only {m}: not a method of grid {grid.name!r} (methods: {', '.join(grid.methods)})")
    if table_only:
        return _write_outputs(grid, out, [], device, report, log)
    if not resume and not dry_run:
        check_new_output(out, force)
    roots = resolve_datasets(grid, data or {}, out, grid_file, create=not dry_run, progress=progress)
    for d in grid.datasets:
        if roots[d.name] is not None and (not dry_run or (roots[d.name] / "dataset.json").is_file()):
            check_dataset(grid, d, roots[d.name])
    predict_device, _ = _device_choice(device) if not dry_run else (device, device)

    stages = plan(grid, out, only)
    will_run: set[str] = set()
    statuses = []
    for stage in stages:
        root = roots[stage.dataset.name]
        status, why = ("todo", "--no-resume") if not resume else stage_status(stage, grid, root, will_run)
        if status == "stale" and not dry_run and not force:
            raise MddpmError(f"{why}; the grid asks for another config (use --force to retrain, or another --out)")
        if status != "done":
            will_run.add(f"{stage.paths.root}|{stage.name}")
        statuses.append((stage, status, why))

    if dry_run:
        for stage, status, why in statuses:
            print(f"{status:7s} {stage.describe()}{f'  ({why})' if why else ''}")
        todo = sum(s != "done" for _, s, _ in statuses)
        print(f"{len(statuses)} stages: {len(statuses) - todo} done, {todo} to run; output folder {out}")
        return {"out": str(out), "stages": [_stage_row(s, st, None) for s, st, _ in statuses], "table": None}

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MddpmError(f"{out}: cannot create the output folder ({e.strerror})") from None
    rows = []
    for i, (stage, status, why) in enumerate(statuses, 1):
        if status == "done":
            rows.append(_stage_row(stage, "skipped", _read_records(stage.paths).get(stage.name, {}).get("seconds")))
            continue
        log(f"[{i}/{len(statuses)}] {stage.describe()}{f' ({why})' if why else ''}")
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        try:
            run_stage(stage, status, grid, roots[stage.dataset.name], predict_device, force, progress, log)
        except BaseException:
            if stage.kind == "train" and (stage.paths.train / "checkpoints" / "last.ckpt").is_file():
                _record_interrupted(stage, time.perf_counter() - start, _cpu_seconds() - cpu_start)
            raise
        seconds = time.perf_counter() - start
        _record(stage, grid, seconds, _cpu_seconds() - cpu_start, resumed=status == "resume")
        rows.append(_stage_row(stage, "ran", seconds))
        log(f"[{i}/{len(statuses)}] {stage.describe()}: {seconds:.1f} s")

    write_json(out / "benchmark.json", {"format": "mddpm-benchmark", "mddpm_version": __version__, "updated": _now(),
                                        "grid": grid.to_json(), "data": {k: str(v) for k, v in roots.items()},
                                        "device": predict_device, "only": only, "stages": rows})
    return _write_outputs(grid, out, rows, predict_device, report, log)


def _write_outputs(grid: Grid, out: Path, rows: list[dict], device: str, report: bool,
                   log: Callable[[str], None]) -> dict:
    """Table files and report from every finished evaluation of ``grid`` in ``out``."""
    table = build_benchmark_table(grid, out)
    if not table["evaluations"]:
        raise MddpmError(f"{out}: no finished evaluation of grid {grid.name!r} to tabulate")
    write_table_files(table, out)
    if report:
        from mddpm.viz.report import write_report

        write_report(out / "report.html", [Path(e["path"]) for e in table["evaluations"]],
                     f"Benchmark {grid.name}", table=table, cache_dir=out / "cache",
                     device=_device_choice(device)[1])
    log(f"table: {out / 'table.md'}" + (f"; report: {out / 'report.html'}" if report else ""))
    return {"out": str(out), "stages": rows, "table": table}


def _stage_row(stage: Stage, status: str, seconds: float | None) -> dict:
    return {"dataset": stage.dataset.name, "method": stage.method, "run": stage.run.tag, "stage": stage.name,
            "status": status, "seconds": seconds}


# ---- table ----------------------------------------------------------------------------------------

@dataclass
class Evaluation:
    """One evaluated run on one test set: its ``metrics.json`` content (and folder, if on disk)."""

    dataset: str
    test_set: str
    method: str
    run: str
    metrics: dict
    path: Path | None = None


def across_runs(values: list[float | None]) -> dict:
    """Mean and std across runs of per-run values (None/NaN skipped): population (``std``) and sample
    (``std_sample``, ddof 1) std, the count and the values themselves."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    out = {"mean": None, "std": None, "std_sample": None, "n_runs": int(finite.size), "runs": list(values)}
    if finite.size:
        out.update(mean=float(finite.mean()), std=float(finite.std()))
    if finite.size > 1:
        out["std_sample"] = float(finite.std(ddof=1))
    return out


def _case_value(case: dict, metric: str, rule: str) -> float | None:
    value = case["rules"][rule][metric] if metric == "dice" else case.get(metric)
    return value if value is not None and math.isfinite(value) else None


def paired_wilcoxon(method_runs: dict[str, dict], reference_runs: dict[str, dict], metric: str, rule: str) -> dict:
    """Paired Wilcoxon signed-rank test of per-volume ``metric`` ("dice" at ``rule``, "auprc", "auroc"),
    method against reference. ``*_runs`` map run tag -> metrics dict; pairs are (run, case) present
    in both with finite values on both sides. Returns {"p", "statistic", "n_pairs", "mean_difference",
    "median_difference"} (differences are method − reference; p None without pairs)."""
    from scipy.stats import wilcoxon

    x, y = [], []
    for run, metrics in method_runs.items():
        if run not in reference_runs:
            continue
        ref_cases = {c["case_id"]: c for c in reference_runs[run]["cases"]}
        for case in metrics["cases"]:
            other = ref_cases.get(case["case_id"])
            if other is None:
                continue
            a, b = _case_value(case, metric, rule), _case_value(other, metric, rule)
            if a is not None and b is not None:
                x.append(a)
                y.append(b)
    out = {"p": None, "statistic": None, "n_pairs": len(x), "mean_difference": None, "median_difference": None}
    if not x:
        return out
    diff = np.asarray(x) - np.asarray(y)
    out.update(mean_difference=float(diff.mean()), median_difference=float(np.median(diff)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    p, stat = float(result.pvalue), float(result.statistic)
    out.update(p=p if math.isfinite(p) else None, statistic=stat if math.isfinite(stat) else None)
    return out


def _run_value(metrics: dict, metric: str, rule: str) -> float | None:
    agg = metrics["aggregate"]
    stat = agg["rules"][rule]["dice"] if metric == "dice" else agg.get(metric)
    return None if stat is None else stat.get("mean")


def build_table(evaluations: list[Evaluation], methods: list[str], reference: str | None = None,
                labels: dict[str, str] | None = None, extra_rows: list[str] | tuple = (),
                published: dict | None = None, run_order: list[str] | None = None) -> dict:
    """Table 1 from evaluations (see the module docstring for the statistics).

    Columns are the (dataset, test set) pairs in order of appearance, rows the ``methods``. Each cell
    holds ``dice`` (default threshold rule), ``auprc``, ``auroc``, ``oracle_dice`` (ORACLE: best Dice
    on the volume's own labels) and ``dice_by_rule`` as :func:`across_runs` dicts, plus ``p_dice`` and
    ``p_auprc`` (:func:`paired_wilcoxon` against ``reference``; None on the reference row).
    """
    labels = labels or {}
    columns: list[tuple[str, str]] = list(dict.fromkeys((e.dataset, e.test_set) for e in evaluations))
    runs_in_order = run_order or list(dict.fromkeys(e.run for e in evaluations))
    default_rules = {e.metrics.get("default_rule", "bisection") for e in evaluations}
    if len(default_rules) > 1:
        raise MddpmError(f"evaluations use different default threshold rules {sorted(default_rules)}")
    rule = default_rules.pop() if default_rules else "bisection"

    by_cell: dict[tuple[str, str, str], dict[str, dict]] = {}
    for e in evaluations:
        by_cell.setdefault((e.dataset, e.test_set, e.method), {})[e.run] = e.metrics

    rows = []
    for m in methods:
        cells = {}
        for dataset, test_set in columns:
            runs = by_cell.get((dataset, test_set, m))
            if not runs:
                continue
            ordered = {r: runs[r] for r in runs_in_order if r in runs}
            rules = [r for r in next(iter(ordered.values()))["thresholds"] if all(r in x["thresholds"] for x in ordered.values())]
            cell = {
                "runs": list(ordered),
                "volumes": [x["test"]["cases"] for x in ordered.values()],
                "dice": across_runs([_run_value(x, "dice", rule) for x in ordered.values()]),
                "auprc": across_runs([_run_value(x, "auprc", rule) for x in ordered.values()]),
                "auroc": across_runs([_run_value(x, "auroc", rule) for x in ordered.values()]),
                "oracle_dice": across_runs([_run_value(x, "oracle_dice_bisection", rule) for x in ordered.values()]),
                "dice_by_rule": {r: across_runs([_run_value(x, "dice", r) for x in ordered.values()]) for r in rules},
                "thresholds": {r: [x["thresholds"][r]["threshold"] for x in ordered.values()] for r in rules},
                "p_dice": None, "p_auprc": None,
            }
            ref_runs = by_cell.get((dataset, test_set, reference)) if reference else None
            if ref_runs and m != reference:
                cell["p_dice"] = paired_wilcoxon(ordered, ref_runs, "dice", rule)
                cell["p_auprc"] = paired_wilcoxon(ordered, ref_runs, "auprc", rule)
            cells[f"{dataset}/{test_set}"] = cell
        rows.append({"method": m, "label": labels.get(m, m), "extra": m in extra_rows, "reference": m == reference,
                     "cells": cells})

    return {
        "format": "mddpm-table", "format_version": 1, "created": _now(), "mddpm_version": __version__,
        "rule": rule, "reference": reference, "reference_label": labels.get(reference, reference) if reference else None,
        "columns": [{"key": f"{d}/{t}", "dataset": d, "test_set": t} for d, t in columns],
        "rows": rows,
        "statistics": {
            "cell": "mean ± std across runs of each run's per-volume mean on the test split",
            "std": "population (ddof 0); std_sample: ddof 1",
            "dice": f"per-volume Dice at the threshold chosen on the validation split (rule {rule!r})",
            "auprc": "per-volume average precision over all voxels of the post-processed map",
            "oracle_dice": "ORACLE: per-volume best Dice using the volume's own labels (not a valid test result)",
            "p": "paired Wilcoxon signed-rank (scipy.stats.wilcoxon, two-sided, zero_method 'wilcox') of per-volume "
                 "scores against the reference; pairs by (run, case), pooled over runs (not independent: optimistic)",
        },
        "published": published,
        "evaluations": [{"dataset": e.dataset, "test_set": e.test_set, "method": e.method, "run": e.run,
                         "path": str(e.path) if e.path else None} for e in evaluations],
    }


def collect_evaluations(grid: Grid, out: Path) -> list[Evaluation]:
    """Every finished evaluation of the grid under ``out`` (methods and runs in grid order)."""
    found = []
    for d in grid.datasets:
        for t in d.test_sets:
            for m in grid.methods:
                for r in grid.runs:
                    folder = RunPaths(out / "runs" / d.name / m / r.tag).eval(t)
                    if (folder / "metrics.json").is_file():
                        found.append(Evaluation(d.name, t.name, m, r.tag, read_json(folder / "metrics.json"), folder))
    _check_one_dataset_each(found)
    return found


def _check_one_dataset_each(evaluations: list[Evaluation]) -> None:
    """Refuse a table whose column would mix evaluations made on different dataset folders: the
    per-volume pairs of the p-values match cases by id, so every method must see the same scans."""
    first: dict[str, Evaluation] = {}
    for e in evaluations:
        path = e.metrics.get("test", {}).get("dataset")
        if path is None:
            continue
        ref = first.setdefault(e.dataset, e)
        if ref.metrics["test"]["dataset"] != path:
            raise MddpmError(f"{e.path / 'metrics.json'}: evaluated on {path}, but {ref.path / 'metrics.json'} on "
                             f"{ref.metrics['test']['dataset']}; a table compares methods on one dataset (re-run one "
                             f"of them on the other's data, or use another --out)")


def stage_seconds(grid: Grid, out: Path) -> dict:
    """Recorded time per method, summed over runs and datasets: {method: {"runs": trained runs,
    "wall": {"train", "predict", "evaluate": seconds}, "cpu": {...: CPU seconds, None if not recorded}}}."""
    stages = ("train", "predict", "evaluate")
    totals = {}
    for m in grid.methods:
        entry = {"runs": 0, "wall": dict.fromkeys(stages, 0.0), "cpu": dict.fromkeys(stages, 0.0)}
        for d in grid.datasets:
            for r in grid.runs:
                records = {name: rec for name, rec in _read_records(RunPaths(out / "runs" / d.name / m / r.tag)).items()
                           if "finished" in rec}
                entry["runs"] += "train" in records
                for name, rec in records.items():
                    kind = name.split("/")[0]
                    entry["wall"][kind] += rec.get("seconds") or 0.0
                    cpu = rec.get("cpu_seconds")
                    entry["cpu"][kind] = None if cpu is None or entry["cpu"][kind] is None else entry["cpu"][kind] + cpu
        if entry["runs"]:
            totals[m] = entry
    return totals


def build_benchmark_table(grid: Grid, out: Path) -> dict:
    """:func:`build_table` over the finished evaluations of ``grid`` in ``out``, with labels, grid and wall times."""
    table = build_table(collect_evaluations(grid, out), grid.methods, grid.reference, grid.labels, grid.extra_rows,
                        grid.published, [r.tag for r in grid.runs])
    table["grid"] = {"name": grid.name, "description": grid.description, "preset": grid.preset,
                     "runs": grid.to_json()["runs"], "source": grid.source}
    table["seconds"] = stage_seconds(grid, out)
    return table


# ---- table files ----------------------------------------------------------------------------------

def _pct(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    std = stat.get("std")
    return f"{100 * stat['mean']:.2f} ± {100 * std:.2f}" if stat["n_runs"] > 1 else f"{100 * stat['mean']:.2f}"


def format_p(test: dict | None) -> str:
    """A p-value for people: ``<0.001``, ``0.012``, ``0.43``; ``–`` when there is none."""
    if not test or test.get("p") is None:
        return "–"
    p = test["p"]
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def _row_name(row: dict) -> str:
    name = row["label"]
    if row["reference"]:
        name += " (reference)"
    return name


def published_values(table: dict) -> tuple[list[str], list[tuple[str, list]]] | None:
    """The grid's published Table-1 values for the table's rows: (column names, [(row label,
    [(mean, std) or None per test set and metric])]); None when the grid gives none."""
    published = table.get("published")
    if not published:
        return None
    cols = table["columns"]
    names = [f"{c['test_set']} {m}" for c in cols for m in ("DICE", "AUPRC")]
    rows = []
    for r in table["rows"]:
        values = published["values"].get(r["method"])
        if values:
            rows.append((r["label"], [(values.get(c["test_set"]) or {}).get(m) for c in cols for m in ("dice", "auprc")]))
    return names, rows


def table_markdown(table: dict) -> str:
    """Table 1 and the detail tables as Markdown."""
    cols, rows = table["columns"], table["rows"]
    n_runs = max((c["dice"]["n_runs"] for r in rows for c in r["cells"].values()), default=0)
    grid = table.get("grid", {})
    title = f"Benchmark `{grid['name']}`" if grid else "Benchmark"
    lines = [f"# {title}: Table 1", ""]
    if grid.get("description"):
        lines += [grid["description"], ""]
    spread = (f"mean ± std across runs (up to {n_runs}) of each run's per-volume mean on the test split; std is the "
              "population std (ddof 0); a cell without ± comes from one run" if n_runs > 1
              else "per-volume mean on the test split of a single run (no spread across runs)")
    lines += [f"DICE and AUPRC in %, {spread}. DICE at the threshold chosen on the validation split (rule "
              f"`{table['rule']}`).", ""]
    main = [r for r in rows if not r["extra"]]
    extra = [r for r in rows if r["extra"]]

    def header(metrics: list[str]) -> list[str]:
        names = [f"{c['test_set']} {m}" for c in cols for m in metrics]
        return ["| Model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    lines += header(["DICE", "AUPRC"])
    for r in main + extra:
        cells = [(r["cells"].get(c["key"]) or {}) for c in cols]
        values = [v for cell in cells for v in (_pct(cell.get("dice")), _pct(cell.get("auprc")))]
        name = _row_name(r) + (" ‡" if r["extra"] else "")
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    if extra:
        lines += ["", "‡ not a row of the paper's Table 1."]

    if table.get("reference"):
        lines += ["", f"## p-values against {table['reference_label']}", "",
                  "Paired Wilcoxon signed-rank test (two-sided) of per-volume scores, pairs by (run, case) pooled over "
                  "runs; Δ = mean difference (method − reference) in %. Repeated cases across runs make these "
                  "p-values optimistic.", ""]
        names = [f"{c['test_set']} {m}" for c in cols for m in ("DICE p (Δ)", "AUPRC p (Δ)")]
        lines += ["| Model | " + " | ".join(names) + " | pairs |", "|---|" + "---|" * (len(names) + 1)]
        for r in main + extra:
            if r["reference"]:
                continue
            values, pairs = [], []
            for c in cols:
                cell = r["cells"].get(c["key"]) or {}
                for key in ("p_dice", "p_auprc"):
                    test = cell.get(key)
                    delta = test.get("mean_difference") if test else None
                    values.append(format_p(test) + ("" if delta is None else f" ({100 * delta:+.2f})"))
                pairs.append(str((cell.get("p_dice") or {}).get("n_pairs", "–")))
            lines.append(f"| {_row_name(r)} | " + " | ".join(values) + f" | {'/'.join(pairs)} |")

    rules = list(dict.fromkeys(rule for r in rows for c in r["cells"].values() for rule in c["dice_by_rule"]))
    lines += ["", "## Every metric", "",
              "Mean ± std across runs, in %. ORACLE best Dice uses each test volume's own labels: an upper bound, "
              "not a result.", ""]
    for c in cols:
        names = ["AUROC", "ORACLE best Dice"] + [f"DICE ({rule})" for rule in rules]
        lines += [f"### {c['dataset']} / {c['test_set']}", "", "| Model | runs | volumes | " + " | ".join(names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for r in rows:
            cell = r["cells"].get(c["key"])
            if not cell:
                lines.append(f"| {_row_name(r)} | 0 | – | " + " | ".join("–" for _ in names) + " |")
                continue
            values = [_pct(cell["auroc"]), _pct(cell["oracle_dice"])] + [_pct(cell["dice_by_rule"].get(rule)) for rule in rules]
            lines.append(f"| {_row_name(r)} | {len(cell['runs'])} | {cell['volumes'][0]} | " + " | ".join(values) + " |")
        lines.append("")

    published = published_values(table)
    if published:
        names, pub_rows = published
        lines += ["## Published values", "", table["published"].get("source", ""), ""]
        lines += ["| Model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for label, cells in pub_rows:
            lines.append(f"| {label} | " + " | ".join("–" if not v else f"{v[0]:.2f} ± {v[1]:.2f}" for v in cells) + " |")
        lines.append("")

    seconds = table.get("seconds")
    if seconds:
        lines += ["## Time", "", "Wall-clock seconds (CPU seconds of the process and its workers in brackets) summed over "
                  "runs, as recorded when each stage ran.", "",
                  "| Model | runs | train | predict | evaluate |", "|---|---|---|---|---|"]
        for r in rows:
            s = seconds.get(r["method"])
            if s:
                lines.append(f"| {r['label']} | {s['runs']} | " + " | ".join(
                    format_seconds(s["wall"][k], s["cpu"][k]) for k in ("train", "predict", "evaluate")) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def table_csv(table: dict) -> str:
    """Long-format CSV: one row per (dataset, test set, method, metric)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "test_set", "method", "label", "extra_row", "reference", "metric", "mean", "std",
                     "std_sample", "n_runs", "per_run", "p_value", "n_pairs", "mean_difference"])
    cols = {c["key"]: c for c in table["columns"]}
    for r in table["rows"]:
        for key, cell in r["cells"].items():
            metrics = [("dice", cell["dice"], cell["p_dice"]), ("auprc", cell["auprc"], cell["p_auprc"]),
                       ("auroc", cell["auroc"], None), ("oracle_dice", cell["oracle_dice"], None)]
            metrics += [(f"dice[{rule}]", stat, None) for rule, stat in cell["dice_by_rule"].items()]
            for name, stat, test in metrics:
                writer.writerow([cols[key]["dataset"], cols[key]["test_set"], r["method"], r["label"], r["extra"],
                                 r["reference"], name, _num(stat["mean"]), _num(stat["std"]), _num(stat["std_sample"]),
                                 stat["n_runs"], ";".join(_num(v) for v in stat["runs"]),
                                 _num(test["p"]) if test else "", test["n_pairs"] if test else "",
                                 _num(test["mean_difference"]) if test else ""])
    return buf.getvalue()


def format_seconds(wall: float, cpu: float | None) -> str:
    """``"123 s (240 s CPU)"``; without CPU time ``"123 s"``."""
    return f"{wall:.0f} s" + ("" if cpu is None else f" ({cpu:.0f} s CPU)")


def _num(v) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(float(v))


def write_table_files(table: dict, out: Path) -> None:
    """``table.json``, ``table.md`` and ``table.csv`` in ``out`` (each atomically)."""
    write_json(out / "table.json", table)
    with atomic_write(out / "table.md") as tmp:
        tmp.write_text(table_markdown(table))
    with atomic_write(out / "table.csv") as tmp:
        tmp.write_text(table_csv(table))
