"""`train --resume PATH` is checked before the model is built or the data is read (audit 64, finding 11).

A `--resume` that names no checkpoint (a `.pt` file, a path that is not there, `latest` in a folder with no
run, weights without their training state) was refused only after the dataset was decoded: about 11 s on
CIFAR-10, minutes on real data. Its form and existence need neither the model nor the data, so they are
checked first (`Trainer.__init__`); what needs the checkpoint read (architecture, batches, steps) stays where
the model is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.train import trainer
from clipforge.train.config import TrainConfig
from clipforge.train.trainer import Trainer


@pytest.fixture(scope="module")
def finished_run(caption_folders, tmp_path_factory) -> Path:
    """A 1-step run of test-vit-tiny on the caption folders: checkpoint model-step-1 (weights + state)."""
    out = tmp_path_factory.mktemp("run") / "run"
    Trainer(TrainConfig(model="test-vit-tiny", data="folder", root=str(caption_folders), batch_size=4, steps=1,
                        lr=1e-3, precision="fp32", log_every=1, out_dir=str(out), device="cpu", tensorboard=False)
            ).fit()
    assert (out / "checkpoints" / "model-step-1.state.pt").is_file()
    return out


@pytest.fixture
def no_model_no_data(monkeypatch) -> list[str]:
    """Building the model or reading the data is recorded and stops the run: neither may come first."""
    reached: list[str] = []

    def stop(what: str):
        def called(*args, **kwargs):
            reached.append(what)
            raise AssertionError(f"{what} before --resume was checked")
        return called

    monkeypatch.setattr(trainer, "build_model", stop("model built"))
    monkeypatch.setattr(trainer, "build_train_dataset", stop("data read"))
    return reached


def _train(out: Path, root: Path, resume: str, capsys) -> tuple[int, str]:
    code = main(["train", "--model", "test-vit-tiny", "--root", str(root), "--set", "data=folder", "--set",
                 "tensorboard=false", "--batch-size", "4", "--steps", "3", "--out", str(out), "--resume", resume])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()[-1] if err.strip() else ""


def test_a_resume_that_names_no_checkpoint_file_is_refused_first(caption_folders, tmp_path, no_model_no_data,
                                                                 capsys) -> None:
    other = tmp_path / "some.pt"
    other.write_bytes(b"x")
    out = tmp_path / "run"
    code, line = _train(out, caption_folders, str(other), capsys)
    assert (code, line) == (2, f"error: --resume {other}: expected 'latest', 'best', a checkpoint name or a run's "
                               "checkpoint file (NAME.safetensors beside NAME.state.pt), not a .pt file")
    missing = tmp_path / "gone.safetensors"
    assert _train(out, caption_folders, str(missing), capsys) == (2, f"error: checkpoint {missing} not found")
    assert _train(out, caption_folders, "latest", capsys) == (
        2, f"error: no latest checkpoint in {out / 'checkpoints'} (no latest.json)")
    assert no_model_no_data == [] and not out.exists()  # nothing built, read or written


def test_weights_without_their_training_state_are_refused_first(finished_run, caption_folders, tmp_path,
                                                                no_model_no_data, capsys) -> None:
    weights = tmp_path / "model-step-1.safetensors"
    shutil.copyfile(finished_run / "checkpoints" / "model-step-1.safetensors", weights)
    code, line = _train(tmp_path / "run", caption_folders, str(weights), capsys)
    assert (code, line) == (2, f"error: {tmp_path / 'model-step-1.state.pt'} is missing: {weights} has weights but "
                               "no training state, so it can initialise a run (--pretrained) but not resume one")
    assert no_model_no_data == []


def test_a_sound_resume_still_trains_on(finished_run, caption_folders, tmp_path, capsys) -> None:
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    code = main(["train", "--model", "test-vit-tiny", "--root", str(caption_folders), "--set", "data=folder",
                 "--set", "tensorboard=false", "--set", "precision=fp32", "--batch-size", "4", "--steps", "2",
                 "--out", str(run), "--resume", "model-step-1"])
    assert code == 0
    assert capsys.readouterr().out.startswith("trained step 2 (resumed at step 1); checkpoint ")
