"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import toy_methods  # noqa: F401  (registers the test methods "tiny" and "twogroup" the training tests train)
from mddpm.data.prepare import prepare_dataset
from mddpm.data.synth.phantom import make_phantom_dataset


@pytest.fixture(scope="module")
def prepared_phantom(tmp_path_factory) -> Path:
    """One phantom dataset (prepared once on first use) for every test of a module."""
    dataset = make_phantom_dataset(tmp_path_factory.mktemp("train") / "phantom")
    prepare_dataset(dataset, "demo", workers=1, progress=False)  # in-process: faster than a pool for 10 cases
    return dataset
