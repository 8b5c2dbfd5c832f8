"""Small methods registered for the tests ("tiny", "twogroup"): the training loop and predict without a real model."""

from __future__ import annotations

import torch
from torch import nn

from mddpm.errors import MddpmError
from mddpm.methods.base import AnomalyMethod
from mddpm.registry import METHODS, register_method

TINY_TRAIN = {"batch_size": 4, "max_steps": 4, "val_every": 2, "val_batches": 2, "log_every": 1, "lr": 1e-2}


class TinyMethod(AnomalyMethod):
    """Two 3x3 convs; noisy-input L1 loss; noisy reconstruction whose noise std scales with ``t_fix``
    and is one field per volume or per slice (``noise_shared``), like a diffusion method's."""

    def __init__(self, channels: int = 4, noise: float = 0.1, interrupt_at: int | None = None):
        super().__init__()
        self.noise = noise
        self.interrupt_at = interrupt_at  # raise KeyboardInterrupt (a simulated Ctrl-C) at this step
        self.t_fix = 500
        self.noise_shared = True
        self.net = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, 1, 3, padding=1))

    def training_loss(self, batch, generator, step=0):
        if step == self.interrupt_at:
            raise KeyboardInterrupt
        x = batch["image"]
        return (self.net(x + self.noise * torch.randn(x.shape, generator=generator, device=x.device)) - x).abs().mean()

    def validation_loss(self, batch, generator):
        return (self.net(batch["image"]) - batch["image"]).abs().mean()

    def inference_settings(self):
        return {"noise_shared": self.noise_shared, "t_fix": self.t_fix}

    def set_inference(self, **changes):
        super().set_inference(**changes)
        if not 0 <= changes.get("t_fix", self.t_fix) < 1000:
            raise MddpmError(f"--t-fix {changes['t_fix']}: outside [0, 999] (the model has 1000 diffusion steps)")
        self.noise_shared, self.t_fix = changes.get("noise_shared", self.noise_shared), changes.get("t_fix", self.t_fix)

    def reconstruct(self, image, mask, generator):
        shape = (1, *image.shape[1:]) if self.noise_shared else image.shape
        noise = torch.randn(shape, generator=generator, device=image.device)
        return self.net(image + self.noise * self.t_fix / 500 * noise)


class TwoGroupMethod(AnomalyMethod):
    """Two scalar parameters trained by two optimisers in turn; hooks set per test."""

    def __init__(self, options: list | None = None, scale: float | None = None):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.zeros(()))
        self.options = options
        if scale is not None:
            self.lr_scale = lambda step: scale

    def training_loss(self, batch, generator, step=0):
        return (batch["image"].mean() - self.a - self.b) ** 2

    def reconstruct(self, image, mask, generator):
        return image * 0 + self.a + self.b

    def param_groups(self):
        return [[self.a], [self.b]]

    def optimizer_index(self, step):
        return step % 2

    def optimizer_options(self):
        return self.options or [{}, {}]


def _register(name: str, build, model: dict, train_settings: dict) -> None:
    if name not in METHODS:
        register_method(name, f"test method {name}",
                        {"demo": {"model": model, "train": train_settings, "data": {"grid": "demo"}}})(build)


_register("tiny", lambda cfg: TinyMethod(**cfg), {"channels": 4, "interrupt_at": None}, TINY_TRAIN)
_register("twogroup", lambda cfg: TwoGroupMethod(**cfg), {"options": None, "scale": None},
          {**TINY_TRAIN, "max_steps": 2, "lr": 0.1})
