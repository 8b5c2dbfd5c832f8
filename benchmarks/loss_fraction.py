"""What a training step of each diffusion row gives a loss to: the share of the image's pixels, and of its brain
pixels, whose prediction receives a gradient, measured on real batches of a prepared dataset (the
network's output is hooked; the loss is the method's own ``training_loss``).

    .venv/bin/python benchmarks/loss_fraction.py DATA [--methods ddpm pddpm mddpm-fpmcm] [--batches 20]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mddpm.config import build_method, resolve_config
from mddpm.data.cache import load_prepared
from mddpm.data.grids import get_grid
from mddpm.data.prepare import prepare_dataset


def fractions(method: str, prepared, batches: int, batch_size: int, seed: int = 0) -> tuple[float, float]:
    """Mean share of all pixels and of brain pixels with a nonzero loss gradient per training sample."""
    cfg = resolve_config(method, "demo")
    model = build_method(cfg)
    outputs = []
    forward = model.net.forward
    model.net.forward = lambda *a, **k: outputs.append(forward(*a, **k).detach().requires_grad_()) or outputs[-1]
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    images, masks = prepared.images, prepared.masks
    pixel, brain = [], []
    for _ in range(batches):
        idx = [(rng.integers(images.shape[0]), rng.integers(images.shape[1])) for _ in range(batch_size)]
        idx = [(v, z) for v, z in idx if masks[v, z].any()]
        batch = {"image": torch.from_numpy(np.stack([images[v, z] for v, z in idx]))[:, None].float(),
                 "mask": torch.from_numpy(np.stack([masks[v, z] for v, z in idx]))[:, None].float()}
        outputs.clear()
        model.training_loss(batch, generator).backward()
        got = outputs[-1].grad[:, 0] != 0
        inside = batch["mask"][:, 0] > 0
        pixel += got.float().mean(dim=(1, 2)).tolist()
        brain += [(g & b).sum().item() / b.sum().item() for g, b in zip(got, inside)]
    return float(np.mean(pixel)), float(np.mean(brain))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--methods", nargs="+", default=["ddpm", "pddpm", "mddpm-fpmcm"])
    p.add_argument("--batches", type=int, default=20)
    args = p.parse_args()
    prepared = load_prepared(prepare_dataset(args.data, get_grid("demo"), progress=False))
    print("| row | pixels with a loss | brain pixels with a loss |\n|---|---|---|")
    for m in args.methods:
        px, br = fractions(m, prepared, args.batches, 16)
        print(f"| {m} | {100 * px:.1f} % | {100 * br:.1f} % |")


if __name__ == "__main__":
    main()
