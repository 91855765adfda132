"""After a crash: a resumed run removes the temporaries a killed save left behind and cuts the
logs back to the step it resumes from, so no step appears twice (issue 9, item 15); an EMA
run resumes to exactly the weights of an uninterrupted one."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipforge.train.config import TrainConfig
from clipforge.train.logs import read_log
from clipforge.train.trainer import Trainer


@pytest.fixture(scope="module")
def folder(caption_folders) -> Path:
    return caption_folders


def _config(root: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="test-vit-tiny", data="folder", root=str(root), batch_size=4, steps=6, lr=1e-3,
                precision="fp32", log_every=1, out_dir=str(out), seed=1, device="cpu", tensorboard=False,
                save_every_steps=2, keep_last=5)
    return TrainConfig(**{**base, **kw})


def _csv_steps(path: Path) -> list[int]:
    with open(path, newline="") as f:
        return [int(float(row["step"])) for row in csv.DictReader(f)]


def test_resume_removes_stale_temporaries_and_truncates_the_logs(folder, tmp_path):
    out = tmp_path / "run"
    Trainer(_config(folder, out, stop_after_steps=5)).fit()  # checkpoints at 2, 4 (epoch end), 5
    assert _csv_steps(out / "train.csv") == [1, 2, 3, 4, 5]
    checkpoints = out / "checkpoints"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)  # a writer that no longer runs
    stale = [checkpoints / f".model-step-6.safetensors.{pid}-0a1b2c3d.tmp.safetensors",
             checkpoints / f".model-step-6.state.pt.{pid}-4e5f6a7b.tmp.pt"]
    live = checkpoints / f".other-run.safetensors.{os.getpid()}-01234567.tmp.safetensors"  # a writer still running
    for path in [*stale, live]:  # what kill -9 during a save leaves (names as clipforge.atomic makes them)
        path.write_bytes(b"\0" * 1024)
    # as if the process died after logging step 5 but before its checkpoint: resume from step 4
    Trainer(_config(folder, out, resume=str(checkpoints / "model-1.safetensors"))).fit()
    assert not any(p.exists() for p in stale)
    assert [p.name for p in checkpoints.iterdir() if p.name.startswith(".")] == [live.name]
    assert _csv_steps(out / "train.csv") == [1, 2, 3, 4, 5, 6]
    steps = [r["step"] for r in read_log(out) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [int(float(s)) for s in _csv_steps(out / "eval.csv")] == sorted(set(_csv_steps(out / "eval.csv")))


def test_ema_run_resumes_to_the_same_weights(folder, tmp_path):
    import torch

    from clipforge.weights import load_state_dict

    full, parted = tmp_path / "full", tmp_path / "parted"
    kw = dict(ema_decay=0.5, steps=4, save_every_steps=0)
    Trainer(_config(folder, full, **kw)).fit()
    Trainer(_config(folder, parted, stop_after_steps=2, **kw)).fit()
    Trainer(_config(folder, parted, resume="latest", **kw)).fit()
    a = load_state_dict(full / "checkpoints" / "model-1.safetensors")
    b = load_state_dict(parted / "checkpoints" / "model-1.safetensors")
    for key in a:
        np.testing.assert_allclose(b[key].numpy(), a[key].numpy(), rtol=0, atol=1e-6, err_msg=key)
    state = torch.load(full / "checkpoints" / "model-1.state.pt", weights_only=True)
    raw = state["ema"]["raw_model"]  # the weights file holds the average, the state the raw weights
    assert state["ema"]["updates"] == 4
    assert max(float((a[k] - raw[k]).abs().max()) for k in a if a[k].is_floating_point()) > 1e-4
