"""Every command that reads data answers the bad-input corpus with one line naming the file, exit 2,
no traceback, no partial output, nothing written (or removed) outside its output folder and no file it
did not write deleted; the table in docs/reliability.md is generated here.

Regenerate the docs table: ``MDDPM_WRITE_DOCS=1 pytest tests/reliability/test_corpus.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mddpm.data.synth.phantom import make_phantom_dataset

from . import corpus

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- corpus table: begin -->", "<!-- corpus table: end -->"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    base = corpus.build_base(root, make_phantom_dataset)
    results = {}
    for defect in corpus.CORPUS:
        for command in corpus.COMMANDS:
            results[defect.name, command] = corpus.run_cell(defect, command, base, root / f"{defect.name}-{command}")
    return results


def test_every_command_answers_bad_input_properly(outcomes):
    wrong = []
    for key, o in outcomes.items():
        if o is None:
            continue
        if o.foreign_deleted:
            wrong.append(f"{key}: deleted {corpus.FOREIGN}, a file mddpm did not write")
        if key in corpus.ACCEPTED:
            if o.code != 0:
                wrong.append(f"{key}: expected to be accepted, got exit {o.code}: {o.first_line}")
        elif key in corpus.KNOWN_GAPS:
            if o.traceback:
                wrong.append(f"{key}: traceback")
        else:
            problems = [why for why, bad in (
                (f"exit {o.code}", o.code != 2), ("traceback", o.traceback),
                (f"{len(o.error_lines)} error lines", key[1] != "verify" and len(o.error_lines) != 1),
                (f"message does not name {o.bad_name}", o.bad_name not in o.first_line),
                ("outputs changed", o.outputs_changed),
                ("files outside the output folder changed", o.outside_changed)) if bad]
            if problems:
                wrong.append(f"{key}: {', '.join(problems)}: {o.first_line}")
    assert not wrong, "\n".join(wrong)


def test_known_gaps_are_still_gaps(outcomes):
    """A gap that got fixed must leave KNOWN_GAPS (so the docs table tells the truth)."""
    fixed = [key for key in corpus.KNOWN_GAPS
             if outcomes[key] is not None and outcomes[key].code == 2 and not outcomes[key].outputs_changed]
    assert not fixed, f"fixed, remove from KNOWN_GAPS: {fixed}"


def test_docs_table_is_current(outcomes):
    table = markdown_table(outcomes)
    if os.environ.get("MDDPM_WRITE_DOCS") == "1":
        text = DOCS.read_text()
        head, rest = text.split(BEGIN)
        _, tail = rest.split(END)
        DOCS.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")
    text = DOCS.read_text()
    committed = text.split(BEGIN)[1].split(END)[0].strip()
    assert committed == table.strip(), "docs/reliability.md is stale: rerun with MDDPM_WRITE_DOCS=1"


def test_console_script_bad_input_end_to_end(tmp_path):
    """The real `mddpm` executable: one line, exit 2, no traceback."""
    dataset = make_phantom_dataset(tmp_path / "phantom")
    corpus.truncate(dataset / "images/case000_0000.nii.gz")
    exe = shutil.which("mddpm", path=str(Path(sys.executable).parent))
    proc = subprocess.run([exe, "prepare", str(dataset), "--grid", "demo", "--workers", "1"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mddpm prepare: error: ")]
    assert len(errors) == 1 and "case000_0000.nii.gz: cannot read as NIfTI" in errors[0], proc.stderr
    assert not any(p.is_file() for p in (dataset / "prepared").rglob("*"))


def markdown_table(outcomes: dict[tuple[str, str], corpus.Outcome | None]) -> str:
    """Input × command -> outcome, one row per (input, command), grouped by input."""
    lines = ["| input | command | outcome |", "|---|---|---|"]
    for defect in corpus.CORPUS:
        for command in corpus.COMMANDS:
            key = (defect.name, command)
            o = outcomes.get(key)
            if key in corpus.NOT_APPLICABLE:
                cell = f"n/a: {corpus.NOT_APPLICABLE[key]}"
            elif o is None:
                continue
            else:
                cell = o.cell()
                if key in corpus.ACCEPTED:
                    cell += f" ({corpus.ACCEPTED[key]})"
                elif key in corpus.KNOWN_GAPS:
                    cell += f" ({corpus.KNOWN_GAPS[key]})"
            lines.append(f"| {defect.name}: {defect.description} | {command} | {cell} |")
    return "\n".join(lines) + "\n"
