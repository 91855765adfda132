"""`Trainer`'s steps: where each batch comes from and what one optimiser step does with it.

Owns the data order (a `ResumableSampler`, or a stream replayed to its place on a resume), the loss a
batch is scored with (de-duplicated captions, class-label positives, SigLIP's pairwise sigmoid), one
plain or GradCache step through the GradScaler and schedule with the logit scale clamped to ln(100),
and the two ways a run stops on its data: a loss that is no longer finite (`TrainingDivergedError`)
and a pass that gave no batch (`NoTrainingDataError`). A part of `Trainer` (`clipforge.train.trainer`),
whose `__init__` sets the attributes these methods read.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from clipforge.train.config import TrainConfigError
from clipforge.train.data import ResumableSampler
from clipforge.train.loss import unique_caption_loss
from clipforge.train.step import gradcache_step, plain_step

MAX_LOGIT_SCALE = math.log(100)


class TrainerSteps:
    """The batch-and-step methods of `Trainer` (see the module docstring)."""

    def _sampler(self) -> tuple[ResumableSampler | None, int]:
        cfg = self.config
        if isinstance(self.dataset, torch.utils.data.IterableDataset):
            if cfg.samples_per_epoch is None and cfg.steps is None:
                raise ValueError("a streamed dataset needs samples_per_epoch or steps to define its length")
            per_rank = cfg.samples_per_epoch or cfg.steps * cfg.batch_size * self.dist.world_size
            return None, max(per_rank // (cfg.batch_size * self.dist.world_size), 1)
        sampler = ResumableSampler(
            len(self.dataset), cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world_size
        )
        if sampler.batches_per_epoch == 0:  # was "8 samples over 1 rank(s) ...": which data, which flag?
            raise TrainConfigError(self._too_few_samples(len(self.dataset)))
        return sampler, sampler.batches_per_epoch

    def _too_few_samples(self, count: int) -> str:
        """One line naming the data, its size and the largest --batch-size that fills one batch."""
        cfg, world = self.config, self.dist.world_size
        lost = f" ({self.skipped.count} more listed but unusable)" if self.skipped.count else ""
        where = f" over {world} processes" if world > 1 else ""
        fits = count // world
        way = f"use --batch-size {fits} or less" if fits else "give it more samples"
        return (f"the training data ({cfg.root}) has {count} samples{lost}: too few for one batch of "
                f"--batch-size {cfg.batch_size}{where} (the last partial batch is dropped); {way}")

    def _loader(self) -> Any:
        from clipforge.data import make_loader

        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            if hasattr(self.dataset, "epoch_batches"):  # in memory: batches by tensor ops, no DataLoader
                return self.dataset.epoch_batches(
                    list(self.sampler), self.config.batch_size, self.epoch, self.batch_in_epoch
                )
            return make_loader(
                self.dataset,
                self.config.batch_size,
                workers=self.config.workers,
                sampler=self.sampler,
                drop_last=True,
            )
        loader = make_loader(
            self.dataset, self.config.batch_size, workers=self.config.workers, drop_last=True
        )
        iterator = iter(loader)
        for _ in range(self.batch_in_epoch):  # a stream cannot seek: replay the consumed batches
            next(iterator)
        return iterator

    def _loss_for(self, batch: Any) -> tuple[Any, torch.Tensor | None]:
        """(loss function, groups) for a batch: de-duplicated captions, class-label positives or plain."""
        caption_index = getattr(batch, "caption_index", None)
        if self.config.loss == "siglip":  # pairwise sigmoid: every pair its own label, no groups
            return self.loss_fn, None
        if caption_index is not None:
            labels = batch.caption_labels if self.config.label_positives else None

            def loss(image_features, text_features, logit_scale, _groups):
                return unique_caption_loss(image_features, text_features, logit_scale, caption_index, labels)

            return loss, None
        groups = getattr(batch, "classes", None) if self.config.label_positives else None
        return self.loss_fn, groups

    def _step_size(self, batch: Any) -> int:
        """How many images every rank has in this step's batch: the smallest rank's count (its own for one process).

        All ranks learn it together, so a batch whose every image failed to decode on one rank is skipped by every
        rank. That rank alone skipped it, its collectives met the other ranks' different ones and the job hung (1
        bad image in 16, --batch-size 1 on 2 ranks: both ranks waited until killed)."""
        count = len(batch.indices)
        if not self.dist.distributed:
            return count
        size = torch.tensor([count], device=self.device)
        torch.distributed.all_reduce(size, op=torch.distributed.ReduceOp.MIN)
        return int(size)

    def _train_step(self, batch: Any, size: int | None = None) -> float:
        """One optimiser step on `batch`; `size`: the smallest rank's count (`_step_size`), asked for when None."""
        cfg = self.config
        images, texts = (
            batch.images.to(self.device, non_blocking=True),
            batch.labels.to(self.device, non_blocking=True),
        )
        loss_fn, groups = self._loss_for(batch)
        if self.dist.distributed and getattr(batch, "caption_index", None) is None:
            # all_gather needs equal batches: trim to the smallest rank's
            size = self._step_size(batch) if size is None else size
            images, texts = images[:size], texts[:size]
            groups = None if groups is None else groups[:size]
        if self.budget is not None:  # the schedule runs on training time, not on steps
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * self.budget.factor()
        self.optimizer.zero_grad(set_to_none=True)
        if cfg.micro_batch and cfg.micro_batch < len(images):
            loss = gradcache_step(
                self.wrapped, images, texts, loss_fn, self.precision, cfg.micro_batch, groups
            )
        else:
            loss = plain_step(self.wrapped, images, texts, loss_fn, self.precision, groups)
        if self.precision.scaler:
            self.precision.scaler.step(self.optimizer)
            self.precision.scaler.update()
        else:
            self.optimizer.step()
        if self.budget is None:
            self.scheduler.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        if self.ema is not None:
            self.ema.update(self.model)
        return float(loss)

    def _check_finite(self, loss: float) -> None:
        """Stop on a loss that is NaN or infinite (with a GradScaler, after 3 in a row: it skips
        such steps itself), instead of training on and saving garbage with exit status 0."""
        self._bad_losses = 0 if math.isfinite(loss) else getattr(self, "_bad_losses", 0) + 1
        if self._bad_losses and (self.precision.scaler is None or self._bad_losses >= 3):
            cfg = self.config
            raise TrainingDivergedError(
                f"training stopped at step {self.step + 1}: the loss is {loss} (lr {cfg.lr:g}, eps {cfg.eps:g}, "
                f"weight_decay {cfg.weight_decay:g}, precision {cfg.precision}); lower the lr or use precision=fp32"
            )

    def _no_batch_reason(self) -> str:
        """Why a pass over the training data gave no batch: the images it skipped, or too few samples."""
        if self.skipped.count:
            why = f"{self.skipped.line(logged=False)}; replace or remove those files"
        else:
            why = (
                f"it gave fewer than --batch-size {self.config.batch_size} samples per rank (the last batch of a "
                "pass is dropped when short); lower --batch-size or add data"
            )
        return f"epoch {self.epoch + 1} of the training data gave no batch to train on: {why}"


class TrainingDivergedError(TrainConfigError):
    """The loss became NaN or infinite: the run stops (exit status 2), nothing more is saved."""


class NoTrainingDataError(TrainConfigError):
    """A whole pass over the training data gave no batch (every image unreadable, a stream shorter than one
    batch): the run stops in one line (exit status 2) instead of looping for ever."""
