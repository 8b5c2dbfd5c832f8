"""print_report: failures to ``log`` (default stderr), then the summary to ``echo`` (default stdout)."""

from __future__ import annotations

from pathlib import Path

from mddpm.preprocess.report import PreprocessReport, print_report


def _report() -> PreprocessReport:
    return PreprocessReport(out=Path("out"), processed=["a"], skipped=["b"],
                            failures=["x.nii.gz: cannot read\nsecond line"],
                            markers={"a": {"seconds": {"read": 1.0, "n4": 2.0}}, "b": {"seconds": {"read": 9.0}}},
                            dataset_json=Path("out/dataset.json"))


def test_failures_go_to_log_and_the_summary_to_echo():
    logged, echoed = [], []
    print_report(_report(), prefix="p: ", log=logged.append, echo=echoed.append)
    assert logged == ["p: x.nii.gz: cannot read\\nsecond line"]  # the break shown as \\n: one line
    assert echoed == ["out: 2 case(s) ready (1 processed, 3.0 s per case, 1 already done), 1 failed; "
                      "wrote out/dataset.json"]


def test_by_default_failures_are_on_stderr_and_the_summary_on_stdout(capsys):
    print_report(PreprocessReport(out=Path("out"), failures=["x.nii.gz: bad"]))
    cap = capsys.readouterr()
    assert cap.err == "mddpm preprocess: error: x.nii.gz: bad\n"
    assert cap.out == ("out: 0 case(s) ready (0 processed, 0 already done), 1 failed; "
                       "no dataset.json (no case finished)\n")
