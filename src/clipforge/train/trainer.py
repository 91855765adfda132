"""The training loop: one process or a torchrun job, fine-tuning or pretraining.

Everything that varies is in `TrainConfig`; the loop itself is the same for all of it:
sample a batch (ResumableSampler, so a resumed run sees exactly the batches it missed), run a
plain or GradCache step under autocast, step AdamW through the GradScaler when there is one,
advance the cosine schedule, clamp the logit scale to ln(100), log, and checkpoint every N
steps and at each epoch end after the zero-shot eval hooks. Only rank 0 writes files.

Switches any recipe can turn on: `time_budget_s` (the schedule runs on elapsed training time,
wall or CPU, and the run stops when it is spent; evaluation does not count), `ema_decay`
(evaluate and save an average of the weights), `in_memory` and its tensor-op batches
(`clipforge.train.fastdata`), `channels_last`, and `threads` (0: 1 or 2 by measured speed).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from clipforge.atomic import NewFolders, remove_stale_temps
from clipforge.train.build import (
    build_eval_hooks,
    build_model,
    family_tokenizer,
    prepare_for_training,
    preprocess_of,
    scale_lr_to_model,
)
from clipforge.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    check_resumable,
    check_same_batches,
    checkpoint_name,
    freeze_difference,
    load_train_state,
    refuse_finished_run,
    rng_state,
    set_rng_state,
)
from clipforge.train.checks import check_config, refuse_mixed_runs
from clipforge.train.config import TrainConfig, TrainConfigError
from clipforge.train.data import ResumableSampler, build_train_dataset
from clipforge.train.distributed import DistInfo, all_reduce_max, all_reduce_mean, barrier, init_distributed
from clipforge.train.ema import WeightEMA
from clipforge.train.freeze import set_frozen_eval
from clipforge.train.logs import RunLogger, plot_curves
from clipforge.train.loss import ClipLoss, SigLipLoss, unique_caption_loss
from clipforge.train.optim import build_optimizer
from clipforge.train.precision import resolve_precision
from clipforge.train.schedule import TimeBudget, cosine_with_warmup
from clipforge.train.skipped import SkippedImages, known_bad
from clipforge.train.step import ContrastiveModel, gradcache_step, plain_step
from clipforge.train.threads import configure_threads

MAX_LOGIT_SCALE = math.log(100)


class Trainer:
    def __init__(self, config: TrainConfig, dist_info: DistInfo | None = None,
                 train_dataset: Any = None, eval_hooks: list[Any] | None = None) -> None:
        self.config = check_config(config)
        refuse_mixed_runs(config)
        self.dist = dist_info or init_distributed(config.device)
        self.device = self.dist.device
        torch.manual_seed(config.seed)
        self._threads_before = torch.get_num_threads()  # restored when fit() returns
        self.thread_tuner = configure_threads(config.threads)
        self.model = build_model(config).to(self.device)
        self.preprocess = preprocess_of(self.model)  # normalise as the weights were trained; checkpoints record it
        scale_lr_to_model(config, self.model)
        self.model, self.freeze_summary = prepare_for_training(self.model, config)
        wrapped: nn.Module = ContrastiveModel(self.model, with_bias=config.loss == "siglip")
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=ids)
        self.wrapped = wrapped
        size, context = int(self.model.visual.input_resolution), int(self.model.context_length)
        self.dataset = train_dataset if train_dataset is not None else build_train_dataset(
            config, size, context, self.dist.rank, self.dist.world_size, self.preprocess,
            family_tokenizer(self.model))
        self.skipped = SkippedImages("training data")  # rank 0 tells its own share (see _tell_skipped)
        self.skipped.add(known_bad(self.dataset))
        if eval_hooks is None:  # only rank 0 evaluates
            eval_hooks = build_eval_hooks(config, size, self.preprocess) if self.dist.is_main else []
        self.eval_hooks = eval_hooks
        self.precision = resolve_precision(config.precision, self.device)
        self.loss_fn = SigLipLoss() if config.loss == "siglip" else ClipLoss(
            local_loss=config.local_loss, gather_with_grad=config.gather_with_grad)
        self.optimizer = build_optimizer(self.model, config.lr, config.weight_decay, config.betas, config.eps)
        self.sampler, self.steps_per_epoch = self._sampler()
        self.total_steps = config.steps or max(self.steps_per_epoch * config.epochs, 1)
        self.scheduler = cosine_with_warmup(self.optimizer, self.total_steps, config.warmup_steps)
        if config.budget_clock not in ("wall", "cpu"):
            raise ValueError(f"budget_clock must be 'wall' or 'cpu', got {config.budget_clock!r}")
        self.budget = TimeBudget(config.time_budget_s, config.warmup_fraction) if config.time_budget_s else None
        self.ema = WeightEMA(self.model, config.ema_decay) if config.ema_decay else None
        self.out_dir = Path(config.out_dir)
        # noted before the logger makes the first of them: a run that fails before writing anything takes them back
        self.new_folders = NewFolders([self.out_dir / "checkpoints", self.out_dir / "tensorboard"]
                                      if self.dist.is_main else [])
        self.checkpoints = CheckpointManager(self.out_dir / "checkpoints", keep_last=config.keep_last,
                                             metric="val_top1")
        self.logger = RunLogger(self.out_dir, enabled=self.dist.is_main, tensorboard=config.tensorboard)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.saved_step = -1
        self.last_checkpoint: Path | None = None
        self._tokenizer_carried = False
        self.losses: list[float] = []
        self.last_metrics: dict[str, float] = {}
        self.checkpoint_metrics: dict[str, float] = {}  # the evaluation of `last_checkpoint` itself ({}: none)
        # train.csv's elapsed_s goes on from a resumed checkpoint's, and its loss window (the steps since
        # the last logged loss) rides in the checkpoint: the first loss logged after a resume averages
        # all log_every steps, as the uninterrupted run's does
        self._elapsed_before = 0.0
        self._started: float | None = None
        self._window: dict[str, float] = {"loss": 0.0, "n": 0, "samples": 0, "t": 0.0}
        self._window_loss_mean = 0.0

    def _sampler(self) -> tuple[ResumableSampler | None, int]:
        cfg = self.config
        if isinstance(self.dataset, torch.utils.data.IterableDataset):
            if cfg.samples_per_epoch is None and cfg.steps is None:
                raise ValueError("a streamed dataset needs samples_per_epoch or steps to define its length")
            per_rank = (cfg.samples_per_epoch or cfg.steps * cfg.batch_size * self.dist.world_size)
            return None, max(per_rank // (cfg.batch_size * self.dist.world_size), 1)
        sampler = ResumableSampler(len(self.dataset), cfg.batch_size, cfg.seed, self.dist.rank,
                                   self.dist.world_size)
        if sampler.batches_per_epoch == 0:
            raise ValueError(f"{len(self.dataset)} samples over {self.dist.world_size} rank(s) do not fill one "
                             f"batch of {cfg.batch_size}; lower batch_size")
        return sampler, sampler.batches_per_epoch

    # -- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.precision.scaler.state_dict() if self.precision.scaler else None,
                "rng": rng_state(), "budget": self.budget.state_dict() if self.budget else None,
                "elapsed_s": self._elapsed(),
                # the place in the data counts global batches: a resume on another number of processes checks it
                "world_size": self.dist.world_size, "global_batch": self.config.batch_size * self.dist.world_size,
                "log_window": {"loss": self._window_loss_mean, "n": int(self._window["n"])}}

    def _elapsed(self) -> float:
        """Wall seconds of this run so far, counting the runs it resumed from (train.csv's elapsed_s)."""
        since = time.perf_counter() - self._started if self._started is not None else 0.0
        return self._elapsed_before + since

    def _epochs_done(self) -> float:
        """Epochs of data consumed (1.3333 = a third into the second): the one `epoch` every log
        line, checkpoint record (index/latest/best.json) and the summary use, 1-based at epoch ends."""
        done = self.epoch + self.batch_in_epoch / self.steps_per_epoch
        return int(done) if float(done).is_integer() else round(done, 4)

    def _weights_for_eval(self) -> Any:
        """The EMA weights swapped in (yielding the raw ones), or the model as it is."""
        return self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext(None)

    def save(self, name: str, metrics: dict[str, float] | None = None, epoch: float | None = None) -> Path | None:
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
                    name, self.model, self.config.to_dict(), state, metrics,
                    epoch=self._epochs_done() if epoch is None else epoch)
            if not self._tokenizer_carried:  # a family's tokenizer file beside its checkpoints, once per run
                from clipforge.train.tokenizer_file import carry_tokenizer_file

                carry_tokenizer_file(family_tokenizer(self.model), self.checkpoints.directory)
                self._tokenizer_carried = True
        return self.last_checkpoint

    def resume(self, spec: str) -> None:
        path = self.checkpoints.resolve(spec)
        weights, state = load_train_state(path, self.checkpoints.resumable(exclude=path))
        ema_state = state.get("ema")
        raw = ema_state["raw_model"] if ema_state else weights
        check_resumable(path, raw, self.model, self.config, state.get("train_config"))
        # an ordered stream (no sampler, shards not resampled): each process's place is in its own shards
        ordered_stream = self.sampler is None and not getattr(self.dataset, "resampled", False)
        # BatchNorm being trained (a ResNet tower not locked) keeps per-process statistics
        batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and any(
            p.requires_grad for p in m.parameters()) for m in self.model.modules())
        check_same_batches(spec, path, self.config, state, self.dist.world_size, self.steps_per_epoch,
                           shards_per_process=ordered_stream, batch_norm=batch_norm)
        self.model.load_state_dict({k: v.to(self.device) for k, v in raw.items()})
        if self.ema is not None:
            self.ema.load({k: v.to(self.device) for k, v in weights.items()}, ema_state["updates"] if ema_state else 0)
        if self.budget is not None and state.get("budget"):
            self.budget.load_state_dict(state["budget"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError:  # torch: "loaded state dict contains a parameter group that doesn't match ..."
            raise CheckpointError(f"--resume {spec}: {path.name} was trained with other parameters frozen than "
                                  f"this run ({freeze_difference(self.config, state.get('train_config'))}); "
                                  "resume with the run's own settings") from None
        self.scheduler.load_state_dict(state["scheduler"])
        if self.precision.scaler and state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self._elapsed_before = float(state.get("elapsed_s", 0.0))  # absent in checkpoints before it was kept
        window = state.get("log_window") or {}
        self._window.update(loss=float(window.get("loss", 0.0)), n=int(window.get("n", 0)))
        if self.batch_in_epoch >= self.steps_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        refuse_finished_run(spec, path, self.step, self.config, self.total_steps, self._out_of_budget())

    # -- loop ------------------------------------------------------------------------------
    def _loader(self) -> Any:
        from clipforge.data import make_loader

        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            if hasattr(self.dataset, "epoch_batches"):  # in memory: batches by tensor ops, no DataLoader
                return self.dataset.epoch_batches(list(self.sampler), self.config.batch_size, self.epoch,
                                                  self.batch_in_epoch)
            return make_loader(self.dataset, self.config.batch_size, workers=self.config.workers,
                               sampler=self.sampler, drop_last=True)
        loader = make_loader(self.dataset, self.config.batch_size, workers=self.config.workers, drop_last=True)
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

    def _train_step(self, batch: Any) -> float:
        cfg = self.config
        images, texts = batch.images.to(self.device, non_blocking=True), batch.labels.to(self.device, non_blocking=True)
        loss_fn, groups = self._loss_for(batch)
        if self.dist.distributed and getattr(batch, "caption_index", None) is None:
            # all_gather needs equal batches: trim to the smallest rank's
            size = torch.tensor([len(images)], device=self.device)
            torch.distributed.all_reduce(size, op=torch.distributed.ReduceOp.MIN)
            images, texts = images[: int(size)], texts[: int(size)]
            groups = None if groups is None else groups[: int(size)]
        if self.budget is not None:  # the schedule runs on training time, not on steps
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * self.budget.factor()
        self.optimizer.zero_grad(set_to_none=True)
        if cfg.micro_batch and cfg.micro_batch < len(images):
            loss = gradcache_step(self.wrapped, images, texts, loss_fn, self.precision, cfg.micro_batch, groups)
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
                f"weight_decay {cfg.weight_decay:g}, precision {cfg.precision}); lower the lr or use precision=fp32")

    def _no_batch_reason(self) -> str:
        """Why a pass over the training data gave no batch: the images it skipped, or too few samples."""
        if self.skipped.count:
            why = f"{self.skipped.line(logged=False)}; replace or remove those files"
        else:
            why = (f"it gave fewer than --batch-size {self.config.batch_size} samples per rank (the last batch of a "
                   "pass is dropped when short); lower --batch-size or add data")
        return f"epoch {self.epoch + 1} of the training data gave no batch to train on: {why}"

    def evaluate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.dist.is_main and self.eval_hooks:
            with self._weights_for_eval():
                for hook in self.eval_hooks:
                    metrics.update(hook(self.model, self.device, self.precision.autocast))
        return metrics

    def _out_of_budget(self) -> bool:
        return self.budget is not None and self.budget.spent()

    def _done(self) -> bool:
        stop = self.config.stop_after_steps
        return (self.step >= self.total_steps or self._out_of_budget()
                or (stop is not None and self.step >= self._first_step + stop))

    def _report(self, label: str, metrics: dict[str, float]) -> None:
        """One line per evaluation on stdout (the log files have the same numbers)."""
        if self.dist.is_main and metrics:
            spent = f", {self.budget.elapsed_s:.0f}/{self.budget.budget_s:.0f} s of training" if self.budget else ""
            shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
            # stderr, with the progress bar: stdout carries only the command's result (`--json`)
            self._bar.write(f"{label} (step {self.step}{spent}): {shown}", file=sys.stderr)

    def _end_epoch(self) -> None:
        metrics = self.evaluate()
        self.last_metrics = metrics
        self.logger.log("eval", {"step": self.step, "epoch": self.epoch + 1, **self._clock(), **metrics})
        self._report(f"epoch {self.epoch + 1}", metrics)
        self._tell_skipped()
        self.save(checkpoint_name(self.epoch + 1, self.step, metrics.get("val_top1")), metrics, epoch=self.epoch + 1)
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def _skipped_sets(self) -> dict[str, SkippedImages]:
        """The skipped-image tallies by data set: "train", then each evaluation set by its name."""
        tallies = {"train": self.skipped}
        for hook in self.eval_hooks:
            if isinstance(getattr(hook, "skipped", None), SkippedImages):
                tallies[getattr(hook, "name", "eval")] = hook.skipped
        return tallies

    def _tell_skipped(self) -> None:
        """One stderr line (and a log.jsonl record) per data set whose tally grew since it was last
        told: after the first epoch (or the final evaluation) for fixed data, so once per run."""
        if not self.dist.is_main:
            return
        for data, tally in self._skipped_sets().items():
            if tally.count > tally.reported:
                self._bar.write(tally.line(), file=sys.stderr)
                self.logger.note("skipped", {"step": self.step, "data": data, **tally.as_dict()})
                tally.reported = tally.count

    def _clock(self) -> dict[str, float]:
        return {"train_s": self.budget.elapsed_s} if self.budget is not None else {}

    @staticmethod
    def _now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def _tick(self, wall_s: float, cpu_s: float, samples: int) -> None:
        """Account one step: the budget clock (agreed across ranks) and the thread tuner (wall time)."""
        if self.thread_tuner is not None:
            self.thread_tuner.record(wall_s / max(samples, 1))
        if self.budget is not None:
            self.budget.elapsed_s += all_reduce_max(cpu_s if self.config.budget_clock == "cpu" else wall_s)

    def _log(self, window: dict[str, float]) -> None:
        now = time.perf_counter()
        rate = window["samples"] / max(now - window["t"], 1e-9)  # the steps this process ran
        record = {"step": self.step, "epoch": self._epochs_done(),
                  "loss": all_reduce_mean(window["loss"] / window["n"]), "lr": self.optimizer.param_groups[0]["lr"],
                  "logit_scale": float(self.model.logit_scale.detach().exp()), "samples_per_s": rate,
                  "elapsed_s": self._elapsed()}
        self.logger.log("train", record)
        window.update(loss=0.0, n=0, samples=0, t=now)
        self._bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{rate:.1f}")

    def fit(self) -> dict[str, Any]:
        """Train to the end of the run; returns its summary. A run that fails (any error, Ctrl-C) removes
        the folders it made and left empty (`NewFolders`): a new `--out` with nothing in it is no run."""
        try:
            return self._fit()
        except BaseException:
            if self.dist.is_main:
                self.logger.close()  # TensorBoard's event file is open
                self.new_folders.remove_unused()
            raise

    def _fit(self) -> dict[str, Any]:
        cfg = self.config
        if self.dist.is_main:
            remove_stale_temps(self.checkpoints.directory)  # what a killed save left behind
        self.checkpoints.check_records()  # a damaged latest/best/index.json: one line now, not after the steps
        if cfg.resume:
            self.resume(cfg.resume)
            self.logger.truncate_after(self.step)
        self._first_step = self.step
        self.model.train()
        set_frozen_eval(self.model, cfg.lock_image, cfg.lock_text)
        self._started = time.perf_counter()
        window = self._window  # loss and n carried over from a resumed checkpoint
        window.update(samples=0, t=self._started)
        interactive = sys.stderr.isatty()  # in a log file, a progress line a minute instead of ten a second
        self._bar = tqdm(total=None if self.budget else self.total_steps, initial=self.step, unit="step",
                         disable=not self.dist.is_main, desc="train", dynamic_ncols=True,
                         mininterval=0.1 if interactive else 60.0)
        try:
            tick = self._now()
            while not self._done():
                stepped = self.step
                for batch in self._loader():
                    self.skipped.add(getattr(batch, "errors", None) or ())
                    if len(batch.indices) == 0:
                        continue
                    loss = self._train_step(batch)
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
                    ends = self._done() or self.batch_in_epoch >= self.steps_per_epoch
                    # a step that ends the epoch or the run is saved just below, evaluated and named
                    # with its accuracy: no second, unevaluated `model-step-N` of the same weights
                    if cfg.save_every_steps and self.step % cfg.save_every_steps == 0 and not ends:
                        self.save(checkpoint_name(None, self.step, None))
                    if ends:
                        break
                if self.step == stepped:  # looped for ever, saving a checkpoint of no training per pass
                    raise NoTrainingDataError(self._no_batch_reason())
                if not self._done() or self.batch_in_epoch >= self.steps_per_epoch:
                    self._end_epoch()  # the epoch is complete (or its stream ran dry)
                    tick = self._now()  # evaluation is not training time
            metrics: dict[str, float] = {}
            if self.saved_step != self.step:
                if self.step >= self.total_steps or self._out_of_budget():
                    metrics = self.evaluate()
                    if metrics:
                        self.logger.log("eval", {"step": self.step, "epoch": self._epochs_done(),
                                                 **self._clock(), **metrics})
                        self._report("final", metrics)
                self.save(checkpoint_name(None, self.step, metrics.get("val_top1")), metrics)
            self._tell_skipped()
        finally:  # a stopped run (NaN loss, Ctrl-C) leaves no progress line after its message
            self._bar.close()
        if self.dist.is_main:
            plot_curves(self.out_dir)
        self.logger.close()
        torch.set_num_threads(self._threads_before)
        # every rank leaves together, so none tears down its process group while another still saves and plots
        barrier()
        # `metrics` are the returned checkpoint's own evaluation ({} when it had none, e.g. stop_after_steps),
        # never an earlier epoch's shown as if they were the file's
        # `steps` is where the run stands; `resumed_at_step` where this call began (0: a new run)
        return {"steps": self.step, "resumed_at_step": self._first_step, "epoch": self._epochs_done(),
                "losses": self.losses, "checkpoint": self.last_checkpoint, "metrics": self.checkpoint_metrics, **self.freeze_summary,
                "skipped_images": {data: tally.as_dict() for data, tally in self._skipped_sets().items()}}


class TrainingDivergedError(TrainConfigError):
    """The loss became NaN or infinite: the run stops (exit status 2), nothing more is saved."""


class NoTrainingDataError(TrainConfigError):
    """A whole pass over the training data gave no batch (every image unreadable, a stream shorter than one
    batch): the run stops in one line (exit status 2) instead of looping for ever."""


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
