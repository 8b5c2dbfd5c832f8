"""Shared fixtures: tiny phantom datasets (:mod:`mddpm.data.synth.phantom`) and the browser."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from mddpm.data.synth.phantom import make_phantom_dataset

# The test folders mirror the package; a test module that shares another's fixtures imports it by name
# (test_api uses test_detect's run), so every test folder is importable from any other.
for _folder in sorted(Path(__file__).parent.iterdir()):
    if _folder.is_dir() and _folder.name.isidentifier() and not (_folder / "__init__.py").exists():
        sys.path.insert(0, str(_folder))


@pytest.fixture
def phantom_dataset(tmp_path) -> Path:
    return make_phantom_dataset(tmp_path / "phantom")


BROWSERS = ("chromium", "chromium-browser", "google-chrome")
NO_BROWSER = "no chromium on PATH"
ENABLE_BROWSER = "apt-get install -y chromium (`make test` does it when run as root), then run the tests again"


@pytest.fixture
def browser() -> str:
    """Path of a Chromium for headless rendering; skips without one, but fails under CI=true."""
    found = next(filter(None, map(shutil.which, BROWSERS)), None)
    if found is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{NO_BROWSER} and CI=true: the browser test must run here; {ENABLE_BROWSER}")
        pytest.skip(NO_BROWSER)
    return found


def pytest_terminal_summary(terminalreporter) -> None:
    """One line at the end of the run when the browser test was skipped, saying how to enable it."""
    skipped = terminalreporter.stats.get("skipped", [])
    if any(NO_BROWSER in str(report.longrepr) for report in skipped):
        terminalreporter.write_line(f"the browser test was SKIPPED ({NO_BROWSER}); to run it: {ENABLE_BROWSER}",
                                    yellow=True, bold=True)
