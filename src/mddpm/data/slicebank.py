"""The training slice bank: all prepared volumes of a split as one tensor, sampled with ``torch.randint``.

The published data loader draws, per item, a volume and then one of its Z axial slices
uniformly (``vol2slice``, redrawn on every access). Every volume has the same Z, so this is the
same as drawing uniformly from all N*Z slices with replacement, which is what :meth:`SliceBank.sample`
does, in one ``randint`` on the bank's device: no DataLoader, no host round trip. (The published
epochs visit each volume a fixed number of times; here volumes are drawn with replacement.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mddpm.errors import MddpmError


class SliceBank:
    """Volumes ``images`` [N, Z, H, W] float (in [0, 1]) and brain ``masks`` [N, Z, H, W] on one device."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor):
        if images.dim() != 4 or masks.shape != images.shape:
            raise ValueError(f"SliceBank needs images and masks [N, Z, H, W] of one shape, got "
                             f"{tuple(images.shape)} and {tuple(masks.shape)}")
        if images.shape[0] == 0 or images.shape[1] == 0:
            raise ValueError("SliceBank needs at least one volume with at least one slice")
        if masks.device != images.device:
            raise ValueError(f"images on {images.device} but masks on {masks.device}")
        self.images = images.float().contiguous()
        self.masks = masks.contiguous()  # kept in its own dtype (uint8 saves memory); float on output
        n, z, h, w = images.shape
        self._image_slices = self.images.view(n * z, h, w)
        self._mask_slices = self.masks.view(n * z, h, w)

    @classmethod
    def from_prepared(cls, prepared, case_ids: Sequence[str], device: str | torch.device = "cpu") -> "SliceBank":
        """Copy the volumes of ``case_ids`` (in that order, duplicates kept) from a
        :class:`~mddpm.data.cache.Prepared` cache into one tensor on ``device``."""
        if len(case_ids) == 0:
            raise MddpmError(f"{prepared.folder}: no cases to build a slice bank from")
        rows = np.array([prepared.index(c) for c in case_ids])
        images = torch.from_numpy(np.ascontiguousarray(prepared.images[rows], dtype=np.float32))
        masks = torch.from_numpy(np.ascontiguousarray(prepared.masks[rows], dtype=np.uint8))
        return cls(images.to(device), masks.to(device))

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def num_volumes(self) -> int:
        return self.images.shape[0]

    @property
    def slice_shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[2:])

    def __len__(self) -> int:
        """Number of slices (N * Z)."""
        return self.images.shape[0] * self.images.shape[1]

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``batch_size`` slices drawn uniformly with replacement: {"image", "mask"} each [B, 1, H, W] float32.

        ``generator`` must live on the bank's device.
        """
        flat = torch.randint(len(self), (batch_size,), generator=generator, device=self.device)
        return {"image": self._image_slices[flat].unsqueeze(1),
                "mask": self._mask_slices[flat].unsqueeze(1).float()}

    def sample_volumes(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``batch_size`` whole volumes drawn uniformly with replacement: {"image", "mask"} each
        [B, Z, H, W] float32."""
        vol = torch.randint(self.num_volumes, (batch_size,), generator=generator, device=self.device)
        return {"image": self.images[vol], "mask": self.masks[vol].float()}
