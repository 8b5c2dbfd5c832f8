"""``mddpm predict``: anomaly maps and reconstructions of a dataset split with a trained run."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict", help="write anomaly maps of a dataset split with a trained run",
        description="Score every case of SPLIT with RUN/best.pt: OUT/<case>.nii.gz (raw score map on the prepared "
                    "grid), OUT/recon/<case>.nii.gz and OUT/predict.json. Defaults are the published protocol; "
                    "--t-fix (ensemble), --noise-per slice, --score ssim-l1 and --precision bf16 are options.")
    p.add_argument("run", metavar="RUN", help="run folder written by `mddpm train`")
    p.add_argument("--data", required=True, metavar="DATASET", help="dataset folder (with dataset.json)")
    p.add_argument("--split", required=True, help="split name, e.g. test, lesion_val")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the maps")
    p.add_argument("--weights", default="best", choices=["best", "last"], help="RUN/best.pt (default) or RUN/last.pt")
    p.add_argument("--precision", default="32", choices=["32", "bf16"], help="default: 32")
    p.add_argument("--noise-per", choices=["volume", "slice"],
                   help="diffusion methods: one noise field per volume (published) or per slice (default: as trained)")
    p.add_argument("--t-fix", type=int, nargs="+", metavar="T",
                   help="diffusion step(s) of the one-step reconstruction; several = ensemble (mean of the maps)")
    p.add_argument("--score", default="l1", choices=["l1", "ssim-l1", "signed", "mahalanobis", "mahalanobis-local"],
                   help="l1 = |x - x^| (published); ssim-l1 = 0.84*(1-SSIM) + 0.16*L1 (pDDPM-IQA); signed = "
                        "max(x - x^, 0) (bright lesions only); mahalanobis = "
                        "|x - mean| / std over --samples stochastic reconstructions (Behrendt et al. 2024; "
                        "-local: the variance pooled over 5x5 pixels)")
    p.add_argument("--samples", type=int, default=8, metavar="K",
                   help="reconstructions per slice of a mahalanobis score (default 8; K times the time)")
    p.add_argument("--chunk-size", type=int, help="slices per forward pass (methods that chunk)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--force", action="store_true", help="overwrite an existing output folder")
    p.add_argument("--cache", metavar="DIR",
                   help="prepared cache under DIR instead of DATASET/prepared/ (a read-only or shared dataset)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mddpm.inference.predict import predict

    predict(args.run, args.data, args.split, args.out, precision=args.precision, noise_per=args.noise_per,
            t_fix=args.t_fix, score=args.score, samples=args.samples, chunk_size=args.chunk_size,
            device=args.device, force=args.force, progress=not args.no_progress, weights=args.weights,
            cache=args.cache)
    return 0
