"""``mddpm train``: train a method on a dataset into a run folder (Lightning; DDP with --devices/--num-nodes)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a method on a dataset",
        description="Train METHOD on the dataset's train split (validation on its val split, or on 20 %% of "
                    "train drawn with a fixed seed when there is none; with --fold k, folds[k]). Writes "
                    "RUN/config.json, RUN/checkpoints/{best,last}.ckpt, RUN/{best,last}.pt, RUN/logs/. Under DDP, "
                    "train.batch_size is per process.")
    p.add_argument("--data", metavar="DATASET", help="dataset folder (with dataset.json); optional with --resume")
    p.add_argument("--method", help="method name (see `mddpm list methods`)")
    p.add_argument("--preset", help="preset name (default: demo, the CPU scale; paper: the published scale; "
                                     "see `mddpm list presets`)")
    p.add_argument("--config", metavar="FILE",
                   help="YAML or JSON config file: model:/train:/data: sections with the keys of --set, optionally "
                        "method: and preset: (e.g. the output of --print-config); --set wins over it")
    p.add_argument("--fold", type=int, help="train/val from folds[k] of the dataset instead of its splits")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=2000 (repeatable)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (YAML, usable as --config) and exit without training")
    p.add_argument("--logger", action="append", default=[], metavar="NAME[:key=value,...]",
                   help="experiment tracker (repeatable): csv, tensorboard (default: both), mlflow, wandb (when "
                        "installed); options go to Lightning's logger, e.g. "
                        "mlflow:tracking_uri=sqlite:////data/mlflow.db. "
                        "csv is always kept (the report reads it)")
    p.add_argument("--out", metavar="RUN", help="run folder (default: runs/METHOD-PRESET[-foldK])")
    p.add_argument("--devices", default="1", help="devices per node (an integer, or 'auto'; default 1)")
    p.add_argument("--num-nodes", type=int, default=1, help="number of nodes (default 1)")
    p.add_argument("--accelerator", default="auto", choices=["cpu", "gpu", "auto"], help="default: auto")
    p.add_argument("--resume", action="store_true", help="continue RUN from RUN/checkpoints/last.ckpt")
    p.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    p.add_argument("--workers", type=int, default=2, help="processes preparing the data (default 2)")
    p.add_argument("--cache", metavar="DIR",
                   help="prepared cache under DIR instead of DATASET/prepared/ (a read-only or shared dataset)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mddpm.errors import MddpmError
    from mddpm.training.train import train

    devices = args.devices
    if devices != "auto":
        try:
            devices = int(devices)
        except ValueError:
            raise MddpmError(f"--devices {args.devices!r}: expected an integer or 'auto'") from None
    if args.print_config:
        import yaml

        from mddpm.config import resolve_run_config

        if args.resume:
            raise MddpmError("--print-config shows a new run's config (the run's own is RUN/config.json)")
        cfg = resolve_run_config(args.method, args.preset, args.config, args.overrides)
        print(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None), end="")
        return 0
    if not args.resume and (args.data is None or (args.method is None and args.config is None)):
        raise MddpmError("--data and --method (or a --config file naming the method) are required (unless --resume)")
    train(args.data, args.method, preset=args.preset, out=args.out, fold=args.fold, overrides=args.overrides,
          devices=devices, num_nodes=args.num_nodes, accelerator=args.accelerator, resume=args.resume,
          force=args.force, progress=not args.no_progress, config_file=args.config, loggers=args.logger,
          workers=args.workers, cache=args.cache)
    return 0
