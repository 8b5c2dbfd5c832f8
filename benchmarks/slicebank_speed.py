"""Slices per second of ``SliceBank.sample`` at batch 32 on the paper and demo grids.

A bank of random volumes (385 x 50 slices of 96x96 for the paper grid, the IXI fold-0 size; 385 x 25
of 48x48 for demo) is built on the device, then ``sample`` is timed over many calls; the median of
several repeats is printed as one Markdown table row per grid.

    python benchmarks/slicebank_speed.py [--device cuda] [--volumes 385] [--calls 200] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from machine import machine_info
from mddpm.data.grids import GRIDS
from mddpm.data.slicebank import SliceBank


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_sample(bank: SliceBank, batch_size: int, calls: int, repeats: int) -> list[float]:
    """Slices per second of each repeat of ``calls`` consecutive ``sample`` calls."""
    g = torch.Generator(device=bank.device).manual_seed(0)
    for _ in range(10):  # warm-up
        bank.sample(batch_size, g)
    rates = []
    for _ in range(repeats):
        sync(bank.device)
        start = time.perf_counter()
        for _ in range(calls):
            bank.sample(batch_size, g)
        sync(bank.device)
        rates.append(calls * batch_size / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--volumes", type=int, default=385)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = torch.device(args.device)
    info = machine_info(device)
    where = f"{info['device_name']}, {info['torch_threads']} threads"
    print(f"| grid | bank (volumes x slices, HxW) | batch | slices/s (median of {args.repeats}) | "
          f"min..max | device | torch |")
    print("|---|---|---|---|---|---|---|")
    for name in ("paper", "demo"):
        h, w, z = GRIDS[name].shape
        g = torch.Generator(device=device).manual_seed(0)
        images = torch.rand(args.volumes, z, h, w, generator=g, device=device)
        masks = (images > 0.5).to(torch.uint8)
        bank = SliceBank(images, masks)
        rates = time_sample(bank, args.batch_size, args.calls, args.repeats)
        print(f"| {name} | {args.volumes} x {z}, {h}x{w} | {args.batch_size} | {statistics.median(rates):,.0f} | "
              f"{min(rates):,.0f}..{max(rates):,.0f} | {where} | {torch.__version__} |")
        del bank, images, masks


if __name__ == "__main__":
    main()
