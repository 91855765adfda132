"""`clipforge train --resume` of a training state whose keys are all there but whose values are not what
`CheckpointManager.save` writes (another program's file, one edited by hand): one line naming the file and the
field, exit 2, before any weight is loaded. `Trainer.resume` crashed mid-way with a TypeError traceback
(`int(state["step"])` of a list) after loading the model's weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from clipforge.cli.main import main
from clipforge.train.checkpoint import load_train_state
from clipforge.train.config import TrainConfig
from clipforge.train.state_fields import wrong_state_field
from clipforge.train.trainer import Trainer
from clipforge.weights.torch_pickle import torch_load_safely


@pytest.fixture(scope="module")
def finished_run(caption_folders, tmp_path_factory) -> Path:
    """A 2-step run of test-vit-tiny with an EMA of its weights: checkpoint model-step-2 (weights + state)."""
    out = tmp_path_factory.mktemp("run") / "run"
    Trainer(TrainConfig(model="test-vit-tiny", data="folder", root=str(caption_folders), batch_size=4, steps=2,
                        lr=1e-3, precision="fp32", log_every=1, out_dir=str(out), device="cpu", tensorboard=False,
                        ema_decay=0.9)).fit()
    return out


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def test_every_field_save_writes_passes_the_check(finished_run):
    """No false refusal: the state a real run (EMA on) wrote has every optional field, each as expected."""
    state = torch_load_safely(finished_run / "checkpoints" / "model-step-2.state.pt")
    assert {"ema", "budget", "scaler", "elapsed_s", "log_window"} <= set(state)
    assert state["ema"] is not None
    assert wrong_state_field(state) is None
    weights, loaded = load_train_state(finished_run / "checkpoints" / "model-step-2.safetensors")
    assert loaded["step"] == 2 and weights


@pytest.mark.parametrize(("field", "value", "said"), [
    ("step", [2], "'step' is list, expected a whole number >= 0"),
    ("epoch", True, "'epoch' is bool, expected a whole number >= 0"),
    ("batch_in_epoch", -1, "'batch_in_epoch' is int, expected a whole number >= 0"),
    ("optimizer", [], "'optimizer' is list, expected an optimizer state"),
    ("rng", {"torch": 1}, "'rng' is dict, expected the random generators' states"),
    ("ema", {"updates": 1, "raw_model": [1]}, "'ema' is dict, expected None or a dict with 'updates'"),
    ("log_window", {"loss": "x", "n": 1}, "'log_window' is dict, expected None or a dict with 'loss' and 'n'"),
])
def test_a_wrong_value_is_one_line_naming_the_field(run, caption_folders, capsys, field, value, said):
    path = run / "checkpoints" / "model-step-2.state.pt"
    state = torch_load_safely(path)
    state[field] = value
    torch.save(state, path)
    code = main(["train", "--model", "test-vit-tiny", "--root", str(caption_folders), "--set", "data=folder", "--set",
                 "tensorboard=false", "--set", "precision=fp32", "--set", "ema_decay=0.9", "--batch-size", "4",
                 "--steps", "4", "--out", str(run), "--resume", "latest"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: {path} is not a clipforge training state ({said}")
    assert not (run / "checkpoints" / "model-step-4.safetensors").exists()  # no step ran
