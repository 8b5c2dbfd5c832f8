"""Own data from ``mddpm preprocess`` to ``mddpm train`` without editing dataset.json: a seeded validation split."""

from __future__ import annotations

import json

import pytest

import mddpm.training.train as train_module
from mddpm.cli.main import main
from mddpm.data.dataset import VAL_SEED, load_dataset, validation_split
from mddpm.io import write_json


def test_validation_split_is_seeded_a_fifth_and_disjoint():
    ids = [f"c{i:02d}" for i in range(11)]
    train, val = validation_split(ids)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == ids
    assert validation_split(list(reversed(ids)))[1] == list(reversed(val))  # the same cases in any order
    assert validation_split(ids[:2])[1] and validation_split(ids[:1]) == (ids[:1], [])
    assert len(validation_split([f"x{i}" for i in range(100)])[1]) == 20


def test_preprocess_writes_a_val_split_and_train_runs_on_it_untouched(write_blob_scan, write_lesion_label, tmp_path,
                                                                      capsys):
    for i in range(5):
        write_blob_scan(tmp_path / "raw" / f"h{i}.nii.gz", i)
    write_blob_scan(tmp_path / "raw" / "t0.nii.gz", 9)
    write_lesion_label(tmp_path / "labels" / "t0.nii.gz")
    out = tmp_path / "data"
    assert main(["preprocess", str(tmp_path / "raw"), str(out), "--labels", str(tmp_path / "labels"),
                 "--nonzero-mask", "--skip-registration", "--skip-n4", "--spacing", "2", "--no-progress"]) == 0
    ds = load_dataset(out)
    healthy = [f"h{i}" for i in range(5)]
    assert ds.splits["test"] == ["t0"] and sorted(ds.splits["train"] + ds.splits["val"]) == healthy
    assert (ds.splits["train"], ds.splits["val"]) == validation_split(healthy) and len(ds.splits["val"]) == 1
    stated = next(p for p in ds.meta["provenance"] if p["step"] == "splits")["settings"]
    assert stated["seed"] == VAL_SEED and "20 %" in stated["rule"] and f"default_rng({VAL_SEED})" in stated["rule"]
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(["train", "--data", str(out), "--method", "intensity", "--out", str(run), "--no-progress"]) == 0
    assert "no split" not in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["dataset"] == str(out.resolve())


class _Stop(Exception):
    pass


def test_train_draws_validation_from_train_when_a_dataset_has_no_val_split(phantom_dataset, capsys, monkeypatch):
    meta = json.loads((phantom_dataset / "dataset.json").read_text())
    del meta["splits"]["val"]
    write_json(phantom_dataset / "dataset.json", meta)
    seen = {}

    def module(model, cfg, prepared, train, val):  # stands in for the Lightning module: what train would fit on
        seen.update(train=train, val=val)
        raise _Stop()

    monkeypatch.setattr(train_module, "AnomalyModule", module)
    with pytest.raises(_Stop):
        train_module.train(phantom_dataset, "vae", out=phantom_dataset.parent / "r", progress=False,
                           overrides=["train.max_steps=1"])
    err = capsys.readouterr().err
    assert "has no split 'val': validating on 1 of its 4 train cases" in err and "default_rng(3141)" in err
    assert (seen["train"], seen["val"]) == validation_split(meta["splits"]["train"])
