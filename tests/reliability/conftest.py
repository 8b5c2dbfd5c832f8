"""The reliability probes' shared material: a trained run with its maps."""

from __future__ import annotations

import pytest

from mddpm.cli.main import main
from mddpm.data.prepare import prepare_dataset
from mddpm.data.synth.phantom import make_phantom_dataset

from .helpers import TINY, files_of


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dataset, a trained run (checkpoints, csv and tensorboard logs) and its maps of lesion_val / lesion_test."""
    root = tmp_path_factory.mktemp("outputs")
    dataset = make_phantom_dataset(root / "phantom")
    prepare_dataset(dataset, "demo", workers=1, progress=False)
    run = root / "run"
    assert main(["train", "--data", str(dataset), "--out", str(run), *TINY]) == 0
    assert {"checkpoints/best.ckpt", "logs/csv/metrics.csv", "logs/tb/hparams.yaml"} <= set(files_of(run))
    for split in ("lesion_val", "lesion_test"):
        assert main(["predict", str(run), "--data", str(dataset), "--split", split, "--out", str(root / split),
                     "--device", "cpu", "--no-progress"]) == 0
    return dataset, run, root / "lesion_val", root / "lesion_test"
