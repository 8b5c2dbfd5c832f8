"""``mddpm evaluate TEST_MAPS --val VAL_MAPS --out DIR``: metrics of predicted anomaly maps."""

from __future__ import annotations

import math


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score anomaly maps against lesion labels (published protocol)",
        description="Post-process the maps of TEST_MAPS, choose the threshold on VAL_MAPS (pooled Dice, "
                    "published bisection), and write metrics.json/.csv/.md, threshold.json and figures to --out.")
    p.add_argument("test_maps", metavar="TEST_MAPS", help="maps folder written by `mddpm predict` for the test split")
    p.add_argument("--val", required=True, metavar="VAL_MAPS",
                   help="maps folder of the lesion validation split (thresholds are chosen there)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--rule", "--threshold", dest="rules", action="append", choices=["bisection", "exact"], default=[],
                   help="extra threshold rule to report beside the default bisection (repeatable); "
                        "'exact' is the pooled-Dice optimum over all candidate thresholds (--threshold: the name "
                        "before 0.9)")
    p.add_argument("--healthy-val", metavar="HEALTHY_MAPS",
                   help="maps of healthy validation volumes: also report thresholds at 1/5/10%% in-brain voxel FPR")
    p.add_argument("--figures", type=int, default=0, metavar="N", help="draw the first N test cases (default 0)")
    p.add_argument("--examples", type=int, default=0, metavar="N",
                   help="draw the best, median and worst test case into examples/, at most N (default 0)")
    p.add_argument("--pr-curve", action="store_true",
                   help="also write pr.json: the pooled precision-recall curve of the test maps (the report's "
                        "picture; holds the test split's in-brain scores in memory)")
    p.add_argument("--postprocess", choices=["published", "physical"], default="published",
                   help="post-processing constants: 'published' (5^3 median, components <= 7 voxels, on any grid; "
                        "default) or 'physical' (the same sizes in mm: equal at 2 mm, 3^3 and none at 4 mm)")
    p.add_argument("--write-segmentations", action="store_true",
                   help="also write DIR/segmentations/<case>.nii.gz: each test case's post-processed, thresholded "
                        "segmentation (default rule) on the voxel grid of its dataset image, to overlay in a viewer")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where post-processing runs")
    p.add_argument("--logger", action="append", default=[], metavar="NAME[:key=value,...]",
                   help="also send the metrics to a tracker (repeatable): mlflow (into the training's own MLflow "
                        "run when it logged to one, else mlflow:tracking_uri=...), tensorboard (DIR/logs/tb)")
    p.add_argument("--publish", action="store_true",
                   help="also write the default rule's threshold.json into the run folder that made the test maps, "
                        "where `mddpm detect RUN` finds it")
    p.add_argument("--force", action="store_true", help="overwrite an existing output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _fmt(stat: dict) -> str:
    mean, std = stat.get("mean"), stat.get("std")
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return f"{mean:.4f} ± {std:.4f}"


def run(args) -> int:
    from mddpm.evaluation.evaluate import evaluate
    from mddpm.evaluation.maps import open_maps
    from mddpm.evaluation.threshold_file import publish_threshold, run_to_publish_to
    from mddpm.training.loggers import log_evaluation, parse_logger
    from mddpm.viz.cases import render_case_figure

    for spec in args.logger:
        parse_logger(spec)  # a bad --logger is refused before anything is computed
    if args.publish:  # so is a run that cannot take the threshold
        run_to_publish_to(open_maps(args.test_maps, "test").meta.get("run"))

    report = evaluate(args.test_maps, args.val, args.out, rules=args.rules, healthy_val=args.healthy_val,
                      figures=args.figures, examples=args.examples, pr_curve=args.pr_curve,
                      draw_case=render_case_figure, device=args.device, force=args.force,
                      postprocess=args.postprocess, progress=not args.no_progress,
                      write_segmentations=args.write_segmentations,
                      track=(lambda report, out: log_evaluation(args.logger, report, out)) if args.logger else None)
    agg = report["aggregate"]
    print(f"{report['test']['split']}: {report['test']['cases']} volumes")
    print(f"  AUPRC {_fmt(agg['auprc'])}   AUROC {_fmt(agg['auroc'])}   "
          f"ORACLE bisection Dice {_fmt(agg['oracle_dice_bisection'])}")
    for rule, stats in agg["rules"].items():
        pooled = report["pooled"][rule]["dice"]
        print(f"  Dice ({rule}, threshold {report['thresholds'][rule]['threshold']:.6g}): {_fmt(stats['dice'])}"
              f"   pooled {'n/a' if pooled is None else f'{pooled:.4f}'}")
    print(f"written to {args.out}")
    if args.publish:
        print(f"threshold published to {publish_threshold(args.out, report['run'])}")
    return 0
