"""Behaviour identity of the outer layer: the small fixed-seed benchmark of ``benchmark_golden.py``
against what it gave before the refactor (``tests/golden/benchmark/``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark_golden import differences, golden_grid, load_golden, record, run_golden_benchmark
from mddpm.benchmark.runner import run_benchmark
from mddpm.methods import all_methods


def _compare(golden: dict, actual: dict, keys) -> list[str]:
    return [d for key in keys for d in differences(golden[key], actual[key], key)]


def test_table_and_report_rebuilt_from_the_golden_evaluations(tmp_path):
    """The recorded metrics.json files -> Table 1 (JSON, Markdown) and the report's tables, as recorded."""
    golden = load_golden()
    methods = []
    for key, metrics in golden.items():
        if key.startswith("metrics/"):
            method = key.removeprefix("metrics/").removesuffix(".json")
            methods.append(method)
            path = tmp_path / "out/runs/phantom" / method / "seed7/eval/blob/metrics.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(metrics).replace("$ROOT", str(tmp_path)))
    assert methods and set(methods) <= set(all_methods())  # every recorded method still exists
    (tmp_path / "grid.json").write_text(json.dumps(golden_grid(sorted(methods))))
    run_benchmark(tmp_path / "grid.json", out=tmp_path / "out", table_only=True, device="cpu", log=lambda m: None)
    actual = record(tmp_path / "out", tmp_path)
    assert not _compare(golden, actual, ["table.json"])
    assert actual["table.md"] == golden["table.md"]
    assert actual["report_results.html"] == golden["report_results.html"]


@pytest.mark.slow
def test_small_benchmark_of_every_method_reproduces_the_golden_record(tmp_path):
    """Train (2 steps), predict and evaluate every registered method on the phantom (slow)."""
    out = run_golden_benchmark(Path(tmp_path).resolve())
    actual, golden = record(out, Path(tmp_path).resolve()), load_golden()
    assert sorted(actual) == sorted(golden)
    problems = _compare(golden, actual, [k for k in golden if k.endswith(".json")])
    assert not problems, "\n".join(problems[:20])
    for key in ("table.md", "report_results.html"):
        assert actual[key] == golden[key], key
