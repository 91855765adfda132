"""`Trainer`'s steps: where each batch comes from and what one optimiser step does with it.

Owns the data order (a `ResumableSampler`, or a stream replayed to its place on a resume), the loss a batch is
scored with (de-duplicated captions and class-label positives, for the softmax loss and SigLIP's pairwise
sigmoid alike), one plain or GradCache step through the GradScaler and schedule with the logit scale clamped
to ln(100), and the two ways a run stops on its data: a loss that is no longer finite
(`TrainingDivergedError`) and a pass that gave no batch (`NoTrainingDataError`). Under torchrun the ranks
agree at each step on the batch size and on whether every rank still has a batch, so a batch empty on one rank
or a stream that runs dry on one rank first is met by every rank at the same step (`_step_size`,
`_stream_ran_dry`). A part of `Trainer` (`clipforge.train.trainer`), whose `__init__` sets the attributes
these methods read.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any

import torch

from clipforge.train.config import TrainConfigError
from clipforge.train.data import ResumableSampler
from clipforge.train.loss import unique_caption_loss, unique_caption_sigmoid_loss
from clipforge.train.step import gradcache_step, plain_step

MAX_LOGIT_SCALE = math.log(100)


class TrainerSteps:
    """The batch-and-step methods of `Trainer` (see the module docstring)."""

    def _sampler(self) -> tuple[ResumableSampler | None, int]:
        cfg = self.config
        if isinstance(self.dataset, torch.utils.data.IterableDataset):
            if cfg.samples_per_epoch is None and cfg.steps is None:
                raise ValueError("a streamed dataset needs samples_per_epoch or steps to define its length")
            if cfg.samples_per_epoch is None:  # its epoch ends where it runs out (its length was --steps: wrong)
                return None, UNKNOWN_EPOCH
            # samples_per_epoch: the whole job's samples an epoch (each rank reads its share, `build_train_dataset`)
            return None, max(cfg.samples_per_epoch // (cfg.batch_size * self.dist.world_size), 1)
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
        """This epoch's batches from where the run stands. torch's warning on more workers than cores is silenced:
        the trainer said it once in one line (`too_many_workers`), torch said it at each loader and each pass."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
            return self._batches()

    def _batches(self) -> Any:
        from clipforge.data import make_loader

        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        if self.sampler is not None:
            if hasattr(self.dataset, "epoch_batches"):  # in memory: batches by tensor ops, no DataLoader
                # the whole epoch's order: `epoch_batches` skips the consumed batches itself, as it numbers each
                # batch (its augmentation seed) by its place in the epoch. The sampler's resumed tail skipped
                # them a second time: a resumed run trained on other batches, or found none in a short epoch.
                self.sampler.set_epoch(self.epoch)
                order = list(self.sampler)
                self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
                return self.dataset.epoch_batches(order, self.config.batch_size, self.epoch, self.batch_in_epoch)
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            loader = make_loader(
                self.dataset,
                self.config.batch_size,
                workers=self.config.workers,
                sampler=self.sampler,
                drop_last=True,
            )
            return iter(loader)  # torch warns here too: inside `_loader`'s filter, not in the trainer's loop
        loader = make_loader(
            self.dataset, self.config.batch_size, workers=self.config.workers, drop_last=True
        )
        iterator: Any = iter(loader)
        self._lookahead = None
        if self.steps_per_epoch == UNKNOWN_EPOCH and not self.dist.distributed:
            # one process: a look one batch ahead says which batch is the epoch's last (`_epoch_complete`). Under
            # torchrun the ranks learn it together a step later (`_step_size`): a rank must not leave alone.
            iterator = self._lookahead = Lookahead(iterator)
        for _ in range(self.batch_in_epoch):  # a stream cannot seek: replay the consumed batches
            if next(iterator, None) is None:
                break
        return iterator

    def _epoch_complete(self) -> bool:
        """Whether the batch just trained was its epoch's last: by count where the epoch's length is known; for a
        stream of unknown length (WebDataset without samples_per_epoch), when a look one batch ahead finds it
        has run out (the length then learnt: `stream_epoch_batches`). Its epoch ended one fetch later, after the
        step was logged and saved as if a fraction of the way through (`epoch` 0.45 at the end of the first)."""
        if self.batch_in_epoch >= self.steps_per_epoch:
            return True
        ahead = getattr(self, "_lookahead", None)
        if self.batch_in_epoch and ahead is not None and ahead.exhausted():
            self.stream_epoch_batches = self.batch_in_epoch
            return True
        return False

    def _loss_for(self, batch: Any) -> tuple[Any, torch.Tensor | None]:
        """(loss function, groups) for a batch: de-duplicated captions, class-label positives or plain, for the
        softmax and the sigmoid loss alike. The sigmoid loss took neither (every pair its own label): de-duplicated
        captions crashed it (64 images, 10 texts) and `label_positives` left identical class captions negatives
        of each other, which it cannot reconcile (below-chance zero-shot accuracy on CIFAR-10's class names)."""
        caption_index = getattr(batch, "caption_index", None)
        if caption_index is not None:
            labels = batch.caption_labels if self.config.label_positives else None
            unique = unique_caption_sigmoid_loss if self.config.loss == "siglip" else unique_caption_loss

            def loss(image_features, text_features, logit_scale, _groups):
                return unique(image_features, text_features, logit_scale, caption_index, labels)

            return loss, None
        groups = getattr(batch, "classes", None) if self.config.label_positives else None
        return self.loss_fn, groups

    def _step_size(self, batch: Any | None) -> int | None:
        """How many images every rank has in this step's batch: the smallest rank's count (its own for one process);
        None when some rank has no batch at all (`batch` None here: this rank's stream ran dry).

        All ranks learn it together, so a batch whose every image failed to decode on one rank is skipped by every
        rank. That rank alone skipped it, its collectives met the other ranks' different ones and the job hung (1
        bad image in 16, --batch-size 1 on 2 ranks: both ranks waited until killed). The same all_reduce carries
        whether each rank still has a batch: shards dealt round-robin give ranks streams of different lengths, and
        a rank that left the epoch alone met the others' all_reduce with its epoch-end gather (a hang)."""
        count = 0 if batch is None else len(batch.indices)
        if not self.dist.distributed:
            return None if batch is None else count
        sizes = torch.tensor([count, int(batch is not None)], device=self.device)
        torch.distributed.all_reduce(sizes, op=torch.distributed.ReduceOp.MIN)
        return int(sizes[0]) if int(sizes[1]) else None

    def trim_images(self, count: int) -> None:
        """Count readable images this rank leaves out of a step because another rank's batch is smaller (it skipped
        unreadable images): `all_gather` needs batches of one size, so every rank trains on the smallest rank's
        count. A skipped image cost the other ranks as many good ones, silently (audit 58 #5: 2 processes then
        trained another model than 1 process on the same data). Told with the skipped images
        (`TrainerProgress._tell_skipped`); the summary's `trimmed_images` is every rank's total."""
        self.trimmed_news += max(int(count), 0)

    def _streamed(self) -> bool:
        """Ranks whose batches may run out at different steps: a stream under torchrun. Map-style data gives every
        rank the same number of batches (`ResumableSampler`), so all its ranks run out together and none asks."""
        return self.dist.distributed and self.sampler is None

    def _stream_ran_dry(self, in_hand: int | None) -> None:
        """Every rank ends the epoch here because some rank's stream ran dry (`in_hand`: None on such a rank, else
        the images of the batch this rank drops). A collective: every rank calls it at the same step. Rank 0 says
        once per run what the other ranks left unused, when they did not all run out together."""
        if not self._streamed():
            return
        world = self.dist.world_size
        held = torch.zeros(world, dtype=torch.long, device=self.device)
        held[self.dist.rank] = -1 if in_hand is None else in_hand
        torch.distributed.all_reduce(held, op=torch.distributed.ReduceOp.SUM)
        dry = [rank for rank, count in enumerate(held.tolist()) if count < 0]
        self._dry_ranks = dry  # for `_no_batch_reason`, on every rank
        if self.batch_in_epoch == 0:  # no step this pass: the run stops in one line (`_no_batch_reason`)
            return
        if not self.dist.is_main or self.told_uneven_streams or len(dry) == world:
            return
        self.told_uneven_streams = True
        left = int(held.clamp(min=0).sum())  # usable images: an undecodable one in hand is skipped anyway
        others = [rank for rank in range(world) if rank not in dry]
        steps = f"{self.batch_in_epoch} batch" + ("" if self.batch_in_epoch == 1 else "es")  # skipped ones too
        one = len(others) == 1
        whose = f"{_ranks(others)}'s share" if one else f"the shares of {_ranks(others)}"
        if left:
            unused = f"leaving the batch{'' if one else 'es'} in hand ({left} sample{'' if left == 1 else 's'}) and "
            unused += f"any later samples of {whose} unused"
        else:
            unused = f"leaving any later samples of {whose} unused"
        self._bar.write(
            f"epoch {self.epoch + 1}: {_ranks(dry)}'s share of the training stream ran out after {steps}; every rank "
            f"ended the epoch there, {unused} (shards of one size, as many as a multiple of the ranks, or "
            "resampling with samples_per_epoch keep ranks even; told once)",
            file=sys.stderr,
        )

    def _train_step(self, batch: Any, size: int | None = None) -> float:
        """One optimiser step on `batch`; `size`: the smallest rank's count (`_step_size`), asked for when None."""
        cfg = self.config
        images, texts = (
            batch.images.to(self.device, non_blocking=True),
            batch.labels.to(self.device, non_blocking=True),
        )
        loss_fn, groups = self._loss_for(batch)
        if self.dist.distributed and getattr(batch, "caption_index", None) is None:
            # all_gather needs equal batches: trim to the smallest rank's (a rank that skipped images has fewer);
            # the readable images cut here are counted and told (`trim_images`), not lost without a word
            size = self._step_size(batch) if size is None else size
            self.trim_images(len(images) - size)
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
        # the rate this step used, for its log row: read before the schedule advances (it was read after, so a row
        # showed the next step's rate: never the start rate at step 1, 0.0 at the last step; open_clip logs the used one)
        self.step_lr = float(self.optimizer.param_groups[0]["lr"])
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
        dry, world = getattr(self, "_dry_ranks", []), self.dist.world_size
        if dry and len(dry) < world:  # was "fewer than --batch-size samples per rank": the others had plenty
            shards = len(getattr(self.dataset, "urls", ()))
            counted = f"{shards} shard{'' if shards == 1 else 's'}" if shards else "shards"
            why = (
                f"{_ranks(dry)}'s share of the training stream ({counted} dealt round-robin to {world} ranks) gave "
                f"no batch of --batch-size {self.config.batch_size}; use at least as many shards as ranks, each "
                "with a batch's samples, or resampling with samples_per_epoch"
            )
        elif self.skipped.count:
            why = f"{self.skipped.line(logged=False)}; replace or remove those files"
        else:
            why = (
                f"it gave fewer than --batch-size {self.config.batch_size} samples per rank (the last batch of a "
                "pass is dropped when short); lower --batch-size or add data"
            )
        return f"epoch {self.epoch + 1} of the training data gave no batch to train on: {why}"


UNKNOWN_EPOCH = 2**62
"""`steps_per_epoch` of a stream of unknown length: only its running out ends an epoch (no count reaches it)."""


class Lookahead:
    """An iterator that can say whether another item follows without losing it (one item held)."""

    _EMPTY = object()

    def __init__(self, iterator: Any) -> None:
        self._iterator, self._held, self._ended = iterator, self._EMPTY, False

    def __iter__(self) -> Lookahead:
        return self

    def __next__(self) -> Any:
        if self._held is not self._EMPTY:
            item, self._held = self._held, self._EMPTY
            return item
        return next(self._iterator)

    def exhausted(self) -> bool:
        """True when no item follows (fetching the next one, kept for `__next__`, to know)."""
        if self._held is self._EMPTY and not self._ended:
            try:
                self._held = next(self._iterator)
            except StopIteration:
                self._ended = True
        return self._ended and self._held is self._EMPTY


class TrainingDivergedError(TrainConfigError):
    """The loss became NaN or infinite: the run stops (exit status 2), nothing more is saved."""


class NoTrainingDataError(TrainConfigError):
    """A whole pass over the training data gave no batch (every image unreadable, a stream shorter than one
    batch): the run stops in one line (exit status 2) instead of looping for ever."""


def _ranks(ranks: list[int]) -> str:
    """`rank 1`, `ranks 1, 2 and 3`: the ranks a line names."""
    names = [str(rank) for rank in ranks]
    return f"rank {names[0]}" if len(names) == 1 else f"ranks {', '.join(names[:-1])} and {names[-1]}"
