"""Every process of a torchrun job runs the same run: one check before the first step, one at a resume.

Users start `torchrun --nnodes=2 ... -m clipforge train ...` by hand on each machine, so the nodes' command
lines, data folders and run folders can differ. Before this check nothing compared them: a node started with
another `--batch-size`, or whose data folder held fewer files, trained several steps on other batches (the
sampler shards one list by global rank, and each node built its own list) and then hung at the epoch end in a
collective the other node never reached; a resume on nodes with their own disks loaded whatever checkpoint each
node's `--out` held (none, or an older one: the ranks' weights then differed while DDP averaged gradients).

`check_same_run` gathers, from every rank, its config (less the paths and local speed knobs that may differ
per machine), a digest of its training data's file list (relative to `--root`, so another mount point is the
same data) and its model's parameter shapes, and refuses on every rank at once, in one line naming the first
rank that differs, the host it runs on and what differs. `agree_on_checkpoint` does the same for the
checkpoint each rank resumes from.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from clipforge.train.checkpoint import CheckpointError
from clipforge.train.config import TrainConfig, TrainConfigError

# may differ per machine: paths (another mount point), local speed knobs, where to resume from (checked apart),
# the evaluation sets' roots (only rank 0 evaluates); the model's architecture is compared by its shapes and
# DDP gives every rank rank 0's weights, so a checkpoint path may differ as well
PER_NODE_FIELDS = (
    "root",
    "out_dir",
    "val_root",
    "forget_root",
    "workers",
    "threads",
    "resume",
    "model",
    "pretrained",
    "model_config",
)


class DifferentRunError(TrainConfigError):
    """Processes of one torchrun job were started with different settings, data or checkpoints."""


def _gather(payload: Any) -> list[Any]:
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, payload)
    return gathered


def _where(rank: int, entry: dict[str, Any]) -> str:
    return f"rank {rank} (host {entry['host']})"


def data_fingerprint(dataset: Any) -> dict[str, Any]:
    """How many samples, and a digest of their files relative to the data's root (None where unknown)."""
    try:
        count: int | None = len(dataset)
    except TypeError:  # an iterable stream
        count = None
    digest = hashlib.sha256()
    sources = getattr(dataset, "sources", None)
    urls = getattr(dataset, "urls", None)
    classes = getattr(dataset, "classes", None)
    if sources is not None:
        root = str(getattr(dataset, "root", "")).rstrip("/") + "/"
        for start in range(0, len(sources), 100_000):  # in slices: millions of names hash in a second or two
            names = (str(s) for s in sources[start : start + 100_000])
            digest.update(
                "\0".join(t[len(root) :] if t.startswith(root) else Path(t).name for t in names).encode()
            )
            digest.update(b"\1")
    elif urls is not None:  # WebDataset shards: their names
        for url in urls:
            digest.update(Path(str(url)).name.encode() + b"\0")
    elif isinstance(classes, torch.Tensor):  # in-memory batches: the labels in order
        digest.update(classes.numpy().tobytes())
    else:
        return {"count": count, "digest": None}
    return {"count": count, "digest": digest.hexdigest()}


def model_fingerprint(model: torch.nn.Module) -> str:
    """Parameter names and shapes, and the preprocessing its weights need: a rank normalising its images
    otherwise trains on other inputs (DDP gives every rank rank 0's weights, not its mean/std)."""
    shapes = [f"{name}:{tuple(p.shape)}" for name, p in model.state_dict().items()]
    shapes.append(json.dumps(getattr(model, "preprocess_cfg", None) or {}, sort_keys=True, default=str))
    return hashlib.sha256("\n".join(shapes).encode()).hexdigest()


def _config_fields(config: TrainConfig) -> dict[str, Any]:
    fields = config.to_dict()
    return {
        k: json.dumps(v, sort_keys=True, default=str) for k, v in fields.items() if k not in PER_NODE_FIELDS
    }


def _flag(key: str) -> str:
    return {"batch_size": "--batch-size", "steps": "--steps", "epochs": "--epochs", "lr": "--lr"}.get(
        key, f"--set {key}"
    )


def describe_run(config: TrainConfig, dataset: Any, model: torch.nn.Module) -> dict[str, Any]:
    """What one rank compares with the others (small: a digest, not the file list)."""
    return {
        "host": socket.gethostname(),
        "config": _config_fields(config),
        "root": config.root,
        "data": data_fingerprint(dataset),
        "model": model_fingerprint(model),
    }


def compare_runs(everyone: list[dict[str, Any]]) -> None:
    """Raise DifferentRunError naming the first rank whose `describe_run` differs from rank 0's."""
    first = everyone[0]
    for rank, other in enumerate(everyone[1:], start=1):
        here, there = _where(0, first), _where(rank, other)
        keys = sorted(
            k
            for k in set(first["config"]) | set(other["config"])
            if first["config"].get(k) != other["config"].get(k)
        )
        if keys:
            diffs = ", ".join(
                f"{_flag(k)} {other['config'].get(k)} (rank 0: {first['config'].get(k)})" for k in keys
            )
            raise DifferentRunError(
                f"torchrun job: {there} was started with other settings than {here}: {diffs}; every node must "
                "run the same command (only --root, --out and the model's path may differ)"
            )
        ours, theirs = first["data"], other["data"]
        if ours != theirs:
            what = (
                f"{theirs['count']} samples against {ours['count']}"
                if ours["count"] != theirs["count"]
                else f"{theirs['count']} samples, as many as rank 0's, but other files"
            )
            raise DifferentRunError(
                f"torchrun job: the training data of {there} (--root {other['root']}) differs from {here}'s "
                f"(--root {first['root']}): {what}; every node must see the same files (each rank takes its "
                "share of one list by its global rank)"
            )
        if first["model"] != other["model"]:
            raise DifferentRunError(
                f"torchrun job: {there} built another model architecture than {here} (--model): parameter "
                "names, shapes or preprocessing (mean/std) differ"
            )


def check_same_run(config: TrainConfig, dataset: Any, model: torch.nn.Module) -> None:
    """Refuse, on every rank alike, a job whose processes differ in config, training data or model."""
    if _distributed():
        compare_runs(_gather(describe_run(config, dataset, model)))


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def agree_on_checkpoint(spec: str, found: tuple[str, int] | None, failure: str | None) -> None:
    """Every rank resumes from the same checkpoint, or none does: `found` is (name, step) of this rank's,
    `failure` why it has none. Raises the same line on every rank (a rank that failed alone left the others
    in their first collective, where they learned only that a peer had crashed)."""
    if _distributed():
        compare_checkpoints(spec, _gather({"host": socket.gethostname(), "found": found, "failure": failure}))


RESUME_ADVICE = (
    "each node reads the checkpoint from its own --out: share one --out between the nodes, or copy "
    "rank 0's checkpoints folder to every node before resuming"
)


def compare_checkpoints(spec: str, everyone: list[dict[str, Any]]) -> None:
    """CheckpointError naming the first rank that found no checkpoint, or another one than rank 0."""
    for rank, other in enumerate(everyone):
        if other["failure"] is not None:
            raise CheckpointError(
                f"--resume {spec}: {_where(rank, other)}: {other['failure']}; {RESUME_ADVICE}"
            )
    first = everyone[0]
    for rank, other in enumerate(everyone[1:], start=1):
        if tuple(other["found"]) != tuple(first["found"]):
            (name, step), (name0, step0) = other["found"], first["found"]
            raise CheckpointError(
                f"--resume {spec}: {_where(rank, other)} found {name} (step {step}), {_where(0, first)} "
                f"{name0} (step {step0}); {RESUME_ADVICE}"
            )
