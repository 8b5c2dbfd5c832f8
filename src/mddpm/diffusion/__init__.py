"""Diffusion: cosine schedule, forward process, one-step x0 reconstruction, and the noise."""

from mddpm.diffusion.noise import fractal_noise_2d, gaussian_noise, make_noise, random_permutations, simplex_noise_2d
from mddpm.diffusion.schedule import GaussianDiffusion, cosine_alphas_cumprod, from_model_range, to_model_range

__all__ = ["GaussianDiffusion", "cosine_alphas_cumprod", "fractal_noise_2d", "from_model_range", "gaussian_noise",
           "make_noise", "random_permutations", "simplex_noise_2d", "to_model_range"]
