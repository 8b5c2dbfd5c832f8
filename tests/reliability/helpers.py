"""What the reliability probes share: a tiny training's settings, the files of a folder, the one error line."""

from __future__ import annotations

from pathlib import Path

TINY = ["--method", "mddpm-fpmcm", "--set", "model.net.model_channels=8", "--set", "model.net.head_channels=8",
        "--set", "train.batch_size=2", "--set", "train.max_steps=2", "--set", "train.val_every=1",
        "--set", "train.val_batches=1", "--set", "train.log_every=1", "--accelerator", "cpu", "--no-progress"]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mddpm {command}: error: ") and "Traceback" not in err[0], err
    return err[0]
