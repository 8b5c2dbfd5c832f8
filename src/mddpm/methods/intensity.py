"""``intensity``: the no-learning reference: the anomaly map is the scan's own normalised intensity.

On T2 (and FLAIR) many lesions are hyperintense, so thresholding the percentile-normalised intensity
inside the brain is a strong trivial baseline (cf. Meissen et al. 2021, "Challenging current
semi-supervised anomaly segmentation methods for brain MRI"); it is not a row of the mDDPM paper's
Table 1, but it tells whether a learned method beats the image itself.

``reconstruct`` returns the image outside the brain and 0 inside it, so the default
``anomaly_map = |x − x̂|`` is ``x · mask``. The method has no parameters: ``param_groups()`` is ``[]``
and ``training_loss`` is a constant zero that requires no gradient, so a training loop must skip
optimisation for it (its presets set ``max_steps`` to 0).
"""

from __future__ import annotations

import torch

from mddpm.methods.base import AnomalyMethod
from mddpm.registry import register_method


class IntensityMethod(AnomalyMethod):
    """Anomaly map = x inside the brain mask; nothing to train."""

    def training_loss(self, batch: dict, generator: torch.Generator, step: int = 0) -> torch.Tensor:
        return torch.zeros((), device=batch["image"].device)

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return image * (1 - mask)

    def param_groups(self) -> list[list[torch.nn.Parameter]]:
        return []


@register_method(
    "intensity",
    "no learning: the normalised intensity inside the brain is the anomaly score",
    reference="Reference baseline (cf. Meissen, Kaissis, Rueckert. Challenging current semi-supervised anomaly "
              "segmentation methods for brain MRI. BrainLes 2021)",
)
def build(model_cfg: dict) -> IntensityMethod:
    return IntensityMethod(**model_cfg)
