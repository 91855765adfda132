"""Checkpoints that resume exactly: weights, optimiser, scheduler, scaler, RNG and data position.

Layout under `<out>/checkpoints/`:
    model-{epoch}_acc-{acc}.safetensors   weights at the end of an epoch (the source's naming;
                                          `acc` is the zero-shot top-1 of the eval hook)
    model-step-{step}.safetensors         weights every N steps (`save_every_steps`), and at the end
                                          of a run that stops between epoch ends: then evaluated
                                          (`model-step-{step}_acc-{acc}`) unless it only paused
                                          (`stop_after_steps`)
    <name>.state.pt                       everything else needed to continue (tensors and plain
                                          Python values only: read back with weights_only=True)
    latest.json / best.json               which checkpoint is newest / has the best metric
The weights file is a normal clipforge safetensors file (config in its metadata), so
`clipforge.load(path)` reads any checkpoint directly. Files are written to a temporary name
and renamed, and `latest.json` moves last, so a crash never leaves a half checkpoint behind
the pointer.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipforge.atomic import write_atomic, write_json_atomic

STATE_SUFFIX = ".state.pt"


def checkpoint_name(epoch: int | None, step: int, accuracy: float | None) -> str:
    if epoch is None:
        return f"model-step-{step}" if accuracy is None else f"model-step-{step}_acc-{accuracy:.4f}"
    if accuracy is None:
        return f"model-{epoch}"
    return f"model-{epoch}_acc-{accuracy:.4f}"


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Writes checkpoints, keeps the last `keep_last` plus the best by `metric`, finds `latest`."""

    def __init__(self, directory: str | Path, keep_last: int = 2, metric: str = "zeroshot_top1") -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.metric = metric

    def save(self, name: str, model: torch.nn.Module, config: dict[str, Any], train_state: dict[str, Any],
             metrics: dict[str, float] | None = None, epoch: float | None = None) -> Path:
        """`epoch` is what the records (index/latest/best.json) say: epochs of data consumed, as the logs
        count them (`model-2_acc-...` is epoch 2). The train state's own `epoch` is the 0-based epoch
        in progress, which is what resuming needs; it was shown in the records, one less than the name."""
        from clipforge.weights import save_safetensors
        from clipforge.weights.save import model_config

        self.directory.mkdir(parents=True, exist_ok=True)
        weights = self.directory / f"{name}.safetensors"
        save_safetensors(model, weights, config=model_config(model))
        state = {**train_state, "train_config": json.dumps(config), "name": name}
        write_atomic(self.directory / f"{name}{STATE_SUFFIX}", lambda tmp: torch.save(state, tmp))
        record = {"name": name, "step": train_state.get("step"),
                  "epoch": train_state.get("epoch") if epoch is None else epoch,
                  "metrics": metrics or {}}
        index = self._index()
        index = [r for r in index if r["name"] != name] + [record]
        write_json_atomic(self.directory / "index.json", index)
        write_json_atomic(self.directory / "latest.json", record)
        value = (metrics or {}).get(self.metric)
        best = self._read("best.json")
        if value is not None and (best is None or value > best["metrics"].get(self.metric, float("-inf"))):
            write_json_atomic(self.directory / "best.json", record)
        self._prune()
        return weights

    def _read(self, file: str) -> dict[str, Any] | None:
        path = self.directory / file
        return json.loads(path.read_text()) if path.is_file() else None

    def _index(self) -> list[dict[str, Any]]:
        path = self.directory / "index.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        index = sorted(self._index(), key=lambda r: r["step"] or 0)
        best = self._read("best.json")
        protected = {r["name"] for r in index[-self.keep_last:]} | ({best["name"]} if best else set())
        kept = []
        for record in index:
            if record["name"] in protected:
                kept.append(record)
                continue
            for suffix in (".safetensors", STATE_SUFFIX):
                (self.directory / f"{record['name']}{suffix}").unlink(missing_ok=True)
        write_json_atomic(self.directory / "index.json", kept)

    def resolve(self, spec: str) -> Path:
        """`latest`, `best`, a checkpoint name, or a path to a `.safetensors`/`.state.pt` file."""
        if spec in ("latest", "best"):
            record = self._read(f"{spec}.json")
            if record is None:
                raise FileNotFoundError(f"no {spec} checkpoint in {self.directory} (no {spec}.json)")
            return self.directory / f"{record['name']}.safetensors"
        path = Path(spec)
        if path.name.endswith(STATE_SUFFIX):
            path = path.with_name(path.name[: -len(STATE_SUFFIX)] + ".safetensors")
        if not path.suffix:
            path = self.directory / f"{spec}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} not found")
        return path


def load_train_state(weights_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, train state) of a checkpoint written by `CheckpointManager.save`."""
    from clipforge.weights import load_state_dict

    state_path = weights_path.with_name(weights_path.name[: -len(".safetensors")] + STATE_SUFFIX)
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path} is missing: {weights_path} has weights but no training state, "
                                "so it can initialise a run (--pretrained) but not resume one")
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    return load_state_dict(weights_path), state
