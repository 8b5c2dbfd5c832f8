"""One generic LightningModule that trains any :class:`~mddpm.methods.base.AnomalyMethod`.

Lightning supplies the loop, DDP, bf16 autocast, checkpointing, logging and the progress bar; the
method supplies the loss. Batches do not come from a DataLoader: each step draws ``batch_size``
random slices (or volumes, for ``sample_unit == "volume"``) from a :class:`~mddpm.data.slicebank.SliceBank`
that lives on the training device. A dummy DataLoader of step indices only drives Lightning's loop.

Optimisation: one Adam per ``method.param_groups()`` with lr ``train.lr``; two optional method hooks
are honoured: ``optimizer_options() -> [dict per group]`` (extra Adam keyword arguments, e.g. betas)
and ``lr_scale(step) -> float`` (a multiplier of each group's base lr at that step, e.g. a cosine
schedule). Each step trains the optimiser ``method.optimizer_index(step)`` names.

Randomness: the generators of training step ``s`` on rank ``r`` are re-seeded from
``(train.seed, 0, r, s)`` at the start of the step, and those of validation batch ``i`` from
``(train.seed, 1, i)``. So a resumed run draws exactly what an uninterrupted run draws (the step number
is all the state there is, and it is in every checkpoint), each DDP rank draws its own batches, and
every validation sees the same batches and noise (validation batches are split over the ranks, so
the validation loss does not depend on the number of devices).
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from mddpm.data.augment import augment_batch
from mddpm.data.cache import load_prepared
from mddpm.data.slicebank import SliceBank
from mddpm.methods.base import AnomalyMethod
from mddpm.seeds import derive_seed
from mddpm.training.loggers import PANEL_SLICES, flat_hparams, panel

_TRAIN_STREAM = 0
_VAL_STREAM = 1
_PANEL_STREAM = 2
_AUGMENT_STREAM = 3


class StepIndices(Dataset):
    """``length`` integers ``0..length-1``: the dummy dataset whose batches drive Lightning's loops."""

    def __init__(self, length: int):
        self.length = max(int(length), 1)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index


class AnomalyModule(L.LightningModule):
    """Train ``method`` with manual optimisation on banks built from a prepared cache.

    ``config`` is a resolved config (:mod:`mddpm.config`, logged flat as the hyperparameters);
    ``prepared`` the prepared-cache folder; ``train_ids`` / ``val_ids`` the case ids of the training and
    validation banks. Logs ``train/loss`` and ``train/lr`` every ``train.log_every`` steps and ``val/loss``
    at every validation, and keeps ``val_panel`` (:func:`~mddpm.training.loggers.panel` of the first
    validation batch) for :class:`~mddpm.training.loggers.Tracking`.
    """

    def __init__(self, method: AnomalyMethod, config: dict, prepared: str, train_ids: list[str], val_ids: list[str]):
        super().__init__()
        self.automatic_optimization = False
        self.method = method
        self.config = config
        self.prepared_folder = str(prepared)
        self.train_ids = list(train_ids)
        self.val_ids = list(val_ids)
        self.train_bank = None
        self.val_bank = None
        self._generators: dict[tuple[str, str], torch.Generator] = {}
        self.val_panel = None
        self.save_hyperparameters(flat_hparams(config))

    # ---- data ---------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        prepared = load_prepared(self.prepared_folder)
        device = self.bank_device
        self.train_bank = SliceBank.from_prepared(prepared, self.train_ids, device)
        self.val_bank = SliceBank.from_prepared(prepared, self.val_ids, device)

    @property
    def bank_device(self) -> torch.device:
        """Where the banks live: the training device (``train.bank_device = "auto"``) or the CPU."""
        return self.device if self.config["train"]["bank_device"] == "auto" else torch.device("cpu")

    def train_dataloader(self) -> DataLoader:
        # one "epoch" = max_steps steps on every rank (Lightning shards the indices over the ranks)
        return DataLoader(StepIndices(self.config["train"]["max_steps"] * self.trainer.world_size), batch_size=1)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(StepIndices(self.config["train"]["val_batches"]), batch_size=1)

    def _generator(self, device: torch.device, role: str, seed: int) -> torch.Generator:
        key = (str(device), role)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device)
        return self._generators[key].manual_seed(seed)

    def draw_batch(self, bank, *entropy: int) -> tuple[dict, torch.Generator]:
        """Draw one batch from ``bank`` and return it with the method's generator for it; both are
        seeded from ``(train.seed, *entropy)``. The batch is on the module's device."""
        seed = self.config["train"]["seed"]
        bank_gen = self._generator(self.bank_device, "bank", derive_seed(seed, *entropy, 0))
        size = self.config["train"]["batch_size"]
        if self.method.sample_unit == "volume":
            batch = bank.sample_volumes(size, bank_gen)
        else:
            batch = bank.sample(size, bank_gen)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        return batch, self._generator(self.device, "method", derive_seed(seed, *entropy, 1))

    # ---- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        groups = self.method.param_groups()
        options = self.method.optimizer_options()
        if len(options) != len(groups):
            raise ValueError(f"{type(self.method).__name__}.optimizer_options() gives {len(options)} entries "
                             f"for {len(groups)} parameter groups")
        optimizers = [torch.optim.Adam(params, **{"lr": self.config["train"]["lr"], **extra})
                      for params, extra in zip(groups, options)]
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["base_lr"] = group["lr"]  # lr_scale(step) multiplies this (saved with the optimiser state)
        return optimizers

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # A checkpoint written by an exception (Ctrl-C) mid-step counts the interrupted batch as consumed,
        # and Lightning keeps that count on resume. Batches here are drawn from the step number, so realign
        # Lightning's batch counter (which schedules validation) with the optimiser step.
        total = self.trainer.fit_loop.epoch_loop.batch_progress.total
        if total.ready > self.global_step + 1:
            total.ready = total.started = self.global_step + 1

    def training_step(self, batch, batch_idx):
        step = self.global_step  # optimiser steps done so far (one per training_step)
        data, generator = self.draw_batch(self.train_bank, _TRAIN_STREAM, self.global_rank, step)
        augment = self.config["train"].get("augment", "none")  # runs trained before the option have none
        if augment != "none":
            seed = derive_seed(self.config["train"]["seed"], _AUGMENT_STREAM, self.global_rank, step)
            data = augment_batch(data, augment, self._generator(self.device, "augment", seed))
        loss = self.method.training_loss(data, generator, step)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        optimizer = optimizers[self.method.optimizer_index(step)]
        scale = self.method.lr_scale(step)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * scale
        self.method.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        train = self.config["train"]
        if (step + 1) % train["log_every"] == 0:
            self.log("train/loss", loss.detach().float(), prog_bar=True, on_step=True, on_epoch=False)
            name = "train/lr" if len(optimizers) == 1 else f"train/lr_{self.method.optimizer_index(step)}"
            self.log(name, float(optimizer.param_groups[0]["lr"]), on_step=True, on_epoch=False)
        if step + 1 >= train["max_steps"] and (step + 1) % train["val_every"] != 0:
            # stopping makes Lightning validate now, so the final weights are always validated
            self.trainer.should_stop = True

    def validation_step(self, batch, batch_idx):
        index = int(batch.reshape(-1)[0])  # the validation batch's global index (same on any number of ranks)
        data, generator = self.draw_batch(self.val_bank, _VAL_STREAM, index)
        loss = self.method.validation_loss(data, generator)
        self.log("val/loss", loss.detach().float(), prog_bar=True, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=1)
        if index == 0 and self.global_rank == 0:
            self.val_panel = self.panel_of(data)

    @torch.no_grad()
    def panel_of(self, data: dict):
        """Picture [3 H, n W] of up to PANEL_SLICES slices of a validation batch (those with the most brain):
        input, reconstruction, anomaly map (the method's own), from a generator seeded from ``train.seed``."""
        image, mask = data["image"], data["mask"]
        if self.method.sample_unit == "volume":  # [B, S, H, W]: the first volume's slices
            image, mask = image[0].unsqueeze(1), mask[0].unsqueeze(1)
        seed = derive_seed(self.config["train"]["seed"], _PANEL_STREAM)
        recon = self.method.reconstruct(image, mask, self._generator(self.device, "panel", seed)).float()
        amap = self.method.anomaly_map(image, mask, self._generator(self.device, "panel", seed)).float() * mask
        pick = mask.flatten(1).sum(1).argsort(descending=True)[:PANEL_SLICES].sort().values
        return panel(*(t[pick, 0].float().cpu().numpy() for t in (image, recon, amap)))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        value = self.trainer.callback_metrics.get("val/loss")  # the latest validation's loss
        checkpoint["mddpm"] = {"val_loss": None if value is None else float(value)}
