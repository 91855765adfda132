"""The training loop: one process or a torchrun job, fine-tuning or pretraining.

Everything that varies is in `TrainConfig`; the loop itself is the same for all of it:
sample a batch (ResumableSampler, so a resumed run sees exactly the batches it missed), run a
plain or GradCache step under autocast, step AdamW through the GradScaler when there is one,
advance the cosine schedule, clamp the logit scale to ln(100), log, and checkpoint every N
steps and at each epoch end after the zero-shot eval hooks. Only global rank 0 writes files.

Switches any recipe can turn on: `time_budget_s` (the schedule runs on elapsed training time,
wall or CPU, and the run stops when it is spent; evaluation does not count), `ema_decay`
(evaluate and save an average of the weights), `in_memory` and its tensor-op batches
(`clipforge.train.fastdata`), `channels_last`, and `threads` (0: 1 or 2 by measured speed).

This module builds a run (`Trainer.__init__`: model, data, optimiser, schedule, output folders) and
drives it (`fit`); `Trainer`'s other methods live beside it, one idea each: `trainer_steps` (batches and
one optimiser step), `trainer_state` (checkpoints: save and resume) and `trainer_progress` (evaluation,
the stop rule, clocks and logs). `train` is the library entry point of `clipforge train`.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from clipforge.atomic import NewFolders
from clipforge.train.build import (
    build_eval_hooks,
    build_model,
    caption_tokenizer,
    prepare_for_training,
    preprocess_of,
    scale_lr_to_model,
)
from clipforge.train.captions_cut import cut_captions_line
from clipforge.train.checkpoint import CheckpointManager, check_resume, checkpoint_name, remove_killed_saves
from clipforge.train.checks import (
    check_config,
    refuse_inexact_micro_batch,
    refuse_mixed_runs,
    set_aside_unsaved_run,
)
from clipforge.train.config import TrainConfig
from clipforge.train.data import build_train_dataset, check_fast_path, epoch_line
from clipforge.train.distributed import DistInfo, barrier, init_distributed
from clipforge.train.ema import WeightEMA
from clipforge.train.freeze import train_mode
from clipforge.train.logs import RunLogger, plot_curves
from clipforge.train.loss import ClipLoss, SigLipLoss
from clipforge.train.optim import build_optimizer
from clipforge.train.precision import resolve_precision
from clipforge.train.same_run import check_same_run
from clipforge.train.schedule import TimeBudget, cosine_with_warmup, warmup_notice
from clipforge.train.skipped import SkippedImages, known_bad
from clipforge.train.step import ContrastiveModel
from clipforge.train.threads import ThreadTuner, configure_threads, too_many_workers
from clipforge.train.trainer_progress import TrainerProgress
from clipforge.train.trainer_state import TrainerState
from clipforge.train.trainer_steps import (
    MAX_LOGIT_SCALE,
    NoTrainingDataError,
    TrainerSteps,
    TrainingDivergedError,
)

__all__ = ["MAX_LOGIT_SCALE", "NoTrainingDataError", "Trainer", "TrainingDivergedError", "train"]


def _random_state() -> dict[str, Any]:
    """The process's random generators as they stand: torch's, Python's, numpy's, and CUDA's once CUDA is started.

    Not `checkpoint.rng_state` (a checkpoint's copy of them): that starts CUDA to read its generators, which under
    torchrun, before each rank has picked its GPU, would open a context on the first GPU in every rank."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer(TrainerSteps, TrainerState, TrainerProgress):
    """One training run: built here from a `TrainConfig`, run by `fit` (see the module docstring)."""

    def __init__(
        self,
        config: TrainConfig,
        dist_info: DistInfo | None = None,
        train_dataset: Any = None,
        eval_hooks: list[Any] | None = None,
    ) -> None:
        """Build the run (`_build`) from its seed without touching the caller's random state: the generators are
        seeded for the model's initialisation, then the run's stream is kept for `fit` and the caller's put back
        (torch.manual_seed here reseeded the notebook's generator for good, audit 65)."""
        caller = _random_state()
        try:
            self._build(config, dist_info, train_dataset, eval_hooks)
            self._run_rng = _random_state()  # where `fit` goes on drawing, as if nothing had run in between
        finally:
            _set_random_state(caller)

    def _build(
        self,
        config: TrainConfig,
        dist_info: DistInfo | None,
        train_dataset: Any,
        eval_hooks: list[Any] | None,
    ) -> None:
        """The run itself (see `__init__`); its warnings name the caller's line (stacklevel 3: past `__init__`)."""
        self.config = check_config(config)
        unsaved = refuse_mixed_runs(config)  # the last step of a run in --out that saved no checkpoint, else None
        self.dist = dist_info or init_distributed(config.device)
        if unsaved is not None:  # nothing to continue: started again, for --resume latest too (every rank)
            config.resume = None
            if self.dist.is_main:  # every rank decided before the group formed: only then is the log moved
                warnings.warn(set_aside_unsaved_run(config.out_dir, unsaved), stacklevel=3)
        if config.resume and not self.dist.distributed:  # under torchrun the ranks agree on it at the resume
            check_resume(Path(config.out_dir) / "checkpoints", config.resume)  # before the model and the data
        self.device = self.dist.device
        torch.manual_seed(config.seed)
        self.thread_tuner: ThreadTuner | None = None  # the thread count is the run's only while `fit` runs
        if self.dist.is_main and (crowded := too_many_workers(config.workers)):
            warnings.warn(crowded, stacklevel=3)  # one line, in place of torch's (silenced in `_loader`)
        self.model = build_model(config).to(self.device)
        # normalise as the weights were trained; checkpoints record it
        self.preprocess = preprocess_of(self.model)
        scale_lr_to_model(config, self.model)
        self.model, self.freeze_summary = prepare_for_training(self.model, config)
        check_fast_path(config)  # the data options' own refusals (micro_batch with unique_captions) come first
        refuse_inexact_micro_batch(config, self.model)  # a BatchNorm in training: GradCache is not exact
        size, context = int(self.model.visual.input_resolution), int(self.model.context_length)
        tokenizer = caption_tokenizer(self.model, config)
        self.dataset = (
            train_dataset
            if train_dataset is not None
            else build_train_dataset(
                config, size, context, self.dist.rank, self.dist.world_size, self.preprocess, tokenizer
            )
        )
        if self.dist.is_main and (cut := cut_captions_line(self.dataset, tokenizer, context, config.root)):
            warnings.warn(cut, stacklevel=3)  # a small context trains on each caption's start: said
        if self.dist.is_main and (epoch := epoch_line(self.dataset, config.root)):
            print(epoch, file=sys.stderr)  # a caption CSV's epoch is one sample per image, not per row: said
        # the nodes of a job are started by hand: the same settings, data and model everywhere, or one line now
        # (not batches of other sizes for a few steps, then a hang at the epoch end)
        check_same_run(config, self.dataset, self.model)
        wrapped: nn.Module = ContrastiveModel(self.model, with_bias=config.loss == "siglip")
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=ids)
        self.wrapped = wrapped
        self.skipped = SkippedImages("training data")  # every rank's share, gathered (see _tell_skipped)
        self.trimmed_news = 0  # readable images this rank cut from steps since the last report (`trim_images`)
        self.trimmed_images = 0  # ... and every rank's, told so far (gathered in `_tell_skipped`)
        self.skipped.add(known_bad(self.dataset))
        if eval_hooks is None:  # only rank 0 evaluates
            eval_hooks = build_eval_hooks(config, size, self.preprocess) if self.dist.is_main else []
        self.eval_hooks = eval_hooks
        self.precision = resolve_precision(config.precision, self.device)
        self.loss_fn = (
            SigLipLoss()
            if config.loss == "siglip"
            else ClipLoss(local_loss=config.local_loss, gather_with_grad=config.gather_with_grad)
        )
        self.optimizer = build_optimizer(self.model, config.lr, config.weight_decay, config.betas, config.eps)
        self.sampler, self.steps_per_epoch = self._sampler()
        self.total_steps = config.steps or max(self.steps_per_epoch * config.epochs, 1)
        self.scheduler = cosine_with_warmup(self.optimizer, self.total_steps, config.warmup_steps)
        if self.dist.is_main and not config.time_budget_s and (warm := warmup_notice(config.warmup_steps,
                                                                                     self.total_steps)):
            warnings.warn(warm, stacklevel=3)  # a warmup as long as the run: 10% of it, said
        if config.budget_clock not in ("wall", "cpu"):
            raise ValueError(f"budget_clock must be 'wall' or 'cpu', got {config.budget_clock!r}")
        self.budget = (
            TimeBudget(config.time_budget_s, config.warmup_fraction) if config.time_budget_s else None
        )
        self.ema = WeightEMA(self.model, config.ema_decay) if config.ema_decay else None
        self.out_dir = Path(config.out_dir)
        # noted before the logger makes the first of them: a run that fails before writing anything takes them back
        self.new_folders = NewFolders(
            [self.out_dir / "checkpoints", self.out_dir / "tensorboard"] if self.dist.is_main else []
        )
        self.checkpoints = CheckpointManager(
            self.out_dir / "checkpoints", keep_last=config.keep_last, metric="val_top1"
        )
        self.logger = RunLogger(self.out_dir, enabled=self.dist.is_main, tensorboard=config.tensorboard)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.stream_epoch_batches: int | None = None  # a stream of unknown length: its batches an epoch, once seen
        self.saved_step = -1
        self.last_checkpoint: Path | None = None
        self._tokenizer_carried = False
        self.losses: list[float] = []
        self.step_lr = 0.0  # the learning rate the last step trained at (train.csv's `lr`)
        self.told_uneven_streams = False  # the line on ranks whose streams ran dry at different steps: once
        self._dry_ranks: list[int] = []  # the ranks whose stream ran dry at the last such step
        self.last_metrics: dict[str, float | str] = {}
        self.checkpoint_metrics: dict[
            str, float
        ] = {}  # the evaluation of `last_checkpoint` itself ({}: none)
        # train.csv's elapsed_s goes on from a resumed checkpoint's, and its loss window (the steps since
        # the last logged loss) rides in the checkpoint: the first loss logged after a resume averages
        # all log_every steps, as the uninterrupted run's does
        self._elapsed_before = 0.0
        self._started: float | None = None
        self._window: dict[str, float] = {"loss": 0.0, "n": 0, "samples": 0, "t": 0.0}
        self._window_loss_mean = 0.0

    def fit(self) -> dict[str, Any]:
        """Train to the end of the run; returns its summary. A run that fails (any error, Ctrl-C) removes
        the folders it made and left empty (`NewFolders`): a new `--out` with nothing in it is no run.

        The process-wide settings the run needs are its own while it runs and the caller's again when it ends, by
        any route: torch's thread count (`config.threads`) and the random generators (the run's stream, seeded in
        `__init__`, goes on where it stopped; the caller's is put back). An interrupted run used to leave a notebook
        on the run's one thread, and its generator reseeded."""
        caller_threads, caller_rng = torch.get_num_threads(), _random_state()
        _set_random_state(self._run_rng)
        try:
            self.thread_tuner = configure_threads(self.config.threads)
            return self._fit()
        except BaseException:
            if self.dist.is_main:
                self.logger.close()  # TensorBoard's event file is open
                self._forget_start_only_log()
                self.new_folders.remove_unused()
            raise
        finally:
            self._run_rng = _random_state()
            _set_random_state(caller_rng)
            torch.set_num_threads(caller_threads)

    def _forget_start_only_log(self) -> None:
        """A log holding only this run's `run` record (it failed before its first step): removed, so a failed run
        leaves nothing, as before the record was written."""
        from clipforge.train.logs import read_log

        jsonl = self.out_dir / "log.jsonl"
        try:
            if jsonl.is_file() and all(r.get("kind") == "run" for r in read_log(self.out_dir)):
                jsonl.unlink()
        except (OSError, ValueError):
            pass

    def _fit(self) -> dict[str, Any]:
        cfg = self.config
        if self.dist.is_main:
            remove_killed_saves(self.checkpoints.directory)  # what a killed save left behind
        self.checkpoints.check_records()  # a damaged latest/best/index.json: one line now, not after the steps
        if cfg.resume:
            self.resume(cfg.resume)
            self.logger.truncate_after(self.step)
        self._first_step = self.step
        if self.dist.is_main:  # who trains here: a second run into this --out tells a live run from a dead one
            self.logger.note("run", {"pid": os.getpid(), "host": socket.gethostname(), "step": self.step})
        train_mode(self.model)  # frozen parts in eval mode (a locked ResNet tower's BatchNorm statistics kept)
        self._started = time.perf_counter()
        window = self._window  # loss and n carried over from a resumed checkpoint
        window.update(samples=0, t=self._started)
        interactive = sys.stderr.isatty()  # in a log file, a progress line a minute instead of ten a second
        self._bar = tqdm(
            total=None if self.budget else self.total_steps,
            initial=self.step,
            unit="step",
            disable=not self.dist.is_main,
            desc="train",
            dynamic_ncols=True,
            mininterval=0.1 if interactive else 60.0,
        )
        try:
            tick = self._now()
            while not self._done():
                stepped = self.step
                for batch in self._loader():
                    self.skipped.add(getattr(batch, "errors", None) or ())
                    size = self._step_size(batch)  # the smallest rank's: a batch empty on one rank, all skip
                    if size is None:  # another rank's stream ran dry: every rank ends the epoch at this step
                        self._stream_ran_dry(len(batch.indices))
                        break
                    if size == 0:  # no step, but a batch of the epoch read: a resume seeks by batches read
                        self.trim_images(len(batch.indices))  # another rank's batch was all unreadable
                        self.batch_in_epoch += 1
                        if self._epoch_complete():
                            break
                        continue
                    loss = self._train_step(batch, size)
                    self._check_finite(loss)
                    now = self._now()
                    self._tick(now[0] - tick[0], now[1] - tick[1], len(batch.indices))
                    tick = now
                    self.step += 1
                    self.batch_in_epoch += 1
                    self.losses.append(loss)
                    window["loss"] += loss
                    window["n"] += 1
                    window["samples"] += len(batch.indices) * self.dist.world_size
                    if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                        self._log(window)
                    self._bar.update(1)
                    ends = self._done() or self._epoch_complete()
                    # a step that ends the epoch or the run is saved just below, evaluated and named
                    # with its accuracy: no second, unevaluated `model-step-N` of the same weights
                    if cfg.save_every_steps and self.step % cfg.save_every_steps == 0 and not ends:
                        self.save(checkpoint_name(None, self.step, None))
                    if ends:
                        break
                else:  # this rank's batches ran out: a stream says so to the others, which may still hold one
                    if self._streamed():
                        self._step_size(None)
                        self._stream_ran_dry(None)
                if self.step == stepped:  # looped for ever, saving a checkpoint of no training per pass
                    raise NoTrainingDataError(self._no_batch_reason())
                if not self._done() or self._epoch_complete():
                    self._end_epoch()  # the epoch is complete (or its stream ran dry)
                    tick = self._now()  # evaluation is not training time
            metrics: dict[str, float] = {}
            if self.saved_step != self.step:
                if self.step >= self.total_steps or self._out_of_budget():
                    metrics = self.evaluate()
                    if metrics:
                        self.logger.log(
                            "eval",
                            {"step": self.step, "epoch": self._epochs_done(), **self._clock(), **metrics},
                        )
                        self._report("final", metrics)
                self.save(checkpoint_name(None, self.step, metrics.get("val_top1")), metrics)
            self._tell_skipped()
        finally:  # a stopped run (NaN loss, Ctrl-C) leaves no progress line after its message
            self._bar.close()
        if self.dist.is_main:
            plot_curves(self.out_dir)
        self.logger.close()
        # every rank leaves together, so none tears down its process group while another still saves and plots
        barrier()
        # `metrics` are the returned checkpoint's own evaluation ({} when it had none, e.g. stop_after_steps),
        # never an earlier epoch's shown as if they were the file's
        # `steps` is where the run stands; `resumed_at_step` where this call began (0: a new run)
        return {
            "steps": self.step,
            "resumed_at_step": self._first_step,
            "epoch": self._epochs_done(),
            "losses": self.losses,
            "checkpoint": self.last_checkpoint,
            "metrics": self.checkpoint_metrics,
            **self.freeze_summary,
            "skipped_images": {data: tally.as_dict() for data, tally in self._skipped_sets().items()},
            # readable images left out because another rank's batch was smaller (torchrun; 0 on one process)
            "trimmed_images": self.trimmed_images,
        }


def train(config: TrainConfig) -> dict[str, Any]:
    """Run a training job described by `config` (the library entry point of `clipforge train`).

    Under torchrun the process group this call joins is destroyed when it ends, after the trainer (whose DDP
    module, held in reference cycles, keeps gloo's threads alive) is collected: a group left to the interpreter's
    exit can abort it there (gloo threads dropping Python-owned tensors without the GIL; pytorch#179291)."""
    import gc

    import torch.distributed as dist

    joined_here = dist.is_available() and not dist.is_initialized()
    trainer = None
    try:  # the group is joined inside Trainer(), before its data and model: a refusal there leaves it too
        trainer = Trainer(config)
        return trainer.fit()
    finally:
        del trainer
        if joined_here and dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()
