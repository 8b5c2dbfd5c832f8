"""What a run of ``mddpm preprocess`` did (:class:`PreprocessReport`), and its lines for the console."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mddpm.errors import one_line
from mddpm.messages import note, say


@dataclass
class PreprocessReport:
    """The cases of one run of :func:`~mddpm.preprocess.pipeline.preprocess_dataset`, by id."""

    out: Path
    processed: list[str] = field(default_factory=list)  # ids processed in this run
    skipped: list[str] = field(default_factory=list)  # ids already finished (resume)
    failures: list[str] = field(default_factory=list)  # one line each: "path: problem"
    markers: dict[str, dict] = field(default_factory=dict)  # id -> marker of every finished case
    dataset_json: Path | None = None


def print_report(report: PreprocessReport, prefix: str = "mddpm preprocess: error: ",
                 log: Callable[[str], None] | None = None, echo: Callable[[str], None] = say) -> None:
    """Failures one line each to ``log`` (``prefix`` + "file: problem"; default: stderr), then the summary (cases
    ready, mean wall seconds per processed case, failures, dataset.json) to ``echo`` (default: stdout)."""
    log = log or note
    for line in report.failures:
        log(prefix + one_line(line))
    total = len(report.processed) + len(report.skipped)
    secs = [m["seconds"] for cid, m in report.markers.items() if cid in report.processed]
    mean = f", {np.mean([sum(s.values()) for s in secs]):.1f} s per case" if secs else ""
    echo(f"{report.out}: {total} case(s) ready ({len(report.processed)} processed{mean}, "
         f"{len(report.skipped)} already done), {len(report.failures)} failed"
         + (f"; wrote {report.dataset_json}" if report.dataset_json else "; no dataset.json (no case finished)"))
