"""The contract every method follows (a plain ``nn.Module``, testable without Lightning).

Tensors: slices are ``[B, 1, H, W]`` float32 in [0, 1] (background 0); brain masks are the same
shape with values in {0, 1}. A *volume* is the stack of its axial slices ``[S, 1, H, W]`` in
slice order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class InferenceOptions:
    """Settings of a trained method that inference may change (``mddpm predict`` options). A field is
    None when the method has no such setting; :meth:`AnomalyMethod.set_inference_options` refuses to
    give it one."""

    noise_shared: bool | None = None  # one test-time noise field per volume (True) or per slice (False)
    chunk_size: int | None = None  # inputs per network call
    t_fix: int | None = None  # the diffusion step of the one-step reconstruction
    timesteps: int | None = None  # diffusion steps of the model (t_fix lies in [0, timesteps)); read only


class AnomalyMethod(nn.Module):
    """Base class. Subclasses implement :meth:`training_loss` and :meth:`reconstruct`.

    - ``sample_unit``: ``"slice"`` (batches are random slices) or ``"volume"`` (batches are whole
      slice sequences ``[B, S, H, W]``, for methods that model inter-slice dependencies).
    - ``training_loss(batch, generator, step)`` -> scalar loss for the optimiser
      :meth:`optimizer_index` names at this ``step``. ``batch = {"image": x, "mask": m}``.
    - ``validation_loss(batch, generator)`` -> scalar; the same objective without training-only
      augmentation (masking). Defaults to :meth:`training_loss` at step 0.
    - ``reconstruct(image, mask, generator)`` -> x̂ with the shape of ``image`` ``[S, 1, H, W]``:
      the pseudo-healthy version of one volume's slices, in [0, 1] units (not clipped).
    - ``anomaly_map(image, mask, generator)`` -> ``[S, 1, H, W]`` score, by default |x − x̂|.
    - ``param_groups()`` -> one parameter list per optimiser (default: one with all parameters).

    Hooks with defaults, for methods that need them: ``optimizer_options()`` -> one dict of extra
    Adam keyword arguments per parameter group (default: none), ``lr_scale(step)`` -> a factor on the
    learning rate at ``step`` (default 1), and ``inference_options()`` /
    ``set_inference_options(options)`` (:class:`InferenceOptions`; default: none).
    """

    sample_unit = "slice"

    def training_loss(self, batch: dict, generator: torch.Generator, step: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def validation_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return self.training_loss(batch, generator, 0)

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def anomaly_map(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return (image - self.reconstruct(image, mask, generator)).abs()

    def param_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.parameters())]

    def optimizer_index(self, step: int) -> int:
        """Which optimiser (index into :meth:`param_groups`) the loss at ``step`` trains."""
        return 0

    def optimizer_options(self) -> list[dict]:
        """Extra Adam keyword arguments, one dict per parameter group of :meth:`param_groups`."""
        return [{} for _ in self.param_groups()]

    def lr_scale(self, step: int) -> float:
        """Factor on the learning rate at optimiser ``step``."""
        return 1.0

    def inference_options(self) -> InferenceOptions:
        """The settings inference may change, as they are now."""
        return InferenceOptions()

    def set_inference_options(self, options: InferenceOptions) -> None:
        """Apply ``options`` (from :meth:`inference_options`, with fields replaced). A method without
        inference settings accepts only its own (empty) options."""
        if options != self.inference_options():
            raise ValueError(f"{type(self).__name__} has no inference settings to change")
