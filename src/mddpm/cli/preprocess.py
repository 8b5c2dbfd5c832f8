"""``mddpm preprocess INPUT_DIR OUT``: raw scans -> a dataset folder (docs/preprocess.md).

Failures are listed one line each on stderr (file first); the exit code is 2 when any case
failed, and ``OUT/dataset.json`` lists the cases that finished.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mddpm.errors import MddpmError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "preprocess", help="raw scans -> dataset: reorient, resample, brain mask, register, crop, N4",
        description="Turn raw brain MRI scans (NIfTI, NRRD or MHA; case id = file name without extension) into "
                    "an mddpm dataset: reorient, resample to isotropic voxels, brain mask (given files, image > 0 "
                    "or HD-BET), affine registration to a template (default: the MNI152 T1 brain shipped with "
                    "nilearn), crop to the brain, N4 bias correction inside the brain. A rerun skips finished "
                    "cases; see docs/preprocess.md.")
    p.add_argument("input_dir", help="folder of raw scans, or an nnU-Net v2 raw dataset (its folder with "
                                     "dataset.json and imagesTr/, or imagesTr/ with --labels labelsTr/; the _0000 "
                                     "channel suffix is stripped from case ids)")
    p.add_argument("out", help="dataset folder to write (images/, masks/, labels/, dataset.json)")
    p.add_argument("--masks", metavar="DIR", help="brain masks, one per scan, named <case id>.nii.gz (or "
                                                  ".nii/.nrrd/.mha)")
    p.add_argument("--nonzero-mask", action="store_true",
                   help="the scans are already skull-stripped: brain mask = image > 0")
    p.add_argument("--hd-bet", action="store_true",
                   help="brain masks from HD-BET ('hd-bet' on PATH; default when neither --masks nor --nonzero-mask "
                        "is given and HD-BET is installed)")
    p.add_argument("--hd-bet-device", default="cpu", help="device passed to HD-BET (cpu, cuda, mps; default cpu)")
    p.add_argument("--labels", metavar="DIR", help="lesion labels named <case id>.nii.gz; cases with a label are "
                                                   "anomalous, the others healthy (unless --role); a label that "
                                                   "matches no scan is refused")
    p.add_argument("--pattern", help='only scans whose file name matches this glob, e.g. "*_T2w.nii.gz"')
    p.add_argument("--role", choices=["healthy", "anomalous"], help="role of every case (default: from --labels)")
    p.add_argument("--split-name", help="put every case in this split (default: healthy -> train, and 20 %% of "
                                        "them, drawn with seed 3141, -> val; anomalous -> test)")
    p.add_argument("--modality", help="modality written to dataset.json (default: the nnU-Net channel name of "
                                      "dataset.json, else T2); with several nnU-Net channels, the one to keep; "
                                      "in a BIDS tree, the scans' suffix (default T2w)")
    p.add_argument("--template", metavar="PATH", help="registration template, brain only (e.g. SRI24 T1_brain.nii); "
                                                      "default: MNI152 2009a T1 brain from nilearn")
    p.add_argument("--template-mask", metavar="PATH", help="brain mask of --template (default: template > 0)")
    p.add_argument("--skip-registration", action="store_true", help="keep each scan in its own space")
    p.add_argument("--skip-n4", action="store_true", help="no bias-field correction")
    p.add_argument("--n4-shrink", type=int,
                   help="N4 shrink factor (default: the published ANTsPy call's; 1 = estimate at full resolution, "
                        "slower)")
    p.add_argument("--n4-iterations",
                   help="N4 iterations per fitting level, comma-separated (default: the published 200,200,200,200)")
    p.add_argument("--spacing", type=float, default=1.0, help="isotropic voxel size in mm (default 1, published)")
    p.add_argument("--orientation", default="LPS",
                   help="voxel axis code for sitk.DICOMOrient (default LPS = ANTs 'RAI', the published orientation)")
    p.add_argument("--workers", type=int, default=1, help="cases processed in parallel processes (default 1)")
    p.add_argument("--force", action="store_true", help="redo every case and overwrite what OUT holds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def mask_source(args) -> str:
    options = (("files", args.masks), ("nonzero", args.nonzero_mask), ("hd-bet", args.hd_bet))
    chosen = [name for name, on in options if on]
    if len(chosen) > 1:
        raise MddpmError("choose one brain-mask source: --masks, --nonzero-mask or --hd-bet")
    if chosen:
        return chosen[0]
    from mddpm.preprocess.hdbet import hdbet_command

    return "hd-bet" if hdbet_command() else "files"  # "files" without --masks gives the how-to error


def _iterations(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(","))
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise MddpmError(f"--n4-iterations {text!r}: expected positive integers separated by commas, e.g. 200,200")
    return levels


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def _n4_settings(args):
    """N4Settings with the values given on the command line, the published ones otherwise."""
    from mddpm.preprocess.steps import N4Settings

    given = {"shrink": args.n4_shrink,
             "iterations": None if args.n4_iterations is None else _iterations(args.n4_iterations)}
    return dataclasses.replace(N4Settings(), **{k: v for k, v in given.items() if v is not None})


def run(args) -> int:
    from mddpm.preprocess.pipeline import preprocess_dataset
    from mddpm.preprocess.report import print_report
    from mddpm.preprocess.settings import PreprocessSettings

    settings = PreprocessSettings(
        orientation=args.orientation.upper(), spacing_mm=args.spacing, mask_source=mask_source(args),
        hdbet_device=args.hd_bet_device, register=not args.skip_registration, template=_absolute(args.template),
        template_mask=_absolute(args.template_mask), bias_correction=not args.skip_n4,
        n4=_n4_settings(args))
    report = preprocess_dataset(args.input_dir, args.out, settings, masks_dir=args.masks, labels_dir=args.labels,
                                pattern=args.pattern, role=args.role, split_name=args.split_name,
                                modality=args.modality, workers=max(1, args.workers), force=args.force,
                                progress=not args.no_progress)
    print_report(report)
    if report.dataset_json:
        print(f"next: mddpm verify {args.out}")
    return 2 if report.failures else 0
