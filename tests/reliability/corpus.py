"""The bad-input corpus: each input is one defect written into a copy of the phantom dataset (or of a
good maps folder, or of a scan), run through every command that reads data.

:func:`build_base` makes the good material once (dataset, demo-grid cache, an ``intensity`` run, maps
of lesion_val / lesion_test and a threshold.json). :func:`run_cell` applies one defect for one command
in a fresh folder, calls ``mddpm.cli.main.main`` in-process and returns an :class:`Outcome`.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mddpm.cli.main import main
from mddpm.data.prepare import prepare_dataset

from .defects import (
    all_zero,
    complex_voxels,
    constant,
    format_version_99,
    four_d,
    fractional,
    lying_header,
    nan_threshold,
    negative,
    non_binary,
    non_finite,
    not_nifti,
    other_affine,
    other_shape,
    permute_axes,
    rename_case,
    role_as_list,
    triple_spacing,
    truncate,
    two_d,
    unknown_label_encoding,
    zero_voxel_size,
)

COMMANDS = ("verify", "prepare", "train", "predict", "evaluate", "detect", "preprocess", "benchmark")
BAD_CASE = "case000"  # a train case: every dataset command reads it
BAD_LABEL_CASE = "case008"  # a lesion_test case (has a label)


@dataclass
class Outcome:
    """What a command did with one input: exit code, its stderr lines, and whether outputs changed."""

    code: int
    stderr: list[str]
    stdout: list[str]
    traceback: bool
    outputs_changed: bool
    outside_changed: bool  # a file outside the output folder appeared, changed or went
    foreign_deleted: bool  # a file mddpm did not write was removed from the output folder
    bad_name: str  # the file (or folder, or case id) the message must name

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr if line.startswith("mddpm ") and ": error: " in line]

    @property
    def first_line(self) -> str:
        """The message: the error line on stderr (progress notes before it aside); verify, a report
        tool, prints its findings on stdout."""
        if self.error_lines:
            return self.error_lines[0]
        if self.stderr:
            return self.stderr[-1]
        return self.stdout[0] if self.code and self.stdout else ""

    def cell(self) -> str:
        if self.code == 0:
            return "accepted (exit 0)"
        # details in parentheses are cut: they can hold tmp paths whose length varies between runs
        head, cut, _ = self.first_line.partition(" (")
        text = (head + (" (…)" if cut else "")).replace("|", "\\|")
        return f"exit {self.code}: `{text}`"


# ---------------------------------------------------------------- the corpus

@dataclass(frozen=True)
class Defect:
    """One bad input. ``target`` is "image", "mask", "label" (of the bad case), "scan" (its image and mask
    alike), "dataset-json", "splits", "case-id" (the bad case's id becomes a path), "cache" (the prepared
    cache's images.npy), "threshold" (detect's threshold.json) or "output"."""

    name: str
    description: str
    target: str
    apply: Callable[[Path], None] | None = None


CORPUS: tuple[Defect, ...] = (
    Defect("truncated", "truncated .nii.gz (half the bytes)", "image", truncate),
    Defect("not-nifti", "a gzip file that is not NIfTI", "image", not_nifti),
    Defect("2d", "2-D image", "image", two_d),
    Defect("4d", "4-D image", "image", four_d),
    Defect("nan-inf", "NaN and Inf voxels", "image", non_finite),
    Defect("shape-mismatch", "mask shape differs from the image", "mask", other_shape),
    Defect("affine-mismatch", "mask affine differs from the image (10 mm shift)", "mask", other_affine),
    Defect("empty-mask", "empty brain mask", "mask", all_zero),
    Defect("non-binary-label", "label with values other than 0/1", "label", non_binary),
    Defect("negative", "image shifted to negative values", "image", negative),
    Defect("constant", "constant image", "image", constant),
    Defect("lying-header", "header claims 10^9 voxels in a small file", "image", lying_header),
    Defect("zero-voxel", "degenerate affine (voxel size 0)", "image", zero_voxel_size),
    Defect("missing-case", "a split names a case not in the dataset", "splits"),
    Defect("unwritable-out", "output folder cannot be written", "output"),
    Defect("existing-out", "output folder exists, no --force", "output"),
    Defect("traversal-id", "a case id that climbs out of its folder (../escape)", "case-id"),
    Defect("absolute-id", "an absolute path as case id", "case-id"),
    Defect("foreign-force", "output folder holds a file mddpm did not write; --force", "output"),
    Defect("fractional-mask", "brain mask of 0.5 instead of 1", "mask", fractional),
    Defect("complex", "complex64 voxels", "image", complex_voxels),
    Defect("format-version", "dataset.json format_version 99", "dataset-json", format_version_99),
    Defect("label-encoding", "dataset.json label_encoding 'rainbow'", "dataset-json", unknown_label_encoding),
    Defect("role-list", "a list as a case's role", "dataset-json", role_as_list),
    Defect("truncated-cache", "prepared cache with images.npy cut in half", "cache", truncate),
    Defect("permuted-axes", "scan and mask stored with permuted axes (affine following)", "scan", permute_axes),
    Defect("lying-spacing", "scan and mask headers claim 3x the voxel size", "scan", triple_spacing),
    Defect("nan-threshold", "threshold.json holds NaN", "threshold", nan_threshold),
    Defect("nested-force", "the command's own earlier output, with user files below its folders; --force", "output"),
)
FOREIGN = "notes.txt"  # the file mddpm did not write, in the foreign-force cells
# the user files of the nested-force cells, below the folders each command writes (or a cache folder, for prepare):
# a name the command never writes in a folder it writes, a folder of the user's own
NESTED = {"train": ("checkpoints/best_BACKUP.ckpt", "logs/my_analysis/notes.txt"),
          "predict": ("recon/manual/case008.nii.gz",),
          "evaluate": ("figures/case008_edited.png", "segmentations/manual/expert_corrected.nii.gz"),
          "detect": ("manual/anomaly_map.nii.gz",),
          "prepare": ("backup/images.npy",)}

# (defect, command) pairs that are legitimately accepted (exit 0), with the reason shown in the docs
ACCEPTED: dict[tuple[str, str], str] = {
    ("negative", "verify"): "verify reports negative intensities as a warning",
    ("unwritable-out", "verify"): "verify writes nothing",
    ("existing-out", "verify"): "verify writes nothing",
    ("existing-out", "prepare"): "an up-to-date cache is reused, not rewritten",
    ("existing-out", "benchmark"): "benchmark resumes into its folder by design (--no-resume to refuse)",
    ("negative", "prepare"): "intensities are percentile-normalised inside the brain",
    ("negative", "train"): "intensities are percentile-normalised inside the brain",
    ("negative", "predict"): "intensities are percentile-normalised inside the brain",
    ("negative", "detect"): "intensities are percentile-normalised inside the brain",
    ("negative", "benchmark"): "intensities are percentile-normalised inside the brain",
    ("negative", "evaluate"): "a map of any real scores can be thresholded",
    ("non-binary-label", "preprocess"): "label values are kept and label_encoding is set to gt0",
    ("shape-mismatch", "preprocess"): "raw masks are resampled onto the scan's grid",
    ("affine-mismatch", "preprocess"): "raw masks are resampled onto the scan's grid",
    ("constant", "evaluate"): "a constant map is a valid (useless) prediction",
    ("foreign-force", "preprocess"): "writes its cases beside the foreign file and deletes nothing",
    ("foreign-force", "benchmark"): "resumes into its folder beside the foreign file and deletes nothing",
    ("fractional-mask", "preprocess"): "raw brain masks: values > 0 are brain (docs/preprocess.md)",
    ("truncated-cache", "prepare"): "a damaged cache is rebuilt, and said so",
    ("lying-spacing", "verify"): "verify warns that the voxel size differs from geometry.spacing_mm",
    ("permuted-axes", "preprocess"): "raw scans are reoriented",
}

# (defect, command) pairs whose behaviour falls short of the standard, reported to the owners
KNOWN_GAPS: dict[tuple[str, str], str] = {}

# (defect, command) pairs where the command does not read the defective file
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("non-binary-label", "detect"): "detect reads no label",
    ("missing-case", "detect"): "detect reads no dataset.json",
    ("missing-case", "preprocess"): "preprocess reads raw scans, no splits",
    ("non-binary-label", "evaluate"): "labels come from the prepared cache (refused by prepare)",
    ("empty-mask", "evaluate"): "masks come from the prepared cache (refused by prepare)",
    ("traversal-id", "detect"): "detect reads no dataset.json",
    ("absolute-id", "detect"): "detect reads no dataset.json",
    ("traversal-id", "preprocess"): "case ids come from file names, which hold no separator",
    ("absolute-id", "preprocess"): "case ids come from file names, which hold no separator",
    ("foreign-force", "verify"): "verify writes nothing",
    ("fractional-mask", "evaluate"): "masks come from the prepared cache (refused by prepare)",
    ("complex", "evaluate"): "maps come from predict (whose reading of such an image is the other rows)",
    **{(name, command): why for name in ("format-version", "label-encoding", "role-list") for command, why in (
        ("evaluate", "evaluate reads predict.json and the prepared cache, not dataset.json"),
        ("detect", "detect reads no dataset.json"), ("preprocess", "preprocess writes dataset.json, reads none"))},
    ("truncated-cache", "verify"): "verify reads the dataset's files, not the cache",
    ("truncated-cache", "detect"): "detect prepares its scan in memory",
    ("truncated-cache", "preprocess"): "preprocess makes no cache",
    ("permuted-axes", "evaluate"): "maps come from predict, on the prepared grid",
    ("lying-spacing", "evaluate"): "maps come from predict, on the prepared grid",
    **{("lying-spacing", command): "not run: in a dataset a header's voxel size is taken as true (each file is "
       "resampled by its own; verify warns when it differs from geometry.spacing_mm)"
       for command in ("prepare", "train", "predict", "preprocess", "benchmark")},
    **{("truncated-cache", command): "not run: reaches the cache through prepare_dataset, as prepare does"
       for command in ("train", "predict", "benchmark")},
    **{("nan-threshold", command): "only detect reads a threshold.json"
       for command in ("verify", "prepare", "train", "predict", "evaluate", "preprocess", "benchmark")},
    ("nested-force", "verify"): "verify writes nothing",
    **{("nested-force", command): "deletes nothing (the foreign-force row)" for command in ("preprocess", "benchmark")},
}


@dataclass
class Base:
    """Good material the cells copy from."""

    root: Path
    dataset: Path
    run: Path
    val_maps: Path
    test_maps: Path
    threshold: Path


def build_base(root: Path, make_dataset: Callable[[Path], Path]) -> Base:
    """Dataset, demo cache, an ``intensity`` run, lesion_val/lesion_test maps and a threshold.json."""
    dataset = make_dataset(root / "phantom")
    run, val_maps, test_maps, ev = root / "run", root / "maps_val", root / "maps_test", root / "eval"
    for argv in (["train", "--data", str(dataset), "--method", "intensity", "--out", str(run), "--no-progress"],
                 ["predict", str(run), "--data", str(dataset), "--split", "lesion_val", "--out", str(val_maps),
                  "--no-progress", "--device", "cpu"],
                 ["predict", str(run), "--data", str(dataset), "--split", "lesion_test", "--out", str(test_maps),
                  "--no-progress", "--device", "cpu"],
                 ["evaluate", str(test_maps), "--val", str(val_maps), "--out", str(ev)]):
        code, err, _ = _call(argv)
        if code != 0:
            raise RuntimeError(f"building the corpus base failed: mddpm {' '.join(argv)}: {err}")
    return Base(root, dataset, run, val_maps, test_maps, ev / "threshold.json")


@contextlib.contextmanager
def _in_process_prepare():
    """Commands that prepare a cache on the way (train, predict, benchmark) do it in-process: a pool of
    spawned workers would cost more than the 10 tiny cases."""
    defaults = prepare_dataset.__defaults__
    names = [p.name for p in inspect.signature(prepare_dataset).parameters.values() if p.default is not p.empty]
    wanted = {"force": False, "workers": 1, "progress": False}
    prepare_dataset.__defaults__ = tuple(wanted.get(n, d) for n, d in zip(names, defaults))
    try:
        yield
    finally:
        prepare_dataset.__defaults__ = defaults


def _call(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _in_process_prepare():
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = int(e.code or 0)
        except Exception:  # an unhandled exception is what the corpus hunts for: keep the traceback
            traceback.print_exc(file=err)
            code = 1
    return code, err.getvalue(), out.getvalue()


def _snapshot(path: Path, skip: tuple[Path, ...] = ()) -> dict[str, bytes] | None:
    """Every file under ``path`` (but not under ``skip``) with its bytes (None when absent or holding no file)."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    files = {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
             if p.is_file() and not any(p.is_relative_to(s) for s in skip)}
    return files or None


def _benchmark_grid(folder: Path, dataset: Path) -> Path:
    grid = {"name": "corpus", "preset": "demo",
            "datasets": [{"name": "phantom", "path": str(dataset), "healthy_val": "val",
                          "test_sets": [{"name": "blob", "test": "lesion_test", "val": "lesion_val"}]}],
            "methods": ["intensity"], "runs": {"seeds": [0]}, "reference": "intensity",
            "thresholds": ["bisection"], "figures": 0}
    path = folder / "grid.json"
    path.write_text(json.dumps(grid))
    return path


def run_cell(defect: Defect, command: str, base: Base, folder: Path) -> Outcome | None:
    """Apply ``defect`` in ``folder`` (fresh), run ``command`` on it; None when not applicable."""
    if (defect.name, command) in NOT_APPLICABLE:
        return None
    folder.mkdir(parents=True)
    dataset = folder / "phantom"
    out = folder / "out"
    bad: Path
    needs_dataset = command not in ("evaluate", "detect")
    if needs_dataset or defect.target in ("image", "mask", "label", "scan"):
        shutil.copytree(base.dataset, dataset, ignore=shutil.ignore_patterns("prepared"))
    test_maps = base.test_maps
    if command == "evaluate":
        test_maps = folder / "maps_test"
        shutil.copytree(base.test_maps, test_maps)

    # where the defect goes
    case = BAD_LABEL_CASE if defect.target == "label" else BAD_CASE
    threshold = base.threshold
    if defect.target == "scan":
        for rel in (f"masks/{case}.nii.gz", f"images/{case}_0000.nii.gz"):
            bad = dataset / rel
            defect.apply(bad)
    elif defect.target == "dataset-json":
        bad = dataset / "dataset.json"
        defect.apply(bad)
    elif defect.target == "threshold":
        bad = threshold = folder / "threshold.json"
        shutil.copy(base.threshold, bad)
        defect.apply(bad)
    elif defect.target == "cache" and command == "evaluate":  # the maps name a cache of their own
        cache = folder / "prepared"
        shutil.copytree(json.loads((test_maps / "predict.json").read_text())["prepared"], cache)
        meta = json.loads((test_maps / "predict.json").read_text())
        (test_maps / "predict.json").write_text(json.dumps({**meta, "prepared": str(cache)}))
        bad = cache / "images.npy"
        defect.apply(bad)
    elif defect.target == "cache":
        _call(["prepare", str(dataset), "--grid", "demo", "--workers", "1"])
        bad = next((dataset / "prepared").iterdir()) / "images.npy"
        defect.apply(bad)
    elif command == "evaluate" and defect.target in ("image", "mask"):
        meta = json.loads((test_maps / "predict.json").read_text())
        bad = test_maps / f"{meta['case_ids'][0]}.nii.gz"  # the map stands in for the image and the mask
        defect.apply(bad)
    elif defect.target in ("image", "mask", "label"):
        rel = {"image": f"images/{case}_0000.nii.gz", "mask": f"masks/{case}.nii.gz",
               "label": f"labels/{case}.nii.gz"}[defect.target]
        bad = dataset / rel
        defect.apply(bad)
    elif defect.target == "case-id":
        bad_id = "../escape" if defect.name == "traversal-id" else str(folder / "escape")
        if command == "evaluate":
            bad = test_maps / "predict.json"
            meta = json.loads(bad.read_text())
            meta["case_ids"][0] = bad_id
            bad.write_text(json.dumps(meta))
        else:
            bad = dataset / "dataset.json"
            rename_case(bad, BAD_CASE, bad_id)
    elif defect.target == "splits":
        if command == "evaluate":
            bad = test_maps / "predict.json"
            meta = json.loads(bad.read_text())
            meta["case_ids"].append("case999")
            bad.write_text(json.dumps(meta))
        else:
            bad = dataset / "dataset.json"
            meta = json.loads(bad.read_text())
            meta["splits"]["train"].append("case999")
            meta["splits"]["lesion_test"].append("case999")
            bad.write_text(json.dumps(meta))
    else:
        bad = out
    if defect.name == "unwritable-out":
        blocker = folder / "blocker"
        blocker.write_text("a regular file: nothing can be created under it\n")
        out = bad = blocker / "out"
        if command == "prepare":  # prepare writes DATASET/prepared/
            bad = dataset / "prepared"
            bad.write_text("a regular file where the cache folder goes\n")
    elif defect.name in ("existing-out", "foreign-force"):
        if command == "prepare":
            _call(["prepare", str(dataset), "--grid", "demo", "--workers", "1"])
            bad = dataset / "prepared"
            if defect.name == "foreign-force":
                bad = next(p for p in bad.iterdir() if p.is_dir())  # the grid's cache folder
        else:
            out.mkdir()
            (out / "earlier.txt").write_text("an earlier result\n")
        if defect.name == "foreign-force":
            (bad / FOREIGN).write_text("a file mddpm did not write\n")
    elif defect.name == "nested-force":  # the command's own output first, then the user's files below it
        code, err, _ = _call(_argv(command, dataset, out, base, test_maps, folder, threshold))
        if code != 0:
            raise RuntimeError(f"nested-force: the first {command} failed: {err}")
        bad = next((dataset / "prepared").iterdir()) if command == "prepare" else out
        for rel in NESTED[command]:
            (bad / rel).parent.mkdir(parents=True, exist_ok=True)
            (bad / rel).write_text("a user's file\n")
    watched = dataset / "prepared" if command == "prepare" else out
    argv = _argv(command, dataset, out, base, test_maps, folder, threshold)
    elsewhere = (watched, dataset / "prepared")  # the cache a command may (re)build on the way is no output
    before, around = _snapshot(watched), _snapshot(folder, skip=elsewhere)

    if defect.name in ("foreign-force", "nested-force"):
        argv.append("--force")
    code, err, out_text = _call(argv)
    err, out_text = (t.replace(str(folder), "CELL").replace(str(base.root), "BASE") for t in (err, out_text))
    named = case if defect.target in ("image", "mask", "label", "scan") and command != "evaluate" else bad.name
    named = "case999" if defect.target == "splits" else named
    named = Path(NESTED[command][0]).name if defect.name == "nested-force" else named
    planted = {"foreign-force": (FOREIGN,), "nested-force": NESTED.get(command, ())}.get(defect.name, ())
    foreign_deleted = any(not (bad / rel).is_file() for rel in planted)
    return Outcome(code=code, stderr=err.strip().splitlines(), stdout=out_text.strip().splitlines(),
                   traceback="Traceback" in err, outputs_changed=_snapshot(watched) != before,
                   outside_changed=_snapshot(folder, skip=elsewhere) != around, foreign_deleted=foreign_deleted,
                   bad_name=named)


def _argv(command: str, dataset: Path, out: Path, base: Base, test_maps: Path, folder: Path,
          threshold: Path) -> list[str]:
    if command == "verify":
        return ["verify", str(dataset)]
    if command == "prepare":
        return ["prepare", str(dataset), "--grid", "demo", "--workers", "1"]
    if command == "train":
        return ["train", "--data", str(dataset), "--method", "intensity", "--out", str(out), "--no-progress"]
    if command == "predict":
        return ["predict", str(base.run), "--data", str(dataset), "--split", "lesion_test", "--out", str(out),
                "--no-progress", "--device", "cpu"]
    if command == "evaluate":
        return ["evaluate", str(test_maps), "--val", str(base.val_maps), "--out", str(out)]
    if command == "detect":
        src = dataset if dataset.exists() else base.dataset
        return ["detect", str(src / f"images/{BAD_CASE}_0000.nii.gz"), "--model", str(base.run),
                "--mask", str(src / f"masks/{BAD_CASE}.nii.gz"), "--out", str(out), "--threshold",
                str(threshold), "--device", "cpu"]
    if command == "preprocess":  # raw scans named <case id>.nii.gz, masks and labels beside them
        raw = folder / "raw"
        for kind in ("images", "masks", "labels"):
            (raw / kind).mkdir(parents=True)
        shutil.copy(dataset / f"images/{BAD_CASE}_0000.nii.gz", raw / f"images/{BAD_CASE}.nii.gz")
        shutil.copy(dataset / f"masks/{BAD_CASE}.nii.gz", raw / f"masks/{BAD_CASE}.nii.gz")
        shutil.copy(dataset / f"labels/{BAD_LABEL_CASE}.nii.gz", raw / f"labels/{BAD_CASE}.nii.gz")
        return ["preprocess", str(raw / "images"), str(out), "--masks", str(raw / "masks"),
                "--labels", str(raw / "labels"), "--skip-registration", "--skip-n4", "--no-progress"]
    if command == "benchmark":
        return ["benchmark", str(_benchmark_grid(folder, dataset)), "--out", str(out), "--device", "cpu",
                "--no-report", "--no-progress"]
    raise ValueError(command)
