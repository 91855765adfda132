"""The training loop: one process or a torchrun job, fine-tuning or pretraining.

Everything that varies is in `TrainConfig`; the loop itself is the same for all of it:
sample a batch (ResumableSampler, so a resumed run sees exactly the batches it missed), run a
plain or GradCache step under autocast, step AdamW through the GradScaler when there is one,
advance the cosine schedule, clamp the logit scale to ln(100), log, and checkpoint every N
steps and at each epoch end after the zero-shot eval hooks. Only rank 0 writes files.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from clipforge.train.checkpoint import (
    CheckpointManager,
    checkpoint_name,
    load_train_state,
    rng_state,
    set_rng_state,
)
from clipforge.train.config import TrainConfig
from clipforge.train.data import ResumableSampler, build_train_dataset
from clipforge.train.distributed import DistInfo, all_reduce_mean, init_distributed
from clipforge.train.freeze import apply_freezing, set_frozen_eval
from clipforge.train.logs import RunLogger, plot_curves
from clipforge.train.loss import ClipLoss
from clipforge.train.optim import build_optimizer
from clipforge.train.precision import resolve_precision
from clipforge.train.schedule import cosine_with_warmup
from clipforge.train.step import ContrastiveModel, gradcache_step, plain_step

MAX_LOGIT_SCALE = math.log(100)


def build_model(config: TrainConfig) -> nn.Module:
    """The architecture `config.model`, randomly initialised or from `config.pretrained`."""
    from clipforge.models import create_model_from_config, get_config

    arch = get_config(config.model)
    if config.pretrained is None:
        return create_model_from_config(arch)
    from clipforge.api import load_model

    model = load_model(config.pretrained, "cpu").model
    if model.state_dict().keys() != create_model_from_config(arch).state_dict().keys():
        raise ValueError(f"pretrained weights {config.pretrained!r} do not fit architecture {config.model!r}")
    return model


def build_eval_hooks(config: TrainConfig, image_size: int) -> list[Any]:
    from clipforge.data import open_dataset
    from clipforge.image import build_preprocess
    from clipforge.train.evalhook import ZeroShotEval
    from clipforge.zeroshot import get_templates

    hooks = []
    specs = [("val", config.val_dataset, config.val_root or config.root, config.val_split,
              config.val_templates or config.templates),
             ("forget", config.forget_dataset, config.forget_root, config.forget_split, config.forget_templates)]
    for name, dataset, root, split, templates in specs:
        if not dataset:
            continue
        if root is None:
            raise ValueError(f"{name}_dataset={dataset!r} needs {name}_root")
        ds = open_dataset(dataset, root, split, transform=build_preprocess(image_size))
        hooks.append(ZeroShotEval(name, ds, ds.classnames, get_templates(templates),
                                  max_samples=config.val_max_samples if name == "val" else None))
    return hooks


class Trainer:
    def __init__(self, config: TrainConfig, dist_info: DistInfo | None = None,
                 train_dataset: Any = None, eval_hooks: list[Any] | None = None) -> None:
        self.config = config
        self.dist = dist_info or init_distributed(config.device)
        self.device = self.dist.device
        torch.manual_seed(config.seed)
        self.model = build_model(config).to(self.device)
        self.freeze_summary = apply_freezing(self.model, config.lock_image, config.lock_text,
                                             config.projections_only)
        if config.grad_checkpointing:
            self.model.transformer.grad_checkpointing = True
            if hasattr(self.model.visual, "transformer"):
                self.model.visual.transformer.grad_checkpointing = True
        wrapped: nn.Module = ContrastiveModel(self.model)
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=ids)
        self.wrapped = wrapped
        size, context = int(self.model.visual.input_resolution), int(self.model.context_length)
        self.dataset = train_dataset if train_dataset is not None else build_train_dataset(
            config, size, context, self.dist.rank, self.dist.world_size)
        self.eval_hooks = eval_hooks if eval_hooks is not None else build_eval_hooks(config, size)
        self.precision = resolve_precision(config.precision, self.device)
        self.loss_fn = ClipLoss(local_loss=config.local_loss, gather_with_grad=config.gather_with_grad)
        self.optimizer = build_optimizer(self.model, config.lr, config.weight_decay, config.betas, config.eps)
        self.sampler, self.steps_per_epoch = self._sampler()
        self.total_steps = config.steps or max(self.steps_per_epoch * config.epochs, 1)
        self.scheduler = cosine_with_warmup(self.optimizer, self.total_steps, config.warmup_steps)
        self.out_dir = Path(config.out_dir)
        self.checkpoints = CheckpointManager(self.out_dir / "checkpoints", keep_last=config.keep_last,
                                             metric="val_top1")
        self.logger = RunLogger(self.out_dir, enabled=self.dist.is_main, tensorboard=config.tensorboard)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.saved_step = -1
        self.last_checkpoint: Path | None = None
        self.losses: list[float] = []

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
                "rng": rng_state()}

    def save(self, name: str, metrics: dict[str, float] | None = None) -> Path | None:
        self.saved_step = self.step
        if self.dist.is_main:
            self.last_checkpoint = self.checkpoints.save(name, self.model, self.config.to_dict(), self.state(), metrics)
        return self.last_checkpoint

    def resume(self, spec: str) -> None:
        weights, state = load_train_state(self.checkpoints.resolve(spec))
        self.model.load_state_dict({k: v.to(self.device) for k, v in weights.items()})
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.precision.scaler and state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        if self.batch_in_epoch >= self.steps_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    # -- loop ------------------------------------------------------------------------------
    def _loader(self) -> Any:
        from clipforge.data import make_loader

        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            return make_loader(self.dataset, self.config.batch_size, workers=self.config.workers,
                               sampler=self.sampler, drop_last=True)
        loader = make_loader(self.dataset, self.config.batch_size, workers=self.config.workers, drop_last=True)
        iterator = iter(loader)
        for _ in range(self.batch_in_epoch):  # a stream cannot seek: replay the consumed batches
            next(iterator)
        return iterator

    def _train_step(self, images: torch.Tensor, texts: torch.Tensor) -> float:
        cfg = self.config
        images, texts = images.to(self.device, non_blocking=True), texts.to(self.device, non_blocking=True)
        if self.dist.distributed:  # all_gather needs equal batches: trim to the smallest rank's
            size = torch.tensor([len(images)], device=self.device)
            torch.distributed.all_reduce(size, op=torch.distributed.ReduceOp.MIN)
            images, texts = images[: int(size)], texts[: int(size)]
        self.optimizer.zero_grad(set_to_none=True)
        if cfg.micro_batch and cfg.micro_batch < len(images):
            loss = gradcache_step(self.wrapped, images, texts, self.loss_fn, self.precision, cfg.micro_batch)
        else:
            loss = plain_step(self.wrapped, images, texts, self.loss_fn, self.precision)
        if self.precision.scaler:
            self.precision.scaler.step(self.optimizer)
            self.precision.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return float(loss)

    def evaluate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            for hook in self.eval_hooks:
                metrics.update(hook(self.model, self.device, self.precision.autocast))
        return metrics

    def _done(self) -> bool:
        stop = self.config.stop_after_steps
        return self.step >= self.total_steps or (stop is not None and self.step >= self._first_step + stop)

    def _end_epoch(self) -> None:
        metrics = self.evaluate()
        self.logger.log("eval", {"step": self.step, "epoch": self.epoch + 1, **metrics})
        self.save(checkpoint_name(self.epoch + 1, self.step, metrics.get("val_top1")), metrics)
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def _log(self, window: dict[str, float], started: float) -> None:
        now = time.perf_counter()
        rate = window["samples"] / max(now - window["t"], 1e-9)
        record = {"step": self.step, "epoch": self.epoch + self.batch_in_epoch / self.steps_per_epoch,
                  "loss": all_reduce_mean(window["loss"] / window["n"]), "lr": self.optimizer.param_groups[0]["lr"],
                  "logit_scale": float(self.model.logit_scale.detach().exp()), "samples_per_s": rate,
                  "elapsed_s": now - started}
        self.logger.log("train", record)
        window.update(loss=0.0, n=0, samples=0, t=now)
        self._bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{rate:.1f}")

    def fit(self) -> dict[str, Any]:
        cfg = self.config
        if cfg.resume:
            self.resume(cfg.resume)
        self._first_step = self.step
        self.model.train()
        set_frozen_eval(self.model, cfg.lock_image, cfg.lock_text)
        started = time.perf_counter()
        window = {"loss": 0.0, "n": 0, "samples": 0, "t": started}
        self._bar = tqdm(total=self.total_steps, initial=self.step, unit="step", disable=not self.dist.is_main,
                         desc="train", dynamic_ncols=True)
        while not self._done():
            for batch in self._loader():
                if len(batch.indices) == 0:
                    continue
                loss = self._train_step(batch.images, batch.labels)
                self.step += 1
                self.batch_in_epoch += 1
                self.losses.append(loss)
                window["loss"] += loss
                window["n"] += 1
                window["samples"] += len(batch.indices) * self.dist.world_size
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    self._log(window, started)
                self._bar.update(1)
                if cfg.save_every_steps and self.step % cfg.save_every_steps == 0:
                    self.save(checkpoint_name(None, self.step, None))
                if self._done() or self.batch_in_epoch >= self.steps_per_epoch:
                    break
            if not self._done() or self.batch_in_epoch >= self.steps_per_epoch:
                self._end_epoch()  # the epoch is complete (or its stream ran dry)
        self._bar.close()
        metrics: dict[str, float] = {}
        if self.saved_step != self.step:
            if self.step >= self.total_steps:
                metrics = self.evaluate()
                if metrics:
                    self.logger.log("eval", {"step": self.step, "epoch": self.epoch + self.batch_in_epoch
                                             / self.steps_per_epoch, **metrics})
            self.save(checkpoint_name(None, self.step, None), metrics)
        if self.dist.is_main:
            plot_curves(self.out_dir)
        self.logger.close()
        return {"steps": self.step, "epoch": self.epoch, "losses": self.losses, "checkpoint": self.last_checkpoint,
                "metrics": metrics, **self.freeze_summary}


def train(config: TrainConfig) -> dict[str, Any]:
    """Run a training job described by `config` (the library entry point of `clipforge train`)."""
    return Trainer(config).fit()
