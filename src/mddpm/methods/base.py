"""The contract every method follows (a plain ``nn.Module``, testable without Lightning).

Tensors: slices are ``[B, 1, H, W]`` float32 in [0, 1] (background 0); brain masks are the same
shape with values in {0, 1}. A *volume* is the stack of its axial slices ``[S, 1, H, W]`` in
slice order.
"""

from __future__ import annotations

import torch
from torch import nn

from mddpm.errors import MddpmError


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
    learning rate at ``step`` (default 1), and the inference settings a method declares
    (``inference_settings()``, ``set_inference(**changes)``; default: none).

    ``map_is_residual``: the anomaly map is |x − x̂| of the returned reconstruction (True), or the method's
    own :meth:`anomaly_map` (False: predict then computes map and reconstruction from one generator state).
    """

    sample_unit = "slice"
    map_is_residual = True

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

    def inference_settings(self) -> dict:
        """The settings inference may change (``mddpm predict`` options), by name, as they are now. A method
        declares its own; the default is none."""
        return {}

    def set_inference(self, **changes) -> None:
        """Change declared inference settings (:meth:`inference_settings`); any other name is refused in one
        line. A method with settings overrides this to check and apply them."""
        unknown = sorted(set(changes) - set(self.inference_settings()))
        if unknown:
            declared = ", ".join(self.inference_settings()) or "none"
            raise MddpmError(f"method {type(self).__name__} has no inference setting {', '.join(unknown)} "
                             f"(its settings: {declared})")
