"""One line for what libraries and the file system say: SimpleITK's C++ location left out, a newline in a
path escaped; a damaged prepared cache is rebuilt by prepare, named by its readers with the fix, and a cache
that does not read back after writing never replaces the old one."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from mddpm.cli.main import main
from mddpm.data import prepare as prepare_module
from mddpm.data.cache import cache_damage, load_prepared
from mddpm.data.prepare import prepare_dataset, prepared_path
from mddpm.data.synth.phantom import make_phantom_dataset
from mddpm.errors import MddpmError, first_line
from mddpm.weights import load_weights

from .defects import fractional, truncate


def test_simpleitk_messages_lose_their_source_location(tmp_path):
    with pytest.raises(RuntimeError) as err:
        sitk.ReadImage(str(tmp_path / "absent.nii.gz"))
    assert ".cxx" in str(err.value) or ".hxx" in str(err.value)  # what SimpleITK says
    line = first_line(err.value)
    assert line.startswith("RuntimeError: The file") and "absent.nii.gz" in line and ".cxx" not in line


def test_a_newline_in_a_path_does_not_split_the_message(tmp_path, capsys):
    dataset = make_phantom_dataset(tmp_path / "two\nlines")
    truncate(dataset / "images/case000_0000.nii.gz")
    assert main(["prepare", str(dataset), "--grid", "demo", "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "two\\nlines/images/case000_0000.nii.gz" in err[0], err
    assert main(["verify", str(dataset)]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all("two\\nlines" in line for line in out), out  # the problem, the summary


@pytest.fixture
def cached(tmp_path):
    dataset = make_phantom_dataset(tmp_path / "phantom", n_healthy=3, n_anomalous=2)
    return dataset, prepare_dataset(dataset, "demo", workers=1, progress=False)


def test_a_truncated_cache_is_named_with_the_fix_and_rebuilt_by_prepare(cached, capsys):
    dataset, cache = cached
    good = np.load(cache / "images.npy")
    truncate(cache / "images.npy")
    with pytest.raises(MddpmError, match=r"images.npy: \d+ bytes where its header announces \d+ .*"
                                         r"run `mddpm prepare --force`"):
        load_prepared(cache)
    assert prepare_dataset(dataset, "demo", workers=1, progress=False) == cache
    assert "cache is damaged" in capsys.readouterr().err
    np.testing.assert_array_equal(load_prepared(cache).images, good)


def test_a_cache_that_does_not_read_back_replaces_nothing(cached, monkeypatch):
    dataset, cache = cached
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    monkeypatch.setattr(prepare_module, "parallel_map", lambda *args, **kwargs: None)  # no volume written
    with pytest.raises(MddpmError, match=r"does not read back after writing \(a full disk\?\): prepared.json: .*; "
                                         "nothing was replaced"):
        prepare_dataset(dataset, "demo", force=True, workers=1, progress=False)
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name], "temporary folder left"


def test_the_read_back_finds_a_volume_never_written(cached):
    _, cache = cached
    assert cache_damage(cache, read_volumes=True) is None
    masks = np.load(cache / "masks.npy", mmap_mode="r+")
    masks[1] = 0  # what a sparse file shows where a write never landed
    masks.flush()
    del masks
    assert cache_damage(cache) is None  # sizes and prepared.json are fine
    assert "case 'case001' was not written completely" in cache_damage(cache, read_volumes=True)


def test_prepare_refuses_a_fractional_mask_as_verify_does(tmp_path):
    dataset = make_phantom_dataset(tmp_path / "phantom", n_healthy=3, n_anomalous=2)
    fractional(dataset / "masks/case001.nii.gz")
    with pytest.raises(MddpmError, match="case001.nii.gz: brain mask is not binary"):
        prepare_dataset(dataset, "demo", workers=1, progress=False)
    assert not prepared_path(dataset, "demo").exists()


def test_a_looping_link_and_a_foreign_zip_are_named_for_what_they_are(tmp_path):
    dataset = make_phantom_dataset(tmp_path / "phantom", n_healthy=3, n_anomalous=2)
    image = dataset / "images/case001_0000.nii.gz"
    image.unlink()
    image.symlink_to(dataset / "images/loop")
    (dataset / "images/loop").symlink_to(image)
    with pytest.raises(MddpmError, match="case001_0000.nii.gz: a symbolic link that leads nowhere"):
        prepare_dataset(dataset, "demo", workers=1, progress=False)
    weights = tmp_path / "best.pt"
    with zipfile.ZipFile(weights, "w") as archive:
        archive.writestr("archive/data.pkl", bytes(range(256)))
    with pytest.raises(MddpmError, match=r"best.pt: not a PyTorch file \(a zip archive without PyTorch's layout"):
        load_weights(weights)
