"""``mddpm synth OUT``: a synthetic T2-like brain dataset built from the MNI152 anatomy in nilearn."""

from __future__ import annotations

import time
from pathlib import Path

from mddpm.data.synth.sizes import COUNT_ARGS, FAMILY_NAMES, SIZES


def add_parser(sub) -> None:
    p = sub.add_parser(
        "synth", help="generate a synthetic brain MRI dataset (healthy, tumour, MS) from real anatomy",
        description="Build a dataset in the mddpm format from the MNI152 T1/GM/WM maps bundled with nilearn "
                    "(no download): healthy subjects (elastic + affine deformation, bias, gamma, noise) and "
                    "anomalous ones with a tumour or MS plaques, with exact lesion labels; test-only lesion kinds "
                    "(infarct, haemorrhage, rings, diffuse) with --n-infarct-test etc. or --size demo-unseen.")
    p.add_argument("out", type=Path, help="dataset folder to create")
    p.add_argument("--size", choices=list(SIZES), default="demo",
                   help="set sizes and spacing: " + "; ".join(
                       f"{name}: {sum(v for k, v in spec.items() if k in COUNT_ARGS)} cases at {spec['spacing_mm']:g} "
                       "mm"
                       for name, spec in SIZES.items()) + " (default: demo)")
    for name in COUNT_ARGS:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None, metavar="N",
                       help=f"override the number of {name[2:].replace('_', ' ')} cases")
    p.add_argument("--spacing-mm", type=float, default=None, help="isotropic voxel size (default: from --size)")
    p.add_argument("--family", default="template", choices=FAMILY_NAMES,
                   help="generator family: template = warps of the MNI152 average (the original data); varied = "
                        "individual cortex, atrophy, multi-scale warps, head size, acquisition (default: template)")
    p.add_argument("--test-families", nargs="+", default=[], choices=FAMILY_NAMES, metavar="FAMILY",
                   help="also write the lesion sets of these families, as splits FAMILY_<set> (out-of-family tests)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed; case k of a set depends only on it (default 0)")
    p.add_argument("--workers", type=int, default=2, help="parallel worker processes (default 2)")
    p.add_argument("--preview", action="store_true", help="also write OUT/preview.png, a montage with lesion outlines")
    p.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mddpm.data.synth.build import synthesize
    from mddpm.errors import MddpmError

    if args.workers < 1:
        raise MddpmError(f"--workers {args.workers}: must be at least 1")
    spec = dict(SIZES[args.size])
    for name in COUNT_ARGS:
        if getattr(args, name) is not None:
            spec[name] = getattr(args, name)
    if args.spacing_mm is not None:
        spec["spacing_mm"] = args.spacing_mm
    start = time.perf_counter()
    out = synthesize(args.out, **spec, seed=args.seed, force=args.force, workers=args.workers,
                     family=args.family, test_families=tuple(args.test_families), progress=not args.no_progress)
    from mddpm.data.dataset import load_dataset

    n_cases = len(load_dataset(out).cases)
    print(f"wrote {n_cases} cases to {out} in {time.perf_counter() - start:.1f} s")
    if args.preview:
        from mddpm.viz.montage import preview_montage

        print(f"preview: {preview_montage(out, out / 'preview.png')}")
    return 0
