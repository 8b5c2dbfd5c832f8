"""``mddpm preprocess``: raw scans -> a dataset folder (docs/preprocess.md); this module runs every case.

The cases are found by :mod:`mddpm.preprocess.discover` and each is preprocessed by
:mod:`mddpm.preprocess.case`. Cases run in parallel processes; each finished case leaves a marker
``OUT/.preprocess/<id>.json`` (settings hash, input fingerprints, timings, QC), so a rerun with the same
settings skips it; failures are collected in a :class:`~mddpm.preprocess.report.PreprocessReport`, one line
each, which :func:`~mddpm.preprocess.report.print_report` shows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import SimpleITK as sitk

from mddpm.errors import MddpmError, first_line
from mddpm.folder_lock import LOCK_NAME, writes_folder
from mddpm.io import read_json, write_json
from mddpm.parallel import parallel_map
from mddpm.preprocess.case import (
    STATE_DIR,
    finished_marker,
    run_case,
)
from mddpm.preprocess.discover import find_cases, labelled_cases
from mddpm.preprocess.hdbet import HOW_TO_PROVIDE_MASKS, hdbet_command
from mddpm.preprocess.layout import find_inputs
from mddpm.preprocess.record import write_dataset_json
from mddpm.preprocess.report import PreprocessReport
from mddpm.preprocess.settings import CaseInputs, PreprocessSettings, settings_hash


def _worker_init(threads: int) -> None:
    """Each worker process: ITK's threads per filter (the CPUs shared among the workers)."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _run_job(job: tuple) -> dict:
    """:func:`run_case` on ``(case, out, settings, digest)`` (a picklable top-level function for the workers)."""
    return run_case(*job)


def _check_output_folder(out: Path, digest: str, force: bool) -> None:
    """Refuse (unless ``force``) an ``out`` that holds files other than a resumable run with these settings."""
    if out.exists() and not out.is_dir():
        raise MddpmError(f"{out}: exists and is not a folder")
    if not out.exists() or not any(p.name != LOCK_NAME for p in out.iterdir()):  # our own lock is no output
        return
    record = out / STATE_DIR / "settings.json"
    if record.is_file():
        try:
            if read_json(record).get("settings_hash") == digest:
                return  # same settings: resume
        except MddpmError:
            pass
        what = "preprocessed data made with other settings"
    else:
        what = "files that mddpm preprocess did not write"
    if not force:
        raise MddpmError(f"{out}: already holds {what} (use --force to overwrite)")


@writes_folder("out", inputs=("input_dir", "masks_dir", "labels_dir"))
def preprocess_dataset(input_dir: str | Path, out: str | Path, settings: PreprocessSettings = PreprocessSettings(), *,
                       masks_dir: str | Path | None = None, labels_dir: str | Path | None = None,
                       pattern: str | None = None, role: str | None = None, split_name: str | None = None,
                       modality: str | None = None, workers: int = 1, force: bool = False,
                       progress: bool = True) -> PreprocessReport:
    """Preprocess every scan of ``input_dir`` into the dataset folder ``out``.

    Finished cases (marker with the same settings hash and input fingerprints, outputs present)
    are skipped unless ``force``; a folder holding other data is refused unless ``force``. One
    failing case does not stop the others: failures are returned in the report, and
    ``out/dataset.json`` lists every finished case. ``modality``: written to dataset.json (default: the
    nnU-Net channel's name, else "T2"). ``workers > 1`` uses spawned processes
    (a calling script needs the ``if __name__ == "__main__":`` guard).
    """
    out = Path(out)
    if role not in (None, "healthy", "anomalous"):
        raise MddpmError(f"role {role!r}: expected healthy or anomalous")
    if settings.mask_source == "files" and masks_dir is None:
        raise MddpmError(f"no brain masks: {HOW_TO_PROVIDE_MASKS}")
    if settings.mask_source == "hd-bet" and hdbet_command() is None:
        raise MddpmError(f"HD-BET is not installed ('hd-bet' is not on PATH): {HOW_TO_PROVIDE_MASKS}")
    inputs = find_inputs(input_dir, labels_dir, pattern, role, modality)
    if role == "anomalous" and not inputs.labels:
        raise MddpmError("--role anomalous needs --labels DIR (anomalous cases need a lesion label)")
    cases, problems = find_cases(input_dir, pattern, masks_dir if settings.mask_source == "files" else None,
                                 inputs=inputs)
    modality = modality or inputs.channel or "T2"
    if role == "anomalous":
        cases, unlabelled = labelled_cases(cases, labels_dir)
        problems += unlabelled
    digest, record = settings_hash(settings)
    _check_output_folder(out, digest, force)
    fresh = not out.exists()
    created = [] if fresh else [p for p in (STATE_DIR, "images", "masks", "labels") if not (out / p).exists()]
    write_json(out / STATE_DIR / "settings.json", {"settings_hash": digest, **record})

    report = PreprocessReport(out=out, failures=list(problems))
    todo = []
    for c in cases:
        marker = None if force else finished_marker(c, out, digest)
        if marker is None:
            todo.append(c)
        else:
            report.skipped.append(c.id)
            report.markers[c.id] = marker
    _run_cases(todo, out, settings, digest, workers, progress, report)
    finished = [c for c in cases if c.id in report.markers]
    if not finished:  # leave the output folder as it was: absent, or without what this run created
        for path in [out] if fresh else [out / p for p in created]:
            shutil.rmtree(path, ignore_errors=True)
        return report
    report.dataset_json = write_dataset_json(out, finished, report.markers, settings, record, role=role,
                                             split_name=split_name, modality=modality,
                                             sources={"input": input_dir, "masks": masks_dir, "labels": labels_dir,
                                                      "pattern": pattern})
    return report


def _run_cases(todo: list[CaseInputs], out: Path, settings: PreprocessSettings, digest: str, workers: int,
               progress: bool, report: PreprocessReport) -> None:
    """Run the cases of ``todo`` (``workers`` processes, a progress bar from :mod:`mddpm.progress` when
    ``progress``) and add each to ``report``: its marker, or its failure as one line."""
    def done(case: CaseInputs, marker: dict | None, error: BaseException | None) -> None:
        if error is None:
            report.processed.append(case.id)
            report.markers[case.id] = marker
        elif isinstance(error, MddpmError):
            report.failures.append(str(error))
        else:
            report.failures.append(f"{case.image}: {first_line(error)}")

    threads = max(1, (os.cpu_count() or 1) // max(1, min(workers, len(todo))))
    parallel_map(_run_job, [(c, out, settings, digest) for c in todo], lambda i, marker: done(todo[i], marker, None),
                 workers=workers, description="preprocess", progress=progress, initializer=_worker_init,
                 initargs=(threads,), label=lambda job: job[0].id,
                 on_error=lambda i, error: done(todo[i], None, error))  # one bad case must not stop the others

