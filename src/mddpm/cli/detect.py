"""``mddpm detect``: anomaly map and lesion segmentation of one new scan with a trained run."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect", help="detect anomalies in a scan (or a folder of scans) with a trained run",
        description="SCAN must be in the template space of the run's training data, with its brain mask. Writes "
                    "DIR/anomaly_map.nii.gz, DIR/segmentation.nii.gz (in the scan's own geometry), DIR/overlay.png "
                    "and DIR/detect.json. With a folder of scans and a folder of masks (<case id>.nii.gz; a scan "
                    "<case>_0000 takes the mask <case>), every scan is scored with the model loaded once, into "
                    "DIR/<case id>/.")
    p.add_argument("scan", metavar="SCAN", help="NIfTI scan (3-D), or a folder of them")
    p.add_argument("--model", required=True, metavar="RUN", help="run folder written by `mddpm train`")
    p.add_argument("--mask", metavar="MASK",
                   help="brain mask of SCAN (same shape and affine), or a folder of masks; required (with "
                        "--preprocess: optional, on any grid overlapping SCAN)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--preprocess", action="store_true",
                   help="SCAN is raw: preprocess it as the run's training dataset was (its recorded `mddpm preprocess` "
                        "settings: template, voxel size, N4; brain mask from --mask or the dataset's mask source), "
                        "score it, and map the results back onto SCAN's own grid")
    p.add_argument("--threshold", metavar="VALUE|threshold.json",
                   help="a number or a threshold.json from `mddpm evaluate` (default: RUN/threshold.json)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")
    p.add_argument("--precision", default="32", choices=["32", "bf16"], help="default: 32")
    p.add_argument("--force", action="store_true", help="overwrite an existing output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mddpm.inference.detect import detect

    if args.preprocess:
        from mddpm.errors import MddpmError
        from mddpm.inference.detect_raw import detect_raw

        if Path(args.scan).is_dir():
            raise MddpmError(f"{args.scan}: --preprocess takes one raw scan, not a folder")
        out = detect_raw(args.scan, args.model, args.out, mask=args.mask, threshold=args.threshold, force=args.force,
                         device=args.device, precision=args.precision, progress=not args.no_progress)
        print(f"wrote {out}/anomaly_map.nii.gz, segmentation.nii.gz (the raw scan's grid), overlay.png, detect.json")
        return 0
    out = detect(args.scan, args.model, args.out, mask=args.mask, threshold=args.threshold, force=args.force,
                 device=args.device, precision=args.precision,
                 progress=not args.no_progress)
    where = f"{out}/<case id>/" if Path(args.scan).is_dir() else f"{out}/"
    print(f"wrote {where}anomaly_map.nii.gz, segmentation.nii.gz, overlay.png, detect.json")
    return 0
