"""``mddpm bench``: time every stage (training step, noise, masking, predict, post-processing,
metrics, threshold search, bf16 parity) on this machine; write JSON + Markdown."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mddpm.errors import MddpmError

STAGES = ("noise_masking", "train", "predict", "postprocess", "threshold", "bf16_parity")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure the speed of every stage on this machine",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/speed_cpu",
                   help="output path without extension: writes OUT.json and OUT.md (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=None, help="stages to run (default: all)")
    p.add_argument("--presets", nargs="+", default=["demo", "paper"], help="presets of the train/predict stages")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median reported)")
    p.add_argument("--paper-repeats", type=int, default=1, help="repeats of paper-preset steps on the CPU")
    p.add_argument("--paper-batch", type=int, default=None,
                   help="training batch of the paper preset (default: 32 on a GPU, 1 on the CPU)")
    p.add_argument("--paper-slices", type=int, default=None,
                   help="slices of the paper volume actually timed in predict (default: all 50 on a GPU, "
                        "1 on the CPU; the time is scaled to 50)")
    p.add_argument("--pooled-volumes", type=int, default=100, help="volumes pooled for the threshold search")
    p.add_argument("--run", default=None, help="trained run for the bf16 parity check (needs --data)")
    p.add_argument("--data", default=None, help="dataset of --run")
    p.add_argument("--compile", action="store_true", help="also time the demo training step under torch.compile")
    p.add_argument("--force", action="store_true", help="overwrite existing OUT.json / OUT.md")
    p.set_defaults(func=run)


def run(args) -> int:
    from mddpm.bench import BenchSettings, run_bench, to_markdown
    from mddpm.io import atomic_write, check_new_output, write_json

    out = Path(args.out)
    json_path, md_path = out.with_name(out.name + ".json"), out.with_name(out.name + ".md")
    check_new_output(json_path, args.force)
    check_new_output(md_path, args.force)
    if args.repeats < 1 or args.paper_repeats < 1 or args.pooled_volumes < 1:
        raise MddpmError("--repeats, --paper-repeats and --pooled-volumes must be positive")
    if (args.run is None) != (args.data is None):
        raise MddpmError("--run and --data go together (the parity check scores the run on the dataset)")
    from mddpm.inference.predict import resolve_device

    on_cpu = resolve_device(args.device).type == "cpu"
    settings = BenchSettings(
        device=args.device, threads=args.threads, presets=tuple(args.presets), repeats=args.repeats,
        paper_repeats=args.paper_repeats,
        batch={"paper": args.paper_batch or (1 if on_cpu else 32)},
        predict_slices={"paper": args.paper_slices or (1 if on_cpu else 50)},
        pooled_volumes=args.pooled_volumes, run=args.run, data=args.data, compile=args.compile)
    results = run_bench(settings, tuple(args.stages) if args.stages else None)
    command = "mddpm " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    results["command"] = command
    write_json(json_path, results)
    with atomic_write(md_path) as tmp:
        tmp.write_text(to_markdown(results, command))
    print(f"wrote {json_path} and {md_path}")
    return 0
