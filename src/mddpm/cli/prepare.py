"""``mddpm prepare DATASET``: bring every case onto the model grid once and cache it."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("prepare", help="crop, normalise and resample a dataset onto the model grid (cached)",
                       description="Writes DATASET/prepared/<grid tag>/ (images.npy, masks.npy, labels.npy, "
                                   "prepared.json). An up-to-date cache is reused; a stale one is rebuilt.")
    p.add_argument("dataset", help="dataset folder (with dataset.json)")
    p.add_argument("--grid", default="demo",
                   help="demo: 48x48x25 at 4 mm (default, the grid of the default preset); paper: 96x96x50 at 2 mm "
                        "(published, the paper preset's); `mddpm train` prepares its preset's grid itself")
    p.add_argument("--no-curvature-flow", action="store_true",
                   help="skip the published curvature-flow smoothing of the images")
    p.add_argument("--cache", metavar="DIR",
                   help="write the prepared cache under DIR (for a read-only or shared dataset) instead of "
                        "DATASET/prepared/; pass the same --cache to `mddpm train` and `mddpm predict`")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (default: 2)")
    p.add_argument("--force", action="store_true", help="rebuild even if an up-to-date cache exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mddpm.data.grids import replace_grid
    from mddpm.data.prepare import prepare_dataset

    grid = replace_grid(args.grid, curvature_flow=not args.no_curvature_flow)
    out = prepare_dataset(args.dataset, grid, force=args.force, workers=max(1, args.workers),
                          progress=not args.no_progress, cache=args.cache)
    print(out)
    return 0
