"""Every training value checked before anything is built: the field, the rule, what was given.

`clipforge.train.config.check_value` checks types; this module checks ranges and the combinations
that types cannot see. Without it, `batch_size=0` and `crop_scale=[]` ended in tracebacks deep in
the loader, `threads=100000` crashed OpenMP, `lr=1e400` (which JSON reads as infinity), `eps=0`
and `weight_decay=NaN` trained to a NaN loss and exited 0, and `device=cuda:99` trained on the
CPU. Each rule here names the field in a `TrainConfigError` (a `clipforge.errors.UserError`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from clipforge.cores import usable_cores
from clipforge.train.config import TrainConfig, TrainConfigError, build_config

PRECISIONS = ("amp", "bf16", "fp16", "fp32")
DATA_KINDS = ("labelled", "csv", "folder", "webdataset")
MAX_THREADS_PER_CORE = 4
MAX_WORKERS = 64


def _number(key: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False,
            optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TrainConfigError(f"config field {key!r} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise TrainConfigError(f"config field {key!r} must be in {left}{low:g}, {high:g}{right}, got {value!r}")


def _pair(key: str, value: Any, low: float, high: float, ordered: bool) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise TrainConfigError(f"config field {key!r} must be a list of 2 numbers, got {value!r}")
    for item in value:
        _number(key, item, low, high, low_open=key == "crop_scale", high_open=key == "betas")
    if ordered and value[0] > value[1]:
        raise TrainConfigError(f"config field {key!r} must be [low, high] with low <= high, got {value!r}")


def build_run_config(recipe: str | None, overrides: list[str], **fields: Any) -> TrainConfig:
    """The config `clipforge train` runs: recipe < flags < `--set`, where `--model` replaces the
    recipe's model and its weights and architecture (unless `--pretrained` / `--set` say otherwise),
    and an lr given by the user switches the recipe's `lr_by_size` off."""
    config = build_config(recipe, overrides, **fields)
    explicit = {o.split("=", 1)[0].strip().replace("-", "_") for o in overrides}
    if fields.get("model") and not fields.get("pretrained") and "pretrained" not in explicit:
        config.pretrained = None  # the recipe's weights belong to its own architecture
    if fields.get("model") and "model_config" not in explicit:
        config.model_config = None
    if (fields.get("lr") is not None or "lr" in explicit) and "lr_by_size" not in explicit:
        config.lr_by_size = None
    return check_config(config)


def check_config(config: TrainConfig) -> TrainConfig:
    """Refuse values out of range (TrainConfigError naming the field); returns `config` unchanged."""
    c = config
    for key, low in (("batch_size", 1), ("epochs", 1), ("log_every", 1), ("keep_last", 1)):
        _number(key, getattr(c, key), low, 10**9)
    for key in ("micro_batch", "steps", "max_samples", "val_max_samples", "samples_per_epoch", "stop_after_steps"):
        _number(key, getattr(c, key), 1, 10**12, optional=True)
    for key in ("warmup_steps", "save_every_steps", "pad_crop", "templates_per_batch"):
        _number(key, getattr(c, key), 0, 10**9)
    _number("workers", c.workers, 0, MAX_WORKERS)
    cores = usable_cores()
    _number("threads", c.threads, 0, MAX_THREADS_PER_CORE * cores, optional=True)
    _number("seed", c.seed, 0, 2**63 - 1)
    _number("lr", c.lr, 0, 10, low_open=True)
    _number("eps", c.eps, 0, 1, low_open=True)
    _number("weight_decay", c.weight_decay, 0, 10)
    _number("warmup_fraction", c.warmup_fraction, 0, 1, high_open=True)
    _number("time_budget_s", c.time_budget_s, 0, 10**9, low_open=True, optional=True)
    _number("ema_decay", c.ema_decay, 0, 1, low_open=True, high_open=True, optional=True)
    _pair("crop_scale", c.crop_scale, 0, 1, ordered=True)
    _pair("betas", c.betas, 0, 1, ordered=False)
    if c.precision not in PRECISIONS:
        raise TrainConfigError(f"config field 'precision' must be one of {', '.join(PRECISIONS)}, got {c.precision!r}")
    if c.data not in DATA_KINDS:
        raise TrainConfigError(f"config field 'data' must be one of {', '.join(DATA_KINDS)}, got {c.data!r}")
    if c.budget_clock not in ("wall", "cpu"):
        raise TrainConfigError(f"config field 'budget_clock' must be 'wall' or 'cpu', got {c.budget_clock!r}")
    if c.micro_batch is not None and c.micro_batch > c.batch_size:
        raise TrainConfigError(f"config field 'micro_batch' ({c.micro_batch}) must not exceed batch_size "
                               f"({c.batch_size})")
    if c.model_config is not None:
        check_model_config(c.model_config)
    if c.languages is not None and not (isinstance(c.languages, list | tuple) and 0 < len(c.languages) <= 8 and all(
            isinstance(code, str) and 0 < len(code) <= 16 and code.strip() == code for code in c.languages)):
        raise TrainConfigError("config field 'languages' must be a list of 1-8 language codes, the model's first "
                               f"language first (e.g. [\"zh\", \"en\"]), got {c.languages!r}")
    check_device(c.device)
    check_out_dir(c.out_dir)
    return config


def check_out_dir(out_dir: str) -> None:
    """The run folder (`--out`) is a folder or can become one, and takes files: checked before the
    model loads, so `--out afile` or `--out /proc/nope` is one line naming --out, not an errno after
    the model has loaded. Nothing is created (`atomic.folder_problem` probes the nearest existing
    folder: every rank of a torchrun job checks at once)."""
    from clipforge.atomic import folder_problem

    if not isinstance(out_dir, str) or not out_dir.strip():
        raise TrainConfigError(f"--out (config field 'out_dir') must be a folder path, got {out_dir!r}")
    problem = folder_problem(out_dir)
    if problem is not None:
        raise TrainConfigError(f"--out {out_dir}: {problem}; the run writes its logs and checkpoints into a folder "
                               "this user can write")


def check_model_config(model_config: Any) -> dict[str, Any]:
    """An inline architecture: every field checked, and its size against this machine's memory
    (weights, gradients and AdamW's state), before anything is allocated."""
    from clipforge.models.validate import ConfigError, check_fits_memory, validate_config

    try:
        checked = validate_config(model_config)
        check_fits_memory(checked, "training")
    except ConfigError as err:
        raise TrainConfigError(f"config field 'model_config': {err}") from None
    return checked


def check_device(device: str | None) -> None:
    """`auto`, `cpu`, `cuda` or `cuda:N` for a GPU this machine has; never a silent fallback to the CPU."""
    import torch

    if device in (None, "", "auto", "cpu"):
        return
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise TrainConfigError(f"config field 'device' must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if resolved.type != "cuda":
        raise TrainConfigError(f"config field 'device' must be auto, cpu, cuda or cuda:N, got {device!r}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise TrainConfigError(f"config field 'device' is {device!r} but CUDA is not available here; "
                               f"use device=cpu (or auto)")
    if resolved.index is not None and resolved.index >= count:
        raise TrainConfigError(f"config field 'device' is {device!r} but this machine has {count} CUDA "
                               f"device(s): cuda:0..cuda:{count - 1}")


def refuse_inexact_micro_batch(config: TrainConfig, model: Any) -> None:
    """`micro_batch` (GradCache) with a BatchNorm layer in training: TrainConfigError in one line, before any
    data is read. GradCache's gradients equal the full batch's only when a chunk's features do not depend on
    the other chunks; a BatchNorm in train mode normalises each chunk with that chunk's statistics (and its
    no-grad caching pass updated the running statistics a second time per chunk): losses 5.19 vs 5.27 on
    clipforge-tiny, measured. Every BatchNorm frozen in eval mode (`lock_image` on a ResNet tower) is exact."""
    from clipforge.train.freeze import batch_norms_in_training

    if not config.micro_batch or config.micro_batch >= config.batch_size:
        return  # one chunk: the plain step
    names = batch_norms_in_training(model)
    if not names:
        return
    image = sum(name.startswith("visual.") for name in names)
    towers = [f"the image tower's {image}" if image else "", f"the text tower's {len(names) - image}"
              if len(names) > image else ""]
    raise TrainConfigError(
        f"micro_batch={config.micro_batch} (GradCache) cannot give the full batch's gradients with "
        f"{' and '.join(filter(None, towers))} BatchNorm layers in training (each chunk would be normalised with "
        "its own statistics): lock that tower (--set lock_image=true), train a ViT, or set micro_batch=null")


def refuse_mixed_runs(config: TrainConfig) -> int | None:
    """A new run (no `resume`) into an out_dir holding another run's checkpoints: TrainConfigError. It started
    from scratch and appended to the old run's train.csv and log.jsonl, its checkpoints beside the old ones: one
    curve that was two runs, and best.json free to name the other run's checkpoint.

    A folder holding the logs of a run that saved no checkpoint (killed, Ctrl-C'd or out of memory before its
    first epoch end) holds nothing to continue: returns the last step it logged (0: none), for the trainer to
    start the run again there (`set_aside_unsaved_run`), for a new run and for `--resume latest` alike. Before,
    the first was refused with advice to use `--resume latest`, which was refused too ("no latest.json"): a
    dead end. None when the folder holds no run (or, with `resume`, holds checkpoints to resume)."""
    out = Path(config.out_dir)
    folder = out / "checkpoints"
    # a checkpoint is whole once its training state is written beside it (killed between the two: no checkpoint)
    checkpoints = [p for p in folder.glob("*.safetensors") if not p.name.startswith(".")
                   and p.with_suffix(".state.pt").is_file()] if folder.is_dir() else []
    logged = (out / "log.jsonl").is_file() and (out / "log.jsonl").stat().st_size > 0
    if logged and not checkpoints and (not config.resume or config.resume == "latest"):
        from clipforge.train.logs import read_log

        records = read_log(out)
        if (pid := running_elsewhere(records)) is not None:
            # a second run here took a live one for dead: moved its logs, mixed its rows and made it crash
            raise TrainConfigError(f"--out {out}: a run (pid {pid}) is training there now and has saved no "
                                   "checkpoint yet: wait for it to end, or give this run another --out")
        steps = [int(r.get("step") or 0) for r in records if r.get("kind") == "train"]
        return max(steps, default=0)
    if config.resume or not checkpoints:
        return None
    held = ", ".join(filter(None, ["a log (log.jsonl)" if logged else "", f"{len(checkpoints)} checkpoint(s)"]))
    raise TrainConfigError(f"--out {out} already holds a run ({held}): continue it with --resume latest, or give "
                           "this run another --out (a new run there would mix its curves and checkpoints with the "
                           "old one's)")


def running_elsewhere(records: list[dict[str, Any]]) -> int | None:
    """The pid of the process that wrote the last `run` record of a log (`Trainer` writes one as it starts) when
    it is still alive on this machine, else None: a run that has saved no checkpoint yet may be training now."""
    import socket

    started = [r for r in records if r.get("kind") == "run"]
    if not started:
        return None
    pid, host = started[-1].get("pid"), started[-1].get("host")
    if not isinstance(pid, int) or host != socket.gethostname() or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return pid
    return pid


UNSAVED_RUN = "unsaved-run"
"""The folder inside --out where the logs of a run that saved no checkpoint are set aside."""
_RUN_LOGS = ("log.jsonl", "train.csv", "eval.csv", "tensorboard", "loss.png", "accuracy.png")


def set_aside_unsaved_run(out_dir: str, last_step: int) -> str:
    """Move the logs of a run that saved no checkpoint into `<out>/unsaved-run/` (replacing an older one there),
    so the new run's logs start empty instead of continuing a curve no checkpoint covers; returns the notice.
    Rank 0 only, before the run writes anything."""
    import shutil

    out = Path(out_dir)
    aside = out / UNSAVED_RUN
    if aside.exists():
        shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
    aside.mkdir(parents=True)
    for name in _RUN_LOGS:
        if (out / name).exists():
            (out / name).rename(aside / name)
    when = f"killed at step {last_step}?" if last_step else "killed before its first logged step?"
    return (f"{out} holds a run that saved no checkpoint ({when}): starting it again (its logs are moved to "
            f"{aside})")
