"""Networks: modules that map tensors to tensors, nothing else."""

from mddpm.nets.unet import UNet, count_parameters

__all__ = ["UNet", "count_parameters"]
