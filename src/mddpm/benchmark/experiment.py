"""An *experiment*: the JSON file that names what a benchmark runs (not the voxel grid of ``prepare``).

It names the datasets with their test sets (a test split and the lesion validation split its threshold is
chosen on), the rows (``methods``: registered methods, or *variants*), the runs (``{"folds": [...]}`` or
``{"seeds": [...]}``), the preset, per-row overrides (``["section.key=value", ...]`` as on the command line, or
``{"section.key": value}``; held as dicts), the variants (``{"ROW": {"method": METHOD, "overrides": ...,
"runs": {"seeds": [...]}}}``: a method under settings of its own, e.g. another step
budget, as a row beside it; ``runs`` optional, default the experiment's), the post-processing rule of evaluate
(``"published"`` or ``"physical"``), the threshold rules, the reference method of the significance tests and,
optionally, the published values. Shipped: ``paper`` and ``synthetic`` in ``mddpm/benchmark/experiments/``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mddpm.errors import MddpmError
from mddpm.io import case_id_problem, read_json

EXPERIMENT_DIR = Path(__file__).parent / "experiments"
RUN_KINDS = ("folds", "seeds")
_EXPERIMENT_KEYS = {"name", "title", "description", "preset", "datasets", "methods", "extra_rows", "labels", "runs",
                    "overrides", "variants", "reference", "thresholds", "figures", "published", "postprocess"}
_DATASET_KEYS = {"name", "path", "synth", "healthy_val", "test_sets"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class TestSet:
    """A test split scored with the threshold chosen on the lesion validation split ``val``."""

    name: str
    test: str
    val: str


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the experiment. ``path`` None: given with ``--data NAME=PATH`` or generated (``synth``)."""

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

    def overrides(self) -> dict:
        return {} if self.seed is None else {"train.seed": self.seed}


@dataclass(frozen=True)
class Variant:
    """A row that trains ``method`` with ``overrides`` (after the method's own) on ``runs`` (None: the
    experiment's)."""

    method: str
    overrides: dict  # {"section.key": value}
    runs: tuple[RunSpec, ...] | None = None


@dataclass
class Experiment:
    """A parsed and validated experiment file (see the module docstring)."""

    name: str
    description: str
    preset: str
    datasets: list[DatasetSpec]
    methods: list[str]
    runs: list[RunSpec]
    reference: str | None
    extra_rows: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, dict] = field(default_factory=dict)  # row -> {"section.key": value}
    variants: dict[str, Variant] = field(default_factory=dict)
    thresholds: list[str] = field(default_factory=lambda: ["bisection"])
    figures: int = 3
    published: dict | None = None
    postprocess: str = "published"
    title: str = ""  # of the report (default: "Benchmark <name>")
    source: str = ""

    @property
    def run_kind(self) -> str:
        return "folds" if self.runs[0].fold is not None else "seeds"

    def label(self, method: str) -> str:
        return self.labels.get(method, method)

    def method_of(self, row: str) -> str:
        """The registered method a row trains (itself, or its variant's)."""
        return self.variants[row].method if row in self.variants else row

    def overrides_of(self, row: str) -> dict:
        """A row's overrides ``{"section.key": value}``: its method's, then its variant's, then its own (later
        wins)."""
        method = self.method_of(row)
        variant = self.variants[row].overrides if row in self.variants else {}
        return {**self.overrides.get(method, {}), **variant, **(self.overrides.get(row, {}) if row != method else {})}

    def runs_of(self, row: str) -> list[RunSpec]:
        """The runs of a row (a variant may name fewer)."""
        variant = self.variants.get(row)
        return list(variant.runs) if variant is not None and variant.runs is not None else list(self.runs)

    def to_json(self) -> dict:
        return {
            "name": self.name, "description": self.description, "preset": self.preset, "source": self.source,
            "datasets": [{"name": d.name, "path": d.path, "synth": d.synth, "healthy_val": d.healthy_val,
                          "test_sets": [vars(t) for t in d.test_sets]} for d in self.datasets],
            "methods": self.methods, "extra_rows": self.extra_rows, "labels": self.labels,
            "runs": {self.run_kind: [r.fold if r.fold is not None else r.seed for r in self.runs]},
            "overrides": self.overrides,
            "variants": {row: {"method": v.method, "overrides": v.overrides,
                               **({"runs": {self.run_kind: [r.fold if r.fold is not None else r.seed for r in v.runs]}}
                                  if v.runs is not None else {})} for row, v in self.variants.items()},
            "reference": self.reference, "thresholds": self.thresholds,
            "figures": self.figures, "published": self.published, "postprocess": self.postprocess,
            "title": self.title,
        }


def shipped_experiments() -> list[str]:
    """Names of the experiments shipped in ``mddpm/experiments``."""
    return sorted(p.stem for p in EXPERIMENT_DIR.glob("*.json"))


def experiment_path(spec: str | os.PathLike) -> Path:
    """The file of an experiment given as a path or as a shipped name (``paper``, ``synthetic``)."""
    path = Path(spec)
    if path.is_file():
        return path
    if str(spec) in shipped_experiments():
        return EXPERIMENT_DIR / f"{spec}.json"
    raise MddpmError(f"{spec}: no such experiment file (shipped experiments: {', '.join(shipped_experiments())})")


def _simple_name(name) -> bool:
    """Experiment, dataset and test-set names become folder names: letters, digits, ``_.+-`` and the case-id rule."""
    return isinstance(name, str) and bool(_SAFE_NAME.match(name)) and case_id_problem(name, "names") is None


def load_experiment(spec: str | os.PathLike) -> Experiment:
    """Read and validate an experiment (path or shipped name); every problem is a one-line MddpmError
    naming the file."""
    from mddpm.config import as_overrides, resolve_config
    from mddpm.data.synth.individual import FAMILIES
    from mddpm.data.synth.sizes import SIZES
    from mddpm.evaluation.evaluate import RULES
    from mddpm.evaluation.postprocess import POSTPROCESS_RULES
    from mddpm.methods import all_methods

    path = experiment_path(spec)
    raw = read_json(path)

    def check(ok: bool, msg: str) -> None:
        if not ok:
            raise MddpmError(f"{path}: {msg}")

    def str_list(value, what: str, allow_empty: bool = False) -> list[str]:
        check(isinstance(value, list) and (allow_empty or value) and all(isinstance(v, str) and v for v in value),
              f"{what} must be a {'' if allow_empty else 'non-empty '}list of names")
        check(len(set(value)) == len(value), f"{what} lists a name twice")
        return list(value)

    check(isinstance(raw, dict), "an experiment is a JSON object")
    unknown = set(raw) - _EXPERIMENT_KEYS
    check(not unknown, f"unknown key(s) {sorted(unknown)} (known: {', '.join(sorted(_EXPERIMENT_KEYS))})")
    for key in ("name", "preset", "datasets", "methods", "runs"):
        check(key in raw, f"missing key {key!r}")
    check(_simple_name(raw["name"]), "name must be a simple name")
    check(isinstance(raw["preset"], str) and raw["preset"], "preset must be a name")

    methods = str_list(raw["methods"], "methods")
    known = all_methods()
    variants_raw = raw.get("variants", {})
    check(isinstance(variants_raw, dict) and all(isinstance(v, dict) for v in variants_raw.values()),
          'variants must map row names to {"method": ..., "overrides": [...], "runs": {...}}')
    for m in methods:
        if m in variants_raw:
            v = variants_raw[m]
            check(m not in known and _simple_name(m), f"variant {m!r}: a row name that is no method's (a simple name)")
            check(set(v) <= {"method", "overrides", "runs"} and v.get("method") in known,
                  f"variant {m!r}: needs a known \"method\" (and optionally \"overrides\", \"runs\")")
            method = v["method"]
        else:
            check(m in known, f"unknown method {m!r} (known: {', '.join(sorted(known))})")
            method = m
        check(raw["preset"] in known[method].presets, f"method {method!r} has no preset {raw['preset']!r}")
    check(set(variants_raw) <= set(methods), "every variant must be a row of methods")
    extra_rows = str_list(raw.get("extra_rows", []), "extra_rows", allow_empty=True)
    check(set(extra_rows) <= set(methods), "extra_rows must be methods of the experiment")
    labels = raw.get("labels", {})
    check(isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values()),
          "labels must map names to text")
    reference = raw.get("reference")
    check(reference is None or reference in methods, f"reference {reference!r} is not one of the experiment's methods")

    runs_raw = raw["runs"]
    check(isinstance(runs_raw, dict) and len(runs_raw) == 1 and next(iter(runs_raw), None) in RUN_KINDS,
          'runs must be {"folds": [...]} or {"seeds": [...]}')
    kind, values = next(iter(runs_raw.items()))
    check(isinstance(values, list) and values
          and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values),
          f"runs.{kind} must be non-negative integers")
    check(len(set(values)) == len(values), f"runs.{kind} lists a value twice")
    runs = _run_specs(kind, values)

    def settings(items, where: str) -> dict:
        check(isinstance(items, dict) and all(isinstance(k, str) for k in items)
              or isinstance(items, list) and all(isinstance(x, str) for x in items),
              f"{where} must be a list of key=value strings or an object of settings")
        try:
            return as_overrides(items)
        except MddpmError as e:
            raise MddpmError(f"{path}: {where}: {e}") from None

    variants = {}
    for row, v in variants_raw.items():
        items = settings(v.get("overrides", []), f"variant {row!r}: overrides")
        own_runs = None
        if "runs" in v:
            r = v["runs"]
            check(isinstance(r, dict) and list(r) == [kind] and isinstance(r[kind], list) and r[kind]
                  and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in r[kind])
                  and len(set(r[kind])) == len(r[kind]), f"variant {row!r}: runs must be {{\"{kind}\": [...]}}, "
                  "like the experiment's")
            own_runs = tuple(_run_specs(kind, r[kind]))
        variants[row] = Variant(v["method"], items, own_runs)

    overrides = raw.get("overrides", {})
    check(isinstance(overrides, dict), "overrides must map method names to lists of key=value strings")
    for m in overrides:
        check(m in methods, f"overrides for {m!r}, which is not one of the experiment's methods")
    overrides = {m: settings(items, f"overrides of {m!r}") for m, items in overrides.items()}
    rows = Experiment(name="", description="", preset=raw["preset"], datasets=[], methods=methods, runs=runs,
                      reference=None, overrides=overrides, variants=variants)
    for m in methods:
        try:
            resolve_config(rows.method_of(m), raw["preset"], {**rows.overrides_of(m), **rows.runs_of(m)[0].overrides()})
        except MddpmError as e:
            raise MddpmError(f"{path}: overrides of {m!r}: {e}") from None

    thresholds = str_list(raw.get("thresholds", ["bisection"]), "thresholds")
    for rule in thresholds:
        check(rule in RULES, f"unknown threshold rule {rule!r} (known: {', '.join(RULES)})")
    figures = raw.get("figures", 3)
    check(isinstance(figures, int) and not isinstance(figures, bool) and figures >= 0,
          "figures must be an integer >= 0")
    postprocess = raw.get("postprocess", "published")
    check(postprocess in POSTPROCESS_RULES, f"postprocess must be one of {', '.join(POSTPROCESS_RULES)}")
    published = raw.get("published")
    shape = 'published must be {"source": ..., "values": {method: {test set: {"dice": [mean, std], ...}}}}'
    check(published is None or (isinstance(published, dict) and isinstance(published.get("values"), dict)), shape)
    for m, cells in (published or {}).get("values", {}).items():
        check(isinstance(cells, dict) and all(isinstance(c, dict) for c in cells.values()), f"{shape} ({m})")
        for test_set, metrics in cells.items():
            for metric, pair in metrics.items():
                check(isinstance(pair, list) and len(pair) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair),
                    f"published {m}/{test_set}/{metric}: expected [mean, std] as two numbers, got {pair!r}")

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
            families = [synth.get("family", "template"), *synth.get("test_families", [])] \
                if isinstance(synth, dict) and isinstance(synth.get("test_families", []), list) else [None]
            check(isinstance(synth, dict) and set(synth) <= {"size", "seed", "family", "test_families"}
                  and synth.get("size") in SIZES and isinstance(synth.get("seed", 0), int)
                  and all(f in FAMILIES for f in families),
                  f"{where}: synth must be {{\"size\": one of {', '.join(SIZES)}, \"seed\": int, \"family\": "
                  f"one of {', '.join(FAMILIES)}, \"test_families\": [families]}} (family and test_families "
                  "optional)")
        healthy_val = d.get("healthy_val")
        check(healthy_val is None or isinstance(healthy_val, str), f"{where}: healthy_val must be a split name")
        check(healthy_val is None or kind == "seeds",
              f"{where}: healthy_val needs seed runs (with folds, predict would score fold 0's val split for "
              "every fold)")
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

    return Experiment(name=raw["name"], description=str(raw.get("description", "")), preset=raw["preset"],
                      datasets=datasets, methods=methods, runs=runs, reference=reference, extra_rows=extra_rows,
                      labels=dict(labels), overrides=overrides, variants=variants,
                      thresholds=thresholds, figures=figures, published=published, postprocess=postprocess,
                      title=str(raw.get("title") or f"Benchmark {raw['name']}"), source=str(path.resolve()))


def _run_specs(kind: str, values: list[int]) -> list[RunSpec]:
    return [RunSpec(f"fold{v}", fold=v) if kind == "folds" else RunSpec(f"seed{v}", seed=v) for v in values]


def parse_data_args(items: list[str] | None) -> dict[str, str]:
    """``["NAME=PATH", ...]`` (``--data``) -> ``{NAME: PATH}``."""
    from mddpm.config import parse_assignments

    out = parse_assignments(items or [], "--data", "--data ixi=data/pddpm", typed=False, form="NAME=PATH")
    empty = next((name for name, path in out.items() if not path), None)
    if empty is not None:
        raise MddpmError(f"--data {empty}=: expected NAME=PATH, e.g. --data ixi=data/pddpm")
    return out

