"""``mddpm demo``: the whole job on synthetic brains, in minutes on a CPU."""

from __future__ import annotations

from mddpm.data.synth.sizes import DEMO_FAMILY, FAMILY_NAMES


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="synthetic brains -> train -> predict -> evaluate -> report.html, in minutes on a CPU",
        description="Build a synthetic dataset from the MNI152 anatomy in nilearn, train a small model at the "
                    "demo preset, score tumour-like and MS-like test scans under the published protocol and "
                    "write OUT/report.html. Uses a GPU when one is present.")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--method", default="mddpm-fpmcm", help="registered method (default: mddpm-fpmcm)")
    p.add_argument("--size", default="demo", choices=["small", "demo"], help="synthetic dataset size")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset")
    p.add_argument("--family", default=DEMO_FAMILY, choices=FAMILY_NAMES,
                   help=f"generator family to train on (default: {DEMO_FAMILY}); the other one is the out-of-family "
                        "test")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for training, e.g. train.max_steps=100 (repeatable)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from mddpm.demo import run_demo

    console = Console(stderr=True)
    result = run_demo(args.out, method=args.method, size=args.size, seed=args.seed, overrides=args.overrides,
                      family=args.family, force=args.force, progress=not args.no_progress,
                      log=lambda m: console.print(f"[bold cyan]{m}"))
    table = Table(title=f"{args.method} on synthetic lesions (test sets, mean ± std over volumes; trained on the "
                        f"{args.family} family)")
    for col in ("lesions", "volumes", "Dice (val threshold)", "Dice (exact threshold)", "AUPRC", "ORACLE (bisection)"):
        table.add_column(col)
    for name, ev in result["evaluations"].items():
        agg = ev["aggregate"]
        table.add_row(name, str(ev["test"]["cases"]), _ms(agg["rules"]["bisection"]["dice"]),
                      _ms(agg["rules"]["exact"]["dice"]), _ms(agg["auprc"]), _ms(agg["oracle_dice_bisection"]))
    Console().print(table)
    secs = result["seconds"]
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items()) + f"; total {sum(secs.values()):.0f} s")
    print(f"report: {result['out'] / 'report.html'}; model for `mddpm detect --model`: {result['run']}")
    return 0


def _ms(stat: dict) -> str:
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f} %"
