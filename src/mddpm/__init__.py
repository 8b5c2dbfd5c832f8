"""mddpm: unsupervised lesion detection in brain MRI with masked diffusion models."""

__version__ = "0.1.0"
