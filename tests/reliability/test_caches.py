"""Stale caches and build folders: a scan edited in place, its times restored (``touch -r``), makes the prepared
cache stale; the cache is not re-read when nothing changed; a build folder left by a killed ``prepare`` is
removed by the next run; datasets and caches follow the umask."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mddpm.cli.main import main
from mddpm.data import cache as cache_module
from mddpm.data.prepare import prepare_dataset, prepared_path
from mddpm.data.synth import build as synth
from mddpm.data.synth.phantom import make_phantom_dataset

from .defects import edit_keeping_size

PREPARE = ["--grid", "demo", "--workers", "1", "--no-progress"]


@pytest.fixture
def trusted_times(monkeypatch):
    """Every file's times count as settled at once (not only after mddpm.io.RACY_NS): the ctime alone must show
    an edit."""
    monkeypatch.setattr("mddpm.io.RACY_NS", 0)


def test_a_scan_edited_in_place_with_its_times_restored_makes_the_cache_stale(tmp_path, trusted_times, capsys):
    dataset = make_phantom_dataset(tmp_path / "phantom")
    assert main(["prepare", str(dataset), *PREPARE]) == 0
    cache = prepared_path(dataset, "demo")
    old = np.load(cache / "images.npy")
    scan = dataset / "images/case000_0000.nii.gz"
    shutil.copy2(scan, tmp_path / "reference")  # its times, as cp -p keeps them
    size, mtime = scan.stat().st_size, scan.stat().st_mtime_ns
    edit_keeping_size(scan)
    subprocess.run(["touch", "-r", str(tmp_path / "reference"), str(scan)], check=True)
    assert (scan.stat().st_size, scan.stat().st_mtime_ns) == (size, mtime)
    capsys.readouterr()
    assert main(["prepare", str(dataset), *PREPARE]) == 0
    assert "cache is stale (settings or source files changed); rebuilding" in capsys.readouterr().err
    new = np.load(cache / "images.npy")
    assert not np.array_equal(new[0], old[0])  # case000: the edited scan
    np.testing.assert_array_equal(new[1:], old[1:])


def test_an_unchanged_dataset_is_not_read_again_and_a_touch_alone_keeps_the_cache(tmp_path, trusted_times,
                                                                                  monkeypatch, capsys):
    dataset = make_phantom_dataset(tmp_path / "phantom")
    cache = prepare_dataset(dataset, "demo", workers=1, progress=False)
    built = (cache / "images.npy").stat().st_mtime_ns
    hashed, real = [], cache_module.file_sha256
    monkeypatch.setattr(cache_module, "file_sha256", lambda p: hashed.append(p) or real(p))
    assert prepare_dataset(dataset, "demo", workers=1, progress=False) == cache
    assert hashed == []  # the per-file record: sizes and times unchanged, nothing read
    (dataset / "images/case001_0000.nii.gz").touch()  # new times, same bytes: read once, the cache kept
    capsys.readouterr()
    assert prepare_dataset(dataset, "demo", workers=1, progress=False) == cache
    assert [p.name for p in hashed] == ["case001_0000.nii.gz"] and "stale" not in capsys.readouterr().err
    assert (cache / "images.npy").stat().st_mtime_ns == built
    prepare_dataset(dataset, "demo", workers=1, progress=False)
    assert len(hashed) == 1  # its new times are recorded


def test_the_build_folder_of_a_killed_prepare_is_removed_by_the_next_run(tmp_path, capsys):
    dataset = make_phantom_dataset(tmp_path / "phantom", shape=(64, 64, 40), n_healthy=40, n_anomalous=2)
    parent = prepared_path(dataset, "paper").parent
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mddpm"), "prepare", str(dataset), "--grid", "paper",
                             "--workers", "1", "--no-progress"], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, left = time.monotonic() + 120, []
    while not left and proc.poll() is None and time.monotonic() < deadline:
        left = sorted(parent.glob(".96x96x50.*.tmp")) if parent.is_dir() else []
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert left and proc.returncode == -signal.SIGKILL, f"prepare ended before it could be killed: {err}"
    assert left[0].is_dir() and f".{proc.pid}." in left[0].name
    alive = parent / left[0].name.replace(f".{proc.pid}.", f".{os.getpid()}.")  # a live process's build: kept
    alive.mkdir()
    user = parent / ".96x96x50.backup.tmp"  # not named as ours (no host, no pid): kept
    user.mkdir()
    assert main(["prepare", str(dataset), "--grid", "paper", "--workers", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"{left[0]}: removed, the temporary folder of a process that ended (pid {proc.pid})" in err
    assert not left[0].exists() and alive.is_dir() and user.is_dir()
    assert prepared_path(dataset, "paper").is_dir()


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_datasets_and_caches_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        cache = prepare_dataset(make_phantom_dataset(tmp_path / "phantom"), "demo", workers=1, progress=False)
        dataset = synth.synthesize(tmp_path / "synth", n_train=1, n_val=1, n_test=0, n_tumour_val=0,
                                   n_tumour_test=0, n_ms_val=0, n_ms_test=0, seed=0, workers=1)
    finally:
        os.umask(old)
    for folder in (cache, dataset):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask, folder
