"""Diffusion methods of Table 1: ``ddpm``, ``pddpm`` and the masked variants ``mddpm-*``.

One class, :class:`DiffusionAnomalyMethod`, covers them all (protocol §2, §3, §4, §10):

- network: the time-conditioned U-Net (:class:`mddpm.nets.unet.UNet`, settings under ``net``)
  predicting x0 directly in the model range [-1, 1]; cosine schedule, T = 1000;
- noise: 6-octave simplex (``"simplex"``, unnormalised, fp16-rounded, as published; first lattice
  scale ``simplex_frequency`` px, published 64 on 96-px slices) or Gaussian; ``noise_shared=True``
  (faithful) uses ONE field for all slices and boxes of a test volume, ``False`` an independent field
  per slice; ``train_noise_shared`` does the same for the samples of a training step (``None``, the
  default: as ``noise_shared``; published: one field per step);
- timesteps: training draws t uniformly on 0..T−1 (published) or, with ``train_t_band = [lo, hi]``,
  uniformly on lo..hi (a band around ``t_fix``); validation uses random t (published) or, with
  ``val_at_t_fix``, ``t_fix``: the reconstruction the method is scored with;
- patching: ``patch_size=None`` noises the whole slice (DDPM); ``patch_size=P`` cuts the slice into
  a grid of P×P boxes with stride P (pDDPM: 48 on 96, a 2×2 grid). Training noises one box per
  sample, chosen uniformly; the rest of the slice stays clean context. With ``loss_in_patch``
  (the paper's L_p) the output is the prediction inside the box and the input outside, and L1 is
  averaged over the whole image, as published: the value is box-L1 × box area / image area and only
  the box gets gradients;
- masking (training only, before the noise): ``"none"``, ``"ipm"``, ``"fpm"``, ``"fpmcm"``
  (paper Eqs. 6–8, ratio ``mask_ratio`` of the brain, spectral mask ``spectral``) or
  ``"released"`` (the released code's FPM-CM, protocol §4.1). The L1 target is the clean slice;
  the masked slice is both the context outside the box and the x0 that is noised inside it;
- test: every box of every slice of a volume is noised to ``t_fix`` (499) and predicted in one
  batch of S × n_boxes inputs (chunks of ``chunk_size``), and each box's prediction is kept inside
  that box: every pixel is predicted exactly once.

Training lengths of the ``paper`` presets (protocol §1.5, §11.3): the published runs are 1600
epochs of batch 32 (drop_last) over the 385 IXI fold-0 training rows. pDDPM and DDPM: 385 // 32 = 12
steps per epoch -> 19,200 steps. mDDPM repeats every subject 6× per epoch: 2310 // 32 = 72 steps ->
115,200 steps (all ``mddpm-*`` variants). Validation runs once per published epoch (``val_every`` =
12 or 72 steps) on about as many slices as the published val epoch (44 rows, ×6 for mDDPM).

Presets are data: ``mddpm/presets/<name>.yaml`` (``paper`` and ``demo``). The demo preset scales
pixel-sized constants by 48/96 (simplex lattice, patch size) and takes options each measured against
the published setting (benchmarks/results/budget_curve.md): independent noise per training sample,
training t drawn in [399, 599], the best checkpoint chosen at ``t_fix``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mddpm.diffusion.noise import make_noise
from mddpm.diffusion.schedule import GaussianDiffusion, from_model_range, to_model_range
from mddpm.errors import MddpmError
from mddpm.masking import MASKINGS, SPECTRAL_MASKS, apply_masking
from mddpm.methods.base import AnomalyMethod
from mddpm.nets.unet import UNet
from mddpm.registry import register_method

NOISES = ("simplex", "gaussian")

PAPER_NET = {"model_channels": 128, "channel_mult": [1, 2, 2], "num_res_blocks": 3, "head_channels": 64,
             "scale_shift_norm": True, "resblock_updown": True, "groups": 32, "dropout": 0.0, "checkpoint": False}


class DiffusionAnomalyMethod(AnomalyMethod):
    """DDPM / pDDPM / mDDPM: one-step x0 reconstruction at ``t_fix`` (see the module docstring).

    ``net``: keyword arguments of :class:`~mddpm.nets.unet.UNet` (in/out channels are 1).
    Slices ``[B, 1, H, W]`` in [0, 1]; H and W must be multiples of ``patch_size``.
    """

    def __init__(self, net: dict | None = None, timesteps: int = 1000, t_fix: int = 499, noise: str = "simplex",
                 noise_shared: bool = True, noise_fp16_cast: bool = True, patch_size: int | None = 48,
                 loss_in_patch: bool = True, masking: str = "none", mask_ratio: tuple[float, float] = (0.1, 0.9),
                 spectral: str = "centre-square", mask_cells: int = 8, chunk_size: int = 256,
                 simplex_frequency: float = 64.0, train_noise_shared: bool | None = None,
                 train_t_band: tuple[int, int] | None = None, val_at_t_fix: bool = False):
        super().__init__()
        _check_choice("model.noise", noise, NOISES)
        _check_choice("model.masking", masking, MASKINGS)
        _check_choice("model.spectral", spectral, SPECTRAL_MASKS)
        if not 0 <= t_fix < timesteps:
            raise MddpmError(f"model.t_fix={t_fix}: must lie in [0, {timesteps - 1}] (model.timesteps={timesteps})")
        if patch_size is not None and patch_size < 1:
            raise MddpmError(f"model.patch_size={patch_size}: must be a positive number of pixels or null")
        if len(mask_ratio) != 2 or not 0 <= mask_ratio[0] <= mask_ratio[1] <= 1:
            raise MddpmError(f"model.mask_ratio={list(mask_ratio)}: expected [low, high] with 0 <= low <= high <= 1")
        if chunk_size < 1 or mask_cells < 1:
            raise MddpmError("model.chunk_size and model.mask_cells must be positive")
        if not simplex_frequency > 0:
            raise MddpmError(f"model.simplex_frequency={simplex_frequency}: must be a positive number of pixels")
        band = train_t_band
        if band is not None and (len(band) != 2 or not 0 <= band[0] <= band[1] < timesteps):
            raise MddpmError(f"model.train_t_band={list(train_t_band)}: expected [lo, hi] with "
                             f"0 <= lo <= hi <= {timesteps - 1}, or null")
        net_args = dict(PAPER_NET, **(net or {}))
        net_args["channel_mult"] = tuple(net_args["channel_mult"])
        self.net = UNet(in_channels=1, out_channels=1, **net_args)
        self.diffusion = GaussianDiffusion(timesteps)
        self.t_fix, self.noise, self.noise_shared, self.noise_fp16_cast = t_fix, noise, noise_shared, noise_fp16_cast
        self.patch_size, self.loss_in_patch = patch_size, loss_in_patch
        self.masking, self.mask_ratio, self.spectral, self.mask_cells = masking, tuple(mask_ratio), spectral, mask_cells
        self.chunk_size = chunk_size
        self.simplex_frequency = float(simplex_frequency)
        self.train_noise_shared = noise_shared if train_noise_shared is None else train_noise_shared
        self.train_t_band = None if train_t_band is None else tuple(train_t_band)
        self.val_at_t_fix = val_at_t_fix

    # ---- geometry and randomness ------------------------------------------------------------------

    def box_masks(self, height: int, width: int, device: torch.device | str) -> Tensor:
        """The grid boxes as bool masks ``[n_boxes, 1, H, W]`` (row-major; one all-True box without patching)."""
        if self.patch_size is None:
            return torch.ones(1, 1, height, width, dtype=torch.bool, device=device)
        p = self.patch_size
        if height % p or width % p:
            raise MddpmError(f"model.patch_size={p} does not divide the {height}x{width} slices "
                             "(the grid has stride = patch size)")
        rows = torch.arange(height, device=device) // p
        cols = torch.arange(width, device=device) // p
        box_id = rows[:, None] * (width // p) + cols[None, :]
        return (box_id[None] == torch.arange((height // p) * (width // p), device=device)[:, None, None])[:, None]

    def _noise(self, batch: int, height: int, width: int, generator: torch.Generator, device: torch.device,
               shared: bool) -> Tensor:
        return make_noise(self.noise, batch, height, width, generator, device, shared=shared,
                          fp16_cast=self.noise_fp16_cast, frequency=self.simplex_frequency)

    def _timesteps(self, batch: int, generator: torch.Generator, device: torch.device, training: bool) -> Tensor:
        """``[batch]`` training or validation timesteps (see the module docstring)."""
        if not training and self.val_at_t_fix:
            return self.diffusion.fixed_timesteps(batch, self.t_fix, device)
        if training and self.train_t_band is not None:
            lo, hi = self.train_t_band
            return torch.randint(lo, hi + 1, (batch,), generator=generator, device=device)
        return self.diffusion.sample_timesteps(batch, generator, device)

    # ---- training -------------------------------------------------------------------------------

    def loss_from(self, clean: Tensor, augmented: Tensor, box: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The loss once every random choice is made (the published ``p_losses``), scalar.

        clean, augmented [B, 1, H, W] in [0, 1]; box [B, 1, H, W] bool (the noised region);
        t [B] long; noise [B, 1, H, W]. In the model range: input = augmented outside the box and
        its noised version inside; output = the prediction, replaced by the augmented input outside
        the box when ``loss_in_patch``; L1 to the clean slice averaged over all pixels and the batch.
        """
        x0 = to_model_range(augmented)
        noised = torch.where(box, self.diffusion.q_sample(x0, t, noise), x0)
        prediction = self.net(noised, t)
        if self.loss_in_patch:
            prediction = torch.where(box, prediction, x0)
        return (prediction - to_model_range(clean)).abs().mean()

    def _loss(self, batch: dict, generator: torch.Generator, training: bool) -> Tensor:
        clean, brain = batch["image"], batch["mask"]
        b, _, h, w = clean.shape
        masking = self.masking if training else "none"
        augmented = apply_masking(clean, brain, generator, masking, self.mask_ratio, self.spectral, self.mask_cells)
        noise = self._noise(b, h, w, generator, clean.device, self.train_noise_shared)
        boxes = self.box_masks(h, w, clean.device)
        which = torch.randint(0, boxes.shape[0], (b,), generator=generator, device=clean.device)
        t = self._timesteps(b, generator, clean.device, training)
        return self.loss_from(clean, augmented, boxes[which], t, noise)

    def training_loss(self, batch: dict, generator: torch.Generator, step: int = 0) -> Tensor:
        """Masking (``self.masking``) -> noise -> one grid box and a training t per sample -> :meth:`loss_from`."""
        return self._loss(batch, generator, training=True)

    def validation_loss(self, batch: dict, generator: torch.Generator) -> Tensor:
        """:meth:`training_loss` without masking (as published), at t_fix with ``val_at_t_fix``."""
        return self._loss(batch, generator, training=False)

    # ---- inference ------------------------------------------------------------------------------

    def inference_settings(self) -> dict:
        """``noise_shared`` (one test-time noise field per volume, or per slice), ``chunk_size`` (inputs per
        network call), ``t_fix`` (the step of the one-step reconstruction, in [0, timesteps))."""
        return {"noise_shared": self.noise_shared, "chunk_size": self.chunk_size, "t_fix": self.t_fix}

    def set_inference(self, **changes) -> None:
        super().set_inference(**changes)
        t_fix, chunk = changes.get("t_fix", self.t_fix), changes.get("chunk_size", self.chunk_size)
        if not isinstance(t_fix, int) or isinstance(t_fix, bool) or not 0 <= t_fix < self.diffusion.timesteps:
            raise MddpmError(f"--t-fix {t_fix!r}: outside [0, {self.diffusion.timesteps - 1}] (the model has "
                             f"{self.diffusion.timesteps} diffusion steps)")
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
            raise MddpmError(f"--chunk-size {chunk!r}: must be a positive integer")
        self.noise_shared = bool(changes.get("noise_shared", self.noise_shared))
        self.chunk_size, self.t_fix = chunk, t_fix

    @torch.no_grad()
    def reconstruct(self, image: Tensor, mask: Tensor, generator: torch.Generator) -> Tensor:
        """One volume's slices ``image [S, 1, H, W]`` in [0, 1] -> x̂ ``[S, 1, H, W]`` in [0, 1] (unclipped).

        All S × n_boxes box inputs (the box noised to ``t_fix``, the rest clean) go through the net
        in chunks of ``chunk_size``; each box's prediction is kept inside that box.
        """
        s, _, h, w = image.shape
        boxes = self.box_masks(h, w, image.device)  # [K, 1, H, W]
        x0 = to_model_range(image)
        t = self.diffusion.fixed_timesteps(s, self.t_fix, image.device)
        noised = self.diffusion.q_sample(x0, t, self._noise(s, h, w, generator, image.device, self.noise_shared))
        inputs = torch.where(boxes[:, None], noised[None], x0[None]).flatten(0, 1)  # [K*S, 1, H, W], box-major
        t_all = t.repeat(boxes.shape[0])
        predictions = torch.cat([self.net(chunk, t_chunk) for chunk, t_chunk
                                 in zip(inputs.split(self.chunk_size), t_all.split(self.chunk_size))])
        predictions = predictions.view(boxes.shape[0], s, 1, h, w)
        stitched = predictions[0]
        for k in range(1, boxes.shape[0]):
            stitched = torch.where(boxes[k], predictions[k], stitched)
        return from_model_range(stitched.float())


def _check_choice(key: str, value: str, known: tuple[str, ...]) -> None:
    if value not in known:
        raise MddpmError(f"{key}={value!r}: unknown (known: {', '.join(known)})")


# ---- registration ---------------------------------------------------------------------------------

REFERENCE_PDDPM = ("Behrendt et al. Patched diffusion models for unsupervised anomaly detection in brain MRI. "
                   "MIDL 2023; code github.com/FinnBehrendt/patched-Diffusion-Models-UAD")
REFERENCE_MDDPM = ("Iqbal, Khalid, Chen, Hua. Unsupervised anomaly detection in medical images using masked "
                   "diffusion model. MLMI 2023; code github.com/hasan1292/mDDPM")
REFERENCE_DDPM = ("Wyatt et al. AnoDDPM: anomaly detection with denoising diffusion probabilistic models using simplex "
                  "noise. CVPRW 2022; baseline as in " + REFERENCE_PDDPM)


def ignored_settings(model: dict) -> dict[str, str]:
    """The model settings without effect under ``model``'s masking, noise and patching: ``{key: why}``."""
    ignored, masking = {}, model.get("masking")
    if masking in ("none", "released"):
        why = f"model.masking is {masking!r}" + (", whose sampler is fixed" if masking == "released" else "")
        ignored.update(dict.fromkeys(("mask_ratio", "spectral", "mask_cells"), why))
    elif masking == "ipm":
        ignored["spectral"] = "model.masking 'ipm' has no spectral mask"
    if model.get("noise") == "gaussian":
        ignored.update(dict.fromkeys(("simplex_frequency", "noise_fp16_cast"), "model.noise is 'gaussian'"))
    if model.get("patch_size") is None:
        ignored["loss_in_patch"] = "model.patch_size is null: the whole slice is noised"
    return ignored


def _register(name: str, description: str, reference: str) -> None:
    def build(model_cfg: dict) -> DiffusionAnomalyMethod:
        return DiffusionAnomalyMethod(**model_cfg)

    # presets: mddpm/presets/<name>.yaml
    register_method(name, description, reference=reference, ignored_settings=ignored_settings)(build)


_register("ddpm", "DDPM baseline: whole slice noised with simplex noise to t=499, one-step x0 reconstruction "
          "(AnoDDPM-style, pDDPM repo's DDPM_2D; 19,200 steps)", REFERENCE_DDPM)
_register("pddpm", "patched DDPM + fixed sampling + L_p: 2x2 grid of 48px boxes, one noised per step, "
          "loss only in the box (19,200 steps)", REFERENCE_PDDPM)
_register("mddpm-ipm", "mDDPM with image patch-masking (paper Eq. 6): brain patches covering 10-90% set to 0 "
          "before noising (no reference code; 115,200 steps)", REFERENCE_MDDPM)
_register("mddpm-fpm", "mDDPM with frequency patch-masking (paper Eq. 7): the slice low/high-pass filtered by a "
          "centred spectral square (no reference code; 115,200 steps)", REFERENCE_MDDPM)
_register("mddpm-fpmcm", "mDDPM with FPM-CutMix (paper Eq. 8): filtered content pasted into brain patches covering "
          "10-90% (paper ratio; 115,200 steps)", REFERENCE_MDDPM)
_register("mddpm-released", "mDDPM as released: FPM-CutMix with the code's sampler (0-5 small patches, ~4% of "
          "the brain; protocol 4.1; 115,200 steps)", REFERENCE_MDDPM)
