"""Every picture and relative link in the README and docs/ points at a file of the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    targets = [t.split("#")[0] for t in LINK.findall(page.read_text()) if "://" not in t and not t.startswith("#")]
    missing = [t for t in targets if t and not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)}: missing {missing}"


def test_every_picture_in_docs_img_is_shown_somewhere():
    shown = {(page.parent / t).resolve() for page in PAGES for t in LINK.findall(page.read_text()) if "://" not in t}
    unused = [p.name for p in sorted((ROOT / "docs" / "img").iterdir()) if p.resolve() not in shown]
    assert not unused, f"docs/img: not referenced from README.md or docs/*.md: {unused}"


def test_license_citation_and_version_agree():
    import tomllib
    import yaml

    root = ROOT
    from mddpm._version import __version__

    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert project["license"] == "MIT" and (root / "LICENSE").read_text().startswith("MIT License")
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mddpm._version.__version__"}
    citation = yaml.safe_load((root / "CITATION.cff").read_text())
    assert citation["version"] == __version__ and citation["license"] == "MIT"
    assert citation["preferred-citation"]["authors"][0]["family-names"] == "Iqbal"
    assert f"## {__version__}" in (root / "CHANGELOG.md").read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_reference_to_files_or_sections_that_do_not_exist(page):
    """``reference/...`` is not part of the repository, and docs/protocol.md has no numbered sections."""
    text = page.read_text()
    missing = [t for t in re.findall(r"reference/[\w./-]+", text) if not (ROOT / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)}: {missing}"
    assert "§" not in (ROOT / "docs" / "protocol.md").read_text()
    assert not re.findall(r"protocol(?:\.md)?`? §", text), f"{page.relative_to(ROOT)} cites a section of protocol.md"


def test_protocol_states_the_demo_presets_precision():
    from mddpm.config import resolve_config

    stated = re.search(r"trains in (fp32|bf16) \(`train\.precision: '(\w+)'`", (ROOT / "docs/protocol.md").read_text())
    assert stated is not None
    for method in ("ddpm", "pddpm", "mddpm-ipm", "mddpm-fpm", "mddpm-fpmcm", "mddpm-released"):
        assert resolve_config(method, "demo")["train"]["precision"] == stated[2]
    assert {"fp32": "32", "bf16": "bf16"}[stated[1]] == stated[2]
