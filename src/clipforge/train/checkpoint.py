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

import errno
import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipforge.atomic import atomic_path, remove_stale_temps, write_file_atomic, write_json_atomic
from clipforge.disk_full import DiskFullError, disk_full_error
from clipforge.train.config import TrainConfigError
from clipforge.train.state_fields import wrong_state_field

STATE_SUFFIX = ".state.pt"
_STATE_KEYS = ("step", "epoch", "batch_in_epoch", "optimizer", "scheduler", "rng")


class CheckpointError(TrainConfigError):
    """A checkpoint, its training state or a record beside it (latest/best/index.json) that cannot be used:
    one line naming the file and what to do, where torch's and json's tracebacks came out."""


_SAFETENSORS_TEMP = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")  # the temporary safetensors writes (Rust tempfile)


def remove_killed_saves(directory: Path) -> list[Path]:
    """Delete what a killed save left in a run's `checkpoints/` (rank 0, before the run writes): our
    writer's temporaries (`clipforge.atomic.remove_stale_temps`), and safetensors' own `.tmpXXXXXX`, into
    which `save_file` writes before renaming. The latter outlived every `kill -9` during a weights write
    (28.7 MB for test-vit-tiny: a model's size each); only our names were removed. Only rank 0 writes here."""
    found = directory.iterdir() if directory.is_dir() else ()
    theirs = [e for e in found if _SAFETENSORS_TEMP.match(e.name) and e.is_file()]
    for entry in theirs:
        entry.unlink(missing_ok=True)
    return remove_stale_temps(directory) + theirs


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
        weights, state_path = self.directory / f"{name}.safetensors", self.directory / f"{name}{STATE_SUFFIX}"
        stage = state_path
        # Both files are written beside their names first, and the pair is moved into place only when both are
        # whole: the state written, then the weights, then any earlier state of this name removed, the weights
        # moved in, the state moved in. A resumed run saves again under a name it saved before (step and
        # accuracy), and a pair no run made (new weights beside the earlier run's state, or the reverse) was left
        # by a refused state write, and by a kill between two renames; now such a kill leaves weights without a
        # state, which no resume takes for a checkpoint.
        try:  # a full disk: one line naming the file and --resume latest (a 15-frame traceback named neither)
            with atomic_path(state_path) as state_tmp:
                state = {**train_state, "train_config": json.dumps(config), "name": name}
                write_file_atomic(state_tmp, lambda file: torch.save(state, file))  # its errno, not "unexpected pos"
                stage = weights
                with atomic_path(weights) as weights_tmp:
                    save_safetensors(model, weights_tmp, config=model_config(model))
                    state_path.unlink(missing_ok=True)
                stage = state_path
            stage = self.directory / "latest.json"
            self._write_records(name, train_state, metrics, epoch)
        except DiskFullError as error:
            raise disk_full_error(stage, error.errno or errno.EIO, kept="the checkpoints saved before are kept and "
                                  "nothing half-written was left", then="continue the run with --resume latest",
                                  why=error.why, fix=error.fix) from error.__cause__
        return weights

    def _write_records(self, name: str, train_state: dict[str, Any], metrics: dict[str, float] | None,
                epoch: float | None) -> None:
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

    def _read(self, file: str) -> dict[str, Any] | None:
        path = self.directory / file
        return _record(path, _load_json(path)) if path.is_file() else None

    def _index(self) -> list[dict[str, Any]]:
        path = self.directory / "index.json"
        if not path.is_file():
            return []
        records = _load_json(path)
        if not isinstance(records, list):
            raise _damaged(path, f"expected a JSON list of checkpoint records, got {type(records).__name__}")
        return [_record(path, record) for record in records]

    def check_records(self) -> None:
        """Read latest.json, best.json and index.json before any training. A damaged one (a full disk, a hand
        edit) was found at the first save, after the steps had run, and again at every re-run: the run could
        never get past it. CheckpointError naming the file."""
        self._read("latest.json")
        self._read("best.json")
        self._index()

    def names(self, exclude: Path | None = None) -> list[str]:
        """The checkpoints here that can be resumed (weights and training state), oldest first."""
        if not self.directory.is_dir():
            return []
        skip = exclude.resolve() if exclude is not None else None
        found = [p for p in self.directory.glob("*.safetensors")
                 if not p.name.startswith(".") and state_path_of(p).is_file() and p.resolve() != skip]
        return [p.name[: -len(".safetensors")] for p in sorted(found, key=lambda p: p.stat().st_mtime)]

    def resumable(self, exclude: Path | None = None) -> str:
        """Advice naming the checkpoints a run can resume instead (of `exclude`, a damaged one)."""
        names = self.names(exclude)
        if not names:
            return f"{self.directory} holds no other checkpoint: start the run anew (another --out)"
        return f"resume one by name instead (--resume {names[-1]}; all: {', '.join(names)})"

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        index = sorted(self._index(), key=lambda r: r.get("step") or 0)
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
            path = self.directory / f"{record['name']}.safetensors"
            if not path.is_file():  # said "has weights but no training state" of a file that was not there
                raise CheckpointError(f"--resume {spec}: {self.directory / (spec + '.json')} names checkpoint "
                                      f"{record['name']}, whose {path.name} is gone; {self.resumable()}")
            return path
        path = Path(spec)
        if path.is_dir():
            raise CheckpointError(f"--resume {spec} is a folder; expected 'latest', 'best', a checkpoint name or "
                                  "a checkpoint's .safetensors file")
        if path.name.endswith(STATE_SUFFIX):
            path = path.with_name(path.name[: -len(STATE_SUFFIX)] + ".safetensors")
        if not path.suffix:
            path = self.directory / f"{spec}.safetensors"
        if path.suffix != ".safetensors":  # `x.pt` was read as weights "x.pt" with the training state ".state.pt"
            raise CheckpointError(f"--resume {spec}: expected 'latest', 'best', a checkpoint name or a run's "
                                  f"checkpoint file (NAME.safetensors beside NAME{STATE_SUFFIX}), not a "
                                  f"{path.suffix} file")
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} not found")
        return path


def state_path_of(weights_path: Path) -> Path:
    """`NAME.state.pt`, the training state beside the weights `NAME.safetensors`."""
    return weights_path.with_name(weights_path.name[: -len(".safetensors")] + STATE_SUFFIX)


def training_state_beside(weights_path: Path) -> Path:
    """The training state `NAME.state.pt` beside the weights `NAME.safetensors`, or FileNotFoundError saying that
    weights alone can start a run but not resume one."""
    state_path = state_path_of(weights_path)
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path} is missing: {weights_path} has weights but no training state, "
                                "so it can initialise a run (--pretrained) but not resume one")
    return state_path


def check_resume(directory: str | Path, spec: str) -> Path:
    """The weights `spec` (`--resume`: 'latest', 'best', a name or a path) names in the run's `directory`
    (`CheckpointManager.resolve`), with its training state beside them: what needs neither the model nor the
    data, so `Trainer` checks it before building either. A `.pt` path or a missing file was refused only after the
    dataset was decoded (11 s on CIFAR-10, minutes on real data; audit 64); what needs the checkpoint read
    (architecture, batches, steps) is checked at the resume itself."""
    weights = CheckpointManager(directory).resolve(spec)
    training_state_beside(weights)
    return weights


def load_train_state(weights_path: Path, advice: str = "resume an earlier checkpoint by name, or start the run "
                     "anew") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, train state) of a checkpoint written by `CheckpointManager.save`. A training state that
    cannot be read (cut short by a full disk or a copy, another program's file) is a CheckpointError naming
    it and ending in `advice`: torch's "PytorchStreamReader failed reading zip archive" came out as a
    traceback."""
    from clipforge.weights import load_state_dict
    from clipforge.weights.errors import CheckpointFormatError
    from clipforge.weights.torch_pickle import torch_load_safely

    state_path = training_state_beside(weights_path)
    with open(state_path, "rb") as handle:
        zipped = handle.read(4) == b"PK\x03\x04"  # torch.save's zip archive (what `save` writes)
    try:
        if not zipped:
            raise CheckpointFormatError("not a zip archive torch.save wrote")
        state = torch_load_safely(state_path)
    except CheckpointFormatError as error:
        reason = " ".join(str(error.__cause__ or error).split()).split(". ")[0]
        raise CheckpointError(f"training state {state_path} cannot be read ({reason}): it is damaged or "
                              f"truncated; {advice}") from None
    missing = [key for key in _STATE_KEYS if key not in state] if isinstance(state, dict) else list(_STATE_KEYS)
    if missing:
        raise CheckpointError(f"{state_path} is not a clipforge training state (it has no {', '.join(missing)})")
    wrong = wrong_state_field(state)
    if wrong is not None:
        raise CheckpointError(f"{state_path} is not a clipforge training state ({wrong}); {advice}")
    return load_state_dict(weights_path), state



def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # UnicodeDecodeError is one too
        raise _damaged(path, f"it is not JSON ({' '.join(str(error).split())})") from None


def _record(path: Path, record: Any) -> dict[str, Any]:
    """A checkpoint record as `CheckpointManager.save` writes it, or CheckpointError naming the file."""
    if isinstance(record, dict) and isinstance(record.get("name"), str) and record["name"] \
            and isinstance(record.get("metrics", {}), dict):
        return record
    raise _damaged(path, f"expected a checkpoint record {{\"name\": ..., \"step\": ...}}, got "
                         f"{json.dumps(record)[:60]}")


def _damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is damaged: {why}. It only points at checkpoints: remove it (the next "
                           "checkpoint writes it again) and resume a checkpoint by name (--resume NAME)")
