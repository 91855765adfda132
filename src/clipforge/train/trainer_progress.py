"""`Trainer`'s progress: how a run measures itself, when it stops, and what it tells.

Owns the evaluation hooks' run (on the EMA weights when on; rank 0 only), the end of an epoch
(evaluate, report, save), the stop rule (steps, time budget, `stop_after_steps`), the clocks (the time
budget agreed across ranks, the thread tuner's wall time), and what is told: train.csv/log.jsonl records,
the progress bar, one stderr line per evaluation and per data set whose skipped images grew. A part of
`Trainer` (`clipforge.train.trainer`), whose `__init__` sets the attributes these methods read.
"""

from __future__ import annotations

import sys
import time

from clipforge.train.checkpoint import checkpoint_name
from clipforge.train.distributed import all_reduce_max, all_reduce_mean
from clipforge.train.evalhook import eval_precision
from clipforge.train.freeze import train_mode
from clipforge.train.skipped import SkippedImages, damaged_record
from clipforge.train.trainer_steps import UNKNOWN_EPOCH


class TrainerProgress:
    """The evaluation, stopping and logging methods of `Trainer` (see the module docstring)."""

    def evaluate(self) -> dict[str, float | str]:
        """The hooks' metrics (rank 0), measured as `clipforge eval zeroshot --precision P` measures the saved
        checkpoint (`evalhook.eval_precision`), with P itself as `eval_precision`: eval.csv, log.jsonl and the
        checkpoint records (best.json) held bf16 accuracies without saying so, and `eval zeroshot` of the same
        checkpoint in fp32 differs by an image or two. The model goes back to train mode with its frozen parts
        in eval mode (`freeze.train_mode`), whatever a hook left."""
        metrics: dict[str, float | str] = {}
        if self.dist.is_main and self.eval_hooks:
            precision = eval_precision(self.precision.dtype, self.device)
            try:
                with self._weights_for_eval():
                    for hook in self.eval_hooks:
                        metrics.update(hook(self.model, self.device, precision))
            finally:
                train_mode(self.model)
            metrics["eval_precision"] = precision
        return metrics

    def _out_of_budget(self) -> bool:
        return self.budget is not None and self.budget.spent()

    def _done(self) -> bool:
        stop = self.config.stop_after_steps
        return (
            self.step >= self.total_steps
            or self._out_of_budget()
            or (stop is not None and self.step >= self._first_step + stop)
        )

    def _report(self, label: str, metrics: dict[str, float]) -> None:
        """One line per evaluation on stdout (the log files have the same numbers)."""
        if self.dist.is_main and metrics:
            spent = (
                f", {self.budget.elapsed_s:.0f}/{self.budget.budget_s:.0f} s of training"
                if self.budget
                else ""
            )
            shown = ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
            )
            # stderr, with the progress bar: stdout carries only the command's result (`--json`)
            self._bar.write(f"{label} (step {self.step}{spent}): {shown}", file=sys.stderr)

    def _end_epoch(self) -> None:
        if self.steps_per_epoch == UNKNOWN_EPOCH and self.batch_in_epoch:
            self.stream_epoch_batches = self.batch_in_epoch  # a stream of unknown length ran out: its length
        metrics = self.evaluate()
        self.last_metrics = metrics
        self.logger.log("eval", {"step": self.step, "epoch": self.epoch + 1, **self._clock(), **metrics})
        self._report(f"epoch {self.epoch + 1}", metrics)
        self._tell_skipped()
        self.save(
            checkpoint_name(self.epoch + 1, self.step, metrics.get("val_top1")), metrics, epoch=self.epoch + 1
        )
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
        told: after the first epoch (or the final evaluation) for fixed data, so once per run. Every rank
        calls it: the training data's tally first gathers what each rank skipped of its own share."""
        self.skipped.gather()
        trimmed = round(all_reduce_mean(float(self.trimmed_news)) * self.dist.world_size)  # every rank's news
        self.trimmed_news = 0
        self.trimmed_images += trimmed
        if not self.dist.is_main:
            return
        for data, tally in self._skipped_sets().items():
            if tally.count > tally.reported:
                self._bar.write(tally.line(), file=sys.stderr)
                self.logger.note("skipped", {"step": self.step, "data": data, **tally.as_dict()})
                tally.reported = tally.count
            for shard in tally.untold_damaged():  # a shard read only in part: one line each
                self._bar.write(tally.damaged_line(shard), file=sys.stderr)
                self.logger.note("damaged_shard", {"step": self.step, "data": data, **damaged_record(shard)})
        if trimmed:  # a log.jsonl record each time the count grows, one stderr line a run (the first time)
            self.logger.note("trimmed", {"step": self.step, "trimmed_images": self.trimmed_images})
            if self.trimmed_images == trimmed:
                images = "image" if trimmed == 1 else "images"
                self._bar.write(
                    f"training data: {trimmed} readable {images} left out by step {self.step}: a rank that skipped "
                    "unreadable images has a smaller batch, and every rank trains on the smallest rank's count "
                    "(all_gather needs batches of one size); the summary's trimmed_images counts them all (told "
                    "once)",
                    file=sys.stderr,
                )

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
        record = {
            "step": self.step,
            "epoch": self._epochs_done(),
            "loss": all_reduce_mean(window["loss"] / window["n"]),
            "lr": self.step_lr,  # the rate the logged step trained at (`_train_step`), in every recipe
            "logit_scale": float(self.model.logit_scale.detach().exp()),
            "samples_per_s": rate,
            "elapsed_s": self._elapsed(),
        }
        bias = getattr(self.model, "logit_bias", None)
        if bias is not None:  # the sigmoid loss learns it beside the scale: train.csv shows both
            record["logit_bias"] = float(bias.detach())
        self.logger.log("train", record)
        window.update(loss=0.0, n=0, samples=0, t=now)
        self._bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{rate:.1f}")
