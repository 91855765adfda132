"""`Trainer`'s run state: what a checkpoint carries of a run, and how a resumed run takes it back.

Owns the train state beside the weights (step, place in the data, optimiser, schedule, scaler, RNG,
time budget, elapsed time, the loss window of train.csv), the one `save` every checkpoint goes through
(the EMA weights as the file users load, the raw ones in the state; rank 0 writes), and `resume`, which
checks a checkpoint fits this run before the model or optimiser takes any of it. A part of `Trainer`
(`clipforge.train.trainer`), whose `__init__` sets the attributes these methods read.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch

from clipforge.train.build import family_tokenizer
from clipforge.train.checkpoint import CheckpointError, load_train_state, rng_state, set_rng_state
from clipforge.train.distributed import all_reduce_mean
from clipforge.train.resume_checks import (
    check_resumable,
    check_same_batches,
    freeze_difference,
    refuse_finished_run,
)
from clipforge.train.same_run import agree_on_checkpoint
from clipforge.train.schedule import cosine_with_warmup, resumed_warmup
from clipforge.train.trainer_steps import UNKNOWN_EPOCH


class TrainerState:
    """The checkpoint methods of `Trainer` (see the module docstring)."""

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "warmup_steps_used": int(getattr(self.scheduler, "warmup_steps", self.config.warmup_steps)),
            "trimmed_images": self.trimmed_images,  # images cut from steps across ranks so far (a resume adds to it)
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler else None,
            "rng": rng_state(),
            "budget": self.budget.state_dict() if self.budget else None,
            "elapsed_s": self._elapsed(),
            # the place in the data counts global batches: a resume on another number of processes checks it
            "world_size": self.dist.world_size,
            "global_batch": self.config.batch_size * self.dist.world_size,
            "log_window": {"loss": self._window_loss_mean, "n": int(self._window["n"])},
            # a stream of unknown length: its batches an epoch once seen (None before its first end), so a resumed
            # run knows an epoch-end place and counts the epochs it logs
            "stream_epoch_batches": self.stream_epoch_batches,
        }

    def _elapsed(self) -> float:
        """Wall seconds of this run so far, counting the runs it resumed from (train.csv's elapsed_s)."""
        since = time.perf_counter() - self._started if self._started is not None else 0.0
        return self._elapsed_before + since

    def _epochs_done(self) -> float:
        """Epochs of data consumed (1.3333 = a third into the second): the one `epoch` every log
        line, checkpoint record (index/latest/best.json) and the summary use, 1-based at epoch ends.

        A stream of unknown length (WebDataset without samples_per_epoch) counts in the batches an epoch of it
        gave (`stream_epoch_batches`), and its epoch ends where it runs out (`_epoch_complete`); before its first
        end the fraction is unknown and the whole epochs done (0) are said. It was divided by --steps: 150
        samples at batch 16 logged 0.45 at step 9, where `model-1` ends the first epoch."""
        if not self.batch_in_epoch:
            return self.epoch
        if self._epoch_complete():
            return self.epoch + 1
        length = self.steps_per_epoch
        if length == UNKNOWN_EPOCH:
            if self.stream_epoch_batches is None:
                return self.epoch
            length = self.stream_epoch_batches
        done = round(self.epoch + min(self.batch_in_epoch / length, 0.9999), 4)  # not its end: below the next
        return int(done) if float(done).is_integer() else done

    def _weights_for_eval(self) -> Any:
        """The EMA weights swapped in (yielding the raw ones), or the model as it is."""
        return self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext(None)

    def save(
        self, name: str, metrics: dict[str, float] | None = None, epoch: float | None = None
    ) -> Path | None:
        """Weights file = what users load (the EMA when on); the raw weights ride in the train state.
        `metrics` are this checkpoint's own evaluation, `epoch` its place in the run (default: now)."""
        self.saved_step = self.step
        self.checkpoint_metrics = dict(metrics or {})
        # every rank calls save at the same step: the loss window's global mean, so a resumed
        # rank adds its own steps to what all ranks had (collective: before the rank-0 branch)
        self._window_loss_mean = all_reduce_mean(float(self._window["loss"]))
        if self.dist.is_main:
            state = self.state()
            with self._weights_for_eval() as raw:
                if raw is not None:
                    state["ema"] = {"updates": self.ema.updates, "raw_model": raw}
                self.last_checkpoint = self.checkpoints.save(
                    name,
                    self.model,
                    self.config.to_dict(),
                    state,
                    metrics,
                    epoch=self._epochs_done() if epoch is None else epoch,
                )
            if not self._tokenizer_carried:  # a family's tokenizer file beside its checkpoints, once per run
                from clipforge.train.tokenizer_file import carry_tokenizer_file

                carry_tokenizer_file(family_tokenizer(self.model), self.checkpoints.directory)
                self._tokenizer_carried = True
        return self.last_checkpoint

    def resume(self, spec: str) -> None:
        # under torchrun each rank reads its own --out (a disk per node): all resume the same checkpoint or none
        found, failure = None, None
        try:
            path = self.checkpoints.resolve(spec)
            weights, state = load_train_state(path, self.checkpoints.resumable(exclude=path))
            found = (path.name[: -len(".safetensors")], int(state["step"]))
        except (FileNotFoundError, CheckpointError) as error:
            if not self.dist.distributed:
                raise
            failure = str(error)
        agree_on_checkpoint(spec, found, failure)
        ema_state = state.get("ema")
        raw = ema_state["raw_model"] if ema_state else weights
        check_resumable(path, raw, self.model, self.config, state.get("train_config"))
        # an ordered stream (no sampler, shards not resampled): each process's place is in its own shards
        ordered_stream = self.sampler is None and not getattr(self.dataset, "resampled", False)
        # BatchNorm being trained (a ResNet tower not locked) keeps per-process statistics
        batch_norm = any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            and any(p.requires_grad for p in m.parameters())
            for m in self.model.modules()
        )
        check_same_batches(
            spec,
            path,
            self.config,
            state,
            self.dist.world_size,
            state.get("stream_epoch_batches") or self.steps_per_epoch,  # a stream's known epoch end is one
            shards_per_process=ordered_stream,
            batch_norm=batch_norm,
        )
        self.model.load_state_dict({k: v.to(self.device) for k, v in raw.items()})
        if self.ema is not None:
            self.ema.load(
                {k: v.to(self.device) for k, v in weights.items()}, ema_state["updates"] if ema_state else 0
            )
        if self.budget is not None and state.get("budget"):
            self.budget.load_state_dict(state["budget"])
        used = resumed_warmup(state, self.config.warmup_steps, self.total_steps)
        if self.budget is None and used != getattr(self.scheduler, "warmup_steps", used):
            # the checkpoint's run warmed up otherwise (written before the 10% rule): its schedule goes on as it was;
            # rebuilt before the optimizer's state is loaded (building a scheduler sets the groups' rate)
            self.scheduler = cosine_with_warmup(self.optimizer, self.total_steps, used, as_given=True)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError:  # torch: "loaded state dict contains a parameter group that doesn't match ..."
            raise CheckpointError(
                f"--resume {spec}: {path.name} was trained with other parameters frozen than "
                f"this run ({freeze_difference(self.config, state.get('train_config'))}); "
                "resume with the run's own settings"
            ) from None
        self.scheduler.load_state_dict(state["scheduler"])
        self.scheduler.warmup_steps = used  # (its state dict carries the attribute too: the schedule's own wins)
        if self.precision.scaler and state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self._elapsed_before = float(state.get("elapsed_s", 0.0))  # absent in checkpoints before it was kept
        window = state.get("log_window") or {}
        self._window.update(loss=float(window.get("loss", 0.0)), n=int(window.get("n", 0)))
        self.stream_epoch_batches = state.get("stream_epoch_batches")  # absent in checkpoints before it was kept
        self.trimmed_images = int(state.get("trimmed_images") or 0)  # (review: a resumed run counted from 0)
        if self.batch_in_epoch >= (self.stream_epoch_batches or self.steps_per_epoch):  # at an epoch end
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        refuse_finished_run(spec, path, self.step, self.config, self.total_steps, self._out_of_budget())
