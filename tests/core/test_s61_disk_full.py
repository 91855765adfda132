"""A full disk while a command saves its result: one line naming the file, what happened and what to do, exit
status 2, nothing half-written (audit61 #3).

`train` and `wise-ft` ended in a 15-frame traceback (rc 1) from safetensors' Rust writer ("SafetensorError: ... I/O
error: File too large (os error 27)", no OSError), a training state cut by the limit in torch's words
("unexpected pos 45234816 vs 45234708"), and `export onnx` said "error: [Errno 27] File too large" without the file.
The disk is "full" through RLIMIT_FSIZE (what `ulimit -f` sets) in the child process only: every write past the limit
fails with EFBIG, as ENOSPC would, without filling a real disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from clipforge import atomic

EFBIG_WHY = "the file reached this process's file-size limit (`ulimit -f`)"


def _clipforge(cwd: Path, *args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    def limited() -> None:  # in the child only (Python ignores SIGXFSZ, so the write fails instead of killing it)
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run([sys.executable, "-m", "clipforge", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, preexec_fn=limited, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture()
def cub(shared_data: Path) -> Path:
    folder = shared_data / "cub200_2011_mini"
    if not folder.is_dir():
        pytest.skip(f"real data {folder} is absent (tests using ../shared/data skip without it)")
    return folder


def _train(cwd: Path, cub: Path, out: str, limit_bytes: int) -> subprocess.CompletedProcess[str]:
    return _clipforge(cwd, "train", "--recipe", "finetune-cub", "--model", "clipforge-tiny", "--root", str(cub),
                      "--split", "test", "--steps", "1", "--batch-size", "4", "--workers", "0",
                      "--set", "val_dataset=null", "--out", out, limit_bytes=limit_bytes)


def _resume_advice(path: str) -> str:
    return (f"error: could not write {path}: {EFBIG_WHY}; the checkpoints saved before are kept and nothing "
            "half-written was left: raise the limit and continue the run with --resume latest")


def test_train_that_cannot_save_its_training_state_names_it_and_keeps_no_lone_weights(tmp_path, cub):
    """A 50 MB limit stops the 70 MB training state (weights, Adam's moments, RNG), written first (the pair moves
    into place only when both are whole; the 35 MB weights alone would pass, so a weights-only limit no longer
    exists to test): torch.save said "[enforce fail at inline_container.cc:672] . unexpected pos ..." (a
    RuntimeError, a traceback), and the weights stayed beside no state."""
    done = _train(tmp_path, cub, "runs/s", limit_bytes=50_000_000)
    assert _one_line(done) == _resume_advice("runs/s/checkpoints/model-step-1.state.pt")
    assert _files(tmp_path / "runs/s/checkpoints") == []  # no temporary of ours, none of safetensors' (.tmpXXXXXX)


def test_a_checkpoint_saved_again_under_its_name_is_kept_whole_when_the_new_state_cannot_be_written(tmp_path,
                                                                                                    monkeypatch):
    """review 61: a resumed run saves again under a name it saved before (step and accuracy). The new weights were
    put in place before the state, and a state the disk refused left them beside the earlier run's state, while
    the line said "the checkpoints saved before are kept". Both files now move into place only when both are whole."""
    import errno

    import torch

    from clipforge.disk_full import DiskFullError
    from clipforge.models.configs import get_config
    from clipforge.models.factory import create_model_from_config
    from clipforge.train import checkpoint as checkpoint_module
    from clipforge.train.checkpoint import CheckpointManager

    torch.manual_seed(0)
    model = create_model_from_config(get_config("test-vit-tiny"))
    manager = CheckpointManager(tmp_path / "checkpoints")
    manager.save("model-step-4", model, {"steps": 4}, {"step": 4, "epoch": 0})
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()}
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # other weights, as a resumed run's

    def full(state, file):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(checkpoint_module.torch, "save", full)
    with pytest.raises(DiskFullError) as caught:
        manager.save("model-step-4", model, {"steps": 4}, {"step": 4, "epoch": 0})
    assert str(caught.value).startswith(f"could not write {tmp_path / 'checkpoints' / 'model-step-4.state.pt'}: ")
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()} == before


def test_wise_ft_on_a_full_disk_names_its_output_and_leaves_nothing(tmp_path):
    done = _clipforge(tmp_path, "wise-ft", "--zeroshot", "clipforge-tiny", "--finetuned", "clipforge-tiny",
                      "--alpha", "0.5", "--out", "out/wk.safetensors", limit_bytes=10_000_000)
    assert _one_line(done) == (f"error: could not write out/wk.safetensors: {EFBIG_WHY}; nothing half-written was "
                               "left: raise the limit and run the command again")
    assert _files(tmp_path / "out") == []


def test_export_onnx_on_a_full_disk_names_the_file_and_what_to_do(tmp_path):
    pytest.importorskip("onnx")
    done = _clipforge(tmp_path, "export", "onnx", "--model", "clipforge-tiny", "--out", "ox", "--no-verify",
                      limit_bytes=5_000_000)
    assert _one_line(done) == (f"error: could not write ox/image_encoder.onnx: {EFBIG_WHY}; nothing was written to "
                               "ox: raise the limit and run the command again")
    assert not (tmp_path / "ox").exists()  # the folder it made is taken back


_IN_CHILD = r'''
import json, resource, sys, torch
from clipforge import atomic
from clipforge.weights import save_safetensors
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
big = {"w": torch.zeros(100_000)}
seen = []
for name, write in (("state.pt", lambda p: atomic.write_file_atomic(p, lambda f: torch.save(big, f))),
                    ("w.safetensors", lambda p: save_safetensors(big, p)),
                    ("a.npy", lambda p: atomic.write_bytes_atomic(p, b"x" * 200_000))):
    try:
        write(sys.argv[1] + "/" + name)
    except OSError as exc:
        seen.append([type(exc).__name__, exc.errno, exc.filename, str(exc)])
print(json.dumps(seen))
'''


def test_atomic_writes_refused_for_room_are_one_error_naming_the_target(tmp_path):
    """torch.save (through `write_file_atomic`), safetensors (through `atomic_path`) and plain Python writes all
    raise the one `DiskFullError` naming the target, never the temporary, and leave no file."""
    import json

    done = subprocess.run([sys.executable, "-c", _IN_CHILD, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == [["DiskFullError", errno.EFBIG, f"{tmp_path}/{name}",
                     f"could not write {tmp_path}/{name}: {EFBIG_WHY}; nothing half-written was left: raise the "
                     "limit and run the command again"] for name in ("state.pt", "w.safetensors", "a.npy")]
    assert _files(tmp_path) == []


def test_the_refusal_says_what_each_errno_means():
    full = atomic.disk_full_error("a/b.json", errno.ENOSPC)
    assert str(full) == ("could not write a/b.json: the disk is full; nothing half-written was left: free some "
                         "space and run the command again")
    assert isinstance(full, OSError) and full.errno == errno.ENOSPC and full.filename == "a/b.json"
    quota = atomic.disk_full_error("q", errno.EDQUOT).advising("kept", "go on")
    assert str(quota) == "could not write q: the disk quota is used up; kept: free some space (or raise the quota) and go on"
    with pytest.raises(atomic.DiskFullError) as caught, atomic.naming_full_disk("x.onnx"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.filename == "x.onnx" and caught.value.__cause__.errno == errno.ENOSPC
    with pytest.raises(PermissionError), atomic.naming_full_disk("x.onnx"):
        raise PermissionError(errno.EACCES, "Permission denied")  # not for want of room: as it was


def test_a_save_under_an_earlier_name_removes_the_earlier_state_before_new_weights_appear(tmp_path, monkeypatch):
    """review 61 (revlate): a kill between the state's and the weights' renames left the new run's state beside
    the earlier run's weights, and `--resume latest` went on with the pair. The earlier state is removed before
    the new weights move in: whatever is killed, no weights stand beside a state from another save."""
    import torch

    from clipforge.models.configs import get_config
    from clipforge.models.factory import create_model_from_config
    from clipforge.train import checkpoint as checkpoint_module
    from clipforge.train.checkpoint import CheckpointManager

    torch.manual_seed(0)
    model = create_model_from_config(get_config("test-vit-tiny"))
    manager = CheckpointManager(tmp_path / "checkpoints")
    manager.save("model-step-4", model, {"steps": 4}, {"step": 4, "epoch": 0})
    state_path = tmp_path / "checkpoints" / "model-step-4.state.pt"
    seen: list[bool] = []
    real = checkpoint_module.atomic_path

    @contextlib.contextmanager
    def watched(target):
        with real(target) as tmp:
            yield tmp
            if str(target).endswith(".safetensors"):  # just before the new weights move in
                seen.append(state_path.exists())

    monkeypatch.setattr(checkpoint_module, "atomic_path", watched)
    manager.save("model-step-4", model, {"steps": 4}, {"step": 4, "epoch": 1})
    assert seen == [False] and state_path.exists()
    assert torch.load(state_path, weights_only=False)["epoch"] == 1
