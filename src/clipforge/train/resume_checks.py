"""Whether a checkpoint may be resumed by this run: the same architecture, the same batches (per-process batch
size and process count), steps left to train, and which frozen layers changed. Each refusal is one
`CheckpointError` naming the checkpoint and what to change; `trainer_state` asks them before any step runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from clipforge.train.checkpoint import CheckpointError

__all__ = ["check_resumable", "check_same_batches", "freeze_difference", "refuse_finished_run", "saved_world_size"]


def check_resumable(path: Path, weights: dict[str, torch.Tensor], model: torch.nn.Module, config: Any,
                    saved_config: Any) -> None:
    """CheckpointError when the checkpoint's weights do not fit this run's model (`--model` or the recipe's
    architecture changed since the run began): torch's load_state_dict printed a traceback with every
    missing and unexpected parameter name."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or reshaped):
        return
    try:
        saved = json.loads(saved_config).get("model") if isinstance(saved_config, str) else None
    except (ValueError, AttributeError):
        saved = None
    counts = ", ".join(f"{len(keys)} {what}" for keys, what in ((missing, "missing"), (unexpected, "unexpected"),
                                                                (reshaped, "of another shape")) if keys)
    first = (reshaped or missing or unexpected)[0]
    was = f" (that run's --model: {saved})" if saved and saved != config.model else ""
    raise CheckpointError(f"--resume: {path} is a checkpoint of another architecture than --model {config.model}"
                          f"{was}; parameters {counts} (e.g. {first}): resume with the run's own --model and "
                          "recipe")


def _saved_batch_size(state: dict[str, Any]) -> int | None:
    """The per-process `batch_size` of the run that wrote `state` (None: not readable from it)."""
    try:
        saved = json.loads(state.get("train_config") or "{}")
    except (TypeError, ValueError):
        return None
    before = saved.get("batch_size") if isinstance(saved, dict) else None
    return before if isinstance(before, int) and not isinstance(before, bool) else None


def saved_world_size(state: dict[str, Any]) -> int | None:
    """The number of processes that wrote `state`; None in checkpoints from before it was recorded."""
    world = state.get("world_size")
    return world if isinstance(world, int) and not isinstance(world, bool) and world >= 1 else None


def _processes(count: int) -> str:
    return f"{count} process" if count == 1 else f"{count} processes"


def check_same_batches(spec: str, path: Path, config: Any, state: dict[str, Any], world_size: int = 1,
                       steps_per_epoch: int = 0, shards_per_process: bool = False,
                       batch_norm: bool = False) -> None:
    """CheckpointError when this run's batches are not the ones the checkpoint's place in the data counts.

    A checkpoint's place is `step` and `batch_in_epoch`, counted in *global* batches: the per-process
    `batch_size` x the number of processes (`world_size`, recorded in the state). `ResumableSampler` gives global
    batch s the samples order[s*G:(s+1)*G] of the epoch's order however they are split over processes, the
    dataset's augmentation is a function of (seed, epoch, sample), and the loss (gathered, `gather_with_grad`) is
    the global batch's: so the same global batch on another number of processes (1 x 4 -> 2 x 2) continues the run
    exactly, and any other global batch skipped or repeated images (1 x 4 at half an epoch resumed by 2 x 4: the
    other half never seen, the epoch declared done, an epochs-based schedule bent from 8 steps to 4), and
    changes the loss itself (its negatives). That is refused in one line naming both sizes and the ways on.

    Some things stay per process even with the same global batch, and are refused on a change of processes:
    an ordered stream's place (`shards_per_process`: each process reads its own shards, so "k batches into the
    epoch" means other samples in another split; an epoch end is fine), the in-memory `unique_captions` loss
    (computed over each process's own batch), `gather_with_grad=false` (each process's gradient is open_clip's
    approximation for its number of processes) and BatchNorm layers being trained (`batch_norm`: a ResNet
    tower's statistics are each process's own batch's; measured, 1 x 4 -> 2 x 2 -> 1 x 4 moved the losses by up
    to 0.53 where a ViT's stayed within 5e-7). A checkpoint that does not record its process count (written before
    it was) is checked as before: the per-process `batch_size` only."""
    before = _saved_batch_size(state)
    if before is None:
        return
    name = path.name[: -len(".safetensors")]
    done, epoch = int(state.get("batch_in_epoch") or 0), int(state.get("epoch", 0)) + 1
    where = f"{done} batch{'' if done == 1 else 'es'} into epoch {epoch}" if done else f"the start of epoch {epoch}"
    fresh = f"or start a new run from its weights (--pretrained {path}, another --out)"
    was_world = saved_world_size(state)
    if was_world is None or was_world == world_size:
        if before == config.batch_size:
            return
        raise CheckpointError(f"--resume {spec}: {name} was trained with --batch-size {before}, this run has "
                              f"{config.batch_size}: its place in the data ({where}) and its learning-rate schedule "
                              f"count batches of {before}, so another size would skip or repeat images; resume with "
                              f"--batch-size {before} (for less memory, --set micro_batch=N computes that batch in "
                              f"chunks), {fresh}")
    global_before, global_now = before * was_world, config.batch_size * world_size
    trained = (f"--resume {spec}: {name} was trained on {_processes(was_world)} x --batch-size {before} (a global "
               f"batch of {global_before}), this run has {_processes(world_size)} x --batch-size {config.batch_size} "
               f"({global_now})")
    back = f"with {_processes(was_world)} and --batch-size {before}"  # what it was trained with
    if global_now != global_before:
        same = (f"with --batch-size {global_before // world_size} on {_processes(world_size)} (the same global "
                "batch), or " if global_before % world_size == 0 else "")
        raise CheckpointError(f"{trained}: its place in the data ({where}) and its learning-rate schedule count global "
                              f"batches of {global_before}, so another global batch would skip or repeat images; "
                              f"resume {same}{back}, {fresh}")
    if shards_per_process and 0 < done < steps_per_epoch:
        raise CheckpointError(f"{trained}: each process reads its own shards of the stream, so its place in it "
                              f"({where}) is no place in another split; resume {back}, or from the checkpoint of an "
                              f"epoch end, {fresh}")
    if getattr(config, "unique_captions", False):
        raise CheckpointError(f"{trained}: the unique_captions loss is computed over each process's own batch of "
                              f"{before}, so another split changes it; resume {back}, {fresh}")
    if not getattr(config, "gather_with_grad", True):
        raise CheckpointError(f"{trained}: with gather_with_grad=false each process's gradient is the "
                              f"approximation for {_processes(was_world)}, so another split trains otherwise; resume "
                              f"{back}, or with --set gather_with_grad=true (exact on any split), {fresh}")
    if batch_norm:
        raise CheckpointError(f"{trained}: its BatchNorm layers (a ResNet tower) are trained on each process's own "
                              f"batch of {before}, so another split trains otherwise; resume {back}, {fresh}")


def refuse_finished_run(spec: str, path: Path, step: int, config: Any, total_steps: int, budget_spent: bool) -> None:
    """CheckpointError when the resumed checkpoint already reached where this run would stop: `--steps` at or
    below its step, all its `--epochs` done, or its time budget spent. Such a resume trained nothing, saved the
    same checkpoint again and said "trained 2 steps" with exit status 0; the line names what was reached and
    the setting to raise to continue."""
    name = path.name[: -len(".safetensors")]
    if budget_spent:
        reached, raise_ = (f"spent its time budget (time_budget_s {config.time_budget_s:g}; step {step}, {name})",
                           "time_budget_s (--set time_budget_s=SECONDS)")
    elif step < total_steps:
        return
    elif config.steps is not None:
        reached, raise_ = f"reached step {step} ({name}) and --steps {config.steps} asks for no more", "--steps"
    else:
        reached, raise_ = f"finished its {config.epochs} epoch(s) (step {step}, {name})", "--epochs"
    raise CheckpointError(f"--resume {spec}: the run already {reached}, so there is nothing to train: give a larger "
                          f"{raise_} to continue it")


_FREEZING = ("lock_image", "lock_text", "projections_only")


def freeze_difference(config: Any, saved_config: Any) -> str:
    """What froze differently, e.g. "lock_image: false then, true now" (or the fields to check)."""
    try:
        saved = json.loads(saved_config) if isinstance(saved_config, str) else {}
    except ValueError:
        saved = {}
    changed = [f"{key}: {json.dumps(saved.get(key))} then, {json.dumps(getattr(config, key))} now"
               for key in _FREEZING if isinstance(saved, dict) and key in saved and saved[key] != getattr(config, key)]
    return "; ".join(changed) or "check " + ", ".join(_FREEZING)
