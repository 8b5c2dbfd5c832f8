"""The behaviour-identity check of the outer layer: a fixed-seed small benchmark (every registered
method, two training steps, the phantom dataset of ``conftest.py``, CPU) recorded in
``tests/golden/benchmark/`` and recomputed by ``test_golden.py``.

Recorded: each evaluation's ``metrics.json``, ``table.json`` and ``table.md`` (without wall times) and
the Results section of ``report.html`` (Table 1 with p-values, every metric). Paths become ``$OUT`` and
``$DATA``; timestamps and timings are dropped.

Regenerate (only when a change of behaviour is intended, and say so in the commit)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python tests/benchmark_golden.py
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden" / "benchmark"
TRAINING = ["train.max_steps=2", "train.batch_size=2", "train.val_batches=1", "train.val_every=2"]
# dropped before comparing: dates and timings, and diagnostics of how a number was computed (a resumed
# prediction's count, the exact threshold search's internal counts), not the numbers themselves
VOLATILE = re.compile(r"created|updated|seconds|resumed_cases|^candidates$|^scores_scored$")


def golden_grid(methods: list[str]) -> dict:
    """The grid of the check: every method, one seed, the phantom's blob lesions as the test set."""
    return {"name": "golden", "preset": "demo", "methods": methods, "reference": "mddpm-fpmcm",
            "extra_rows": ["intensity"], "runs": {"seeds": [7]}, "thresholds": ["bisection", "exact"], "figures": 0,
            "overrides": {m: TRAINING for m in methods if m != "intensity"},
            "datasets": [{"name": "phantom", "path": None, "healthy_val": "val",
                          "test_sets": [{"name": "blob", "test": "lesion_test", "val": "lesion_val"}]}]}


def run_golden_benchmark(root: Path) -> Path:
    """Write the phantom dataset and the grid under ``root``, run the benchmark; returns its output folder."""
    from mddpm.benchmark.runner import run_benchmark
    from mddpm.data.synth.phantom import make_phantom_dataset
    from mddpm.methods import all_methods

    data = make_phantom_dataset(root / "phantom")
    shipped = sorted(m for m, spec in all_methods().items() if spec.build.__module__.startswith("mddpm."))
    (root / "grid.json").write_text(json.dumps(golden_grid(shipped)))  # not the tests' toy methods
    run_benchmark(root / "grid.json", out=root / "out", data={"phantom": str(data)}, device="cpu", progress=False,
                  log=lambda m: None)
    return root / "out"


def normalise(obj, root: Path):
    """``obj`` with the check's folder as ``$ROOT`` and volatile keys (times, dates) removed."""
    if isinstance(obj, dict):
        return {k: normalise(v, root) for k, v in obj.items() if not VOLATILE.search(k)}
    if isinstance(obj, list):
        return [normalise(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(str(root), "$ROOT")
    return obj


def results_section(html: str) -> str:
    """The report's Results tables (Table 1 and the detail tables): from its heading to the lesion-size
    note (which needs the prepared cache) or the precision-recall section, without line breaks."""
    start = html.index('<h2 id="results">')
    ends = [i for i in (html.find("<h3>Lesion sizes", start), html.find('<h2 id="pr">', start)) if i >= 0]
    return re.sub(r"\s*\n\s*", "", html[start:min(ends)])  # line breaks between tags are layout only


def table_markdown_without_time(md: str) -> str:
    return md.split("## Time")[0].rstrip() + "\n"


def record(out: Path, root: Path) -> dict[str, object]:
    """Everything the check compares, from a finished benchmark folder."""
    found = {}
    for path in sorted(out.glob("runs/*/*/*/eval/*/metrics.json")):
        method = path.relative_to(out).parts[2]
        found[f"metrics/{method}.json"] = normalise(json.loads(path.read_text()), root)
    found["table.json"] = normalise(json.loads((out / "table.json").read_text()), root)
    found["table.md"] = table_markdown_without_time((out / "table.md").read_text())
    found["report_results.html"] = results_section((out / "report.html").read_text())
    return found


def differences(expected, actual, where: str = "", rel: float = 1e-6) -> list[str]:
    """Where two JSON values differ: integers, strings and keys exactly, floats to ``rel``."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(expected) != set(actual):
            return [f"{where}: keys {sorted(set(expected) ^ set(actual))} differ"]
        return [d for k in expected for d in differences(expected[k], actual[k], f"{where}.{k}", rel)]
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(actual)} items, expected {len(expected)}"]
        return [d for i, (a, b) in enumerate(zip(expected, actual)) for d in differences(a, b, f"{where}[{i}]", rel)]
    if isinstance(expected, float) and isinstance(actual, float):
        same = ((math.isnan(expected) and math.isnan(actual))
                or math.isclose(expected, actual, rel_tol=rel, abs_tol=1e-12))
        return [] if same else [f"{where}: {actual!r}, expected {expected!r}"]
    if type(expected) is not type(actual) or expected != actual:
        return [f"{where}: {actual!r}, expected {expected!r}"]
    return []


def load_golden() -> dict[str, object]:
    found = {}
    for path in sorted(GOLDEN.rglob("*")):
        if path.is_file():
            key = str(path.relative_to(GOLDEN))
            found[key] = json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()
    return found


def main(root: Path) -> None:
    out = run_golden_benchmark(root)
    for key, value in record(out, root).items():
        path = GOLDEN / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n" if key.endswith(".json") else value)
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp).resolve())
