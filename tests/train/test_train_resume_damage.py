"""`clipforge train --resume` on a run folder that something went wrong with: a training state cut short (a
full disk, a copy cut off), records (latest/best/index.json) that are damaged or name a checkpoint that is
gone, a log line torn by a kill, a `--resume` that names no checkpoint, and a resume whose model or frozen
parameters changed. Each is one line naming the file and exit status 2 (they were tracebacks, json's words
without a file name, or a wrong explanation), and a torn log line no longer stops the run from resuming."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from clipforge.cli.main import main
from clipforge.train.config import TrainConfig
from clipforge.train.trainer import Trainer


@pytest.fixture(scope="module")
def finished_run(caption_folders, tmp_path_factory) -> Path:
    """A 2-step run of test-vit-tiny on the caption folders: checkpoint model-step-2 (weights + state)."""
    out = tmp_path_factory.mktemp("run") / "run"
    Trainer(TrainConfig(model="test-vit-tiny", data="folder", root=str(caption_folders), batch_size=4, steps=2,
                        lr=1e-3, precision="fp32", log_every=1, out_dir=str(out), device="cpu", tensorboard=False)
            ).fit()
    assert (out / "checkpoints" / "model-step-2.state.pt").is_file()
    return out


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    """A copy of the finished run, free to damage."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def _resume(run: Path, root: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["train", "--model", "test-vit-tiny", "--root", str(root), "--set", "data=folder", "--set",
                 "tensorboard=false", "--set", "precision=fp32", "--batch-size", "4", "--steps", "4",
                 "--out", str(run), "--resume", "latest", *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()[-1] if err.strip() else ""


def test_a_truncated_training_state_is_one_line_naming_it(run, caption_folders, capsys):
    state = run / "checkpoints" / "model-step-2.state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    code, line = _resume(run, caption_folders, capsys)
    assert code == 2
    assert line.startswith(f"error: training state {state} cannot be read (") and "damaged or truncated" in line


def test_a_state_file_that_is_not_torch_save_output_is_one_line(run, caption_folders, capsys):
    (run / "checkpoints" / "model-step-2.state.pt").write_text("x\n")  # said "forbidden global" before
    code, line = _resume(run, caption_folders, capsys)
    assert code == 2 and "cannot be read (not a zip archive torch.save wrote)" in line
    torch.save({"weights": torch.zeros(1)}, run / "checkpoints" / "model-step-2.state.pt")  # another program's
    code, line = _resume(run, caption_folders, capsys)
    assert code == 2 and "is not a clipforge training state (it has no step, epoch" in line


@pytest.mark.parametrize("text", ['{"name": "model-st', "[1, 2]"], ids=["torn", "not-a-record"])
def test_a_damaged_latest_json_names_the_file(run, caption_folders, capsys, text):
    latest = run / "checkpoints" / "latest.json"
    latest.write_text(text)
    code, line = _resume(run, caption_folders, capsys)
    assert code == 2 and line.startswith(f"error: {latest} is damaged: ") and "--resume NAME" in line


def test_a_damaged_index_json_is_refused_before_any_step_runs(run, caption_folders, capsys):
    """It failed at the first save, after training, with json's words: at every re-run, for ever."""
    (run / "checkpoints" / "index.json").write_text('[{"name": "mod')
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    code, line = _resume(run, caption_folders, capsys)
    assert code == 2 and line.startswith(f"error: {run / 'checkpoints' / 'index.json'} is damaged: it is not JSON")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # no checkpoint of steps 3-4


def test_latest_naming_a_checkpoint_that_is_gone_says_so(run, caption_folders, capsys):
    """It said the (absent) weights file 'has weights but no training state'."""
    (run / "checkpoints" / "latest.json").write_text('{"name": "model-step-9", "step": 9, "metrics": {}}')
    code, line = _resume(run, caption_folders, capsys)
    assert code == 2
    assert line == (f"error: --resume latest: {run / 'checkpoints' / 'latest.json'} names checkpoint model-step-9, "
                    "whose model-step-9.safetensors is gone; resume one by name instead (--resume model-step-2; "
                    "all: model-step-2)")


def test_resume_naming_no_checkpoint_file_says_what_it_takes(run, caption_folders, capsys, tmp_path):
    other = tmp_path / "weights.pt"
    other.write_bytes(b"x")  # it said "{tmp}/.state.pt is missing: weights.pt has weights"
    code, line = _resume(run, caption_folders, capsys, "--resume", str(other))
    assert code == 2 and "expected 'latest', 'best', a checkpoint name or a run's checkpoint file" in line
    assert ".state.pt is missing" not in line
    code, line = _resume(run, caption_folders, capsys, "--resume", str(tmp_path))
    assert code == 2 and line.startswith(f"error: --resume {tmp_path} is a folder")


def test_resuming_with_another_architecture_is_one_line(run, caption_folders, capsys):
    code, line = _resume(run, caption_folders, capsys, "--model", "test-rn-tiny")
    assert code == 2
    assert ("is a checkpoint of another architecture than --model test-rn-tiny (that run's --model: test-vit-tiny)"
            in line)


def test_resuming_with_other_frozen_parameters_names_the_setting(run, caption_folders, capsys):
    code, line = _resume(run, caption_folders, capsys, "--set", "lock_image=true")
    assert code == 2 and "(lock_image: false then, true now)" in line


def test_a_log_line_torn_by_a_kill_does_not_stop_the_resume(run, caption_folders, capsys):
    with open(run / "log.jsonl", "a") as log:
        log.write('{"kind": "train", "st')  # the process died while appending step 3's line
    with open(run / "train.csv", "a") as table:
        table.write("3,0.7")
    code, _ = _resume(run, caption_folders, capsys)
    assert code == 0
    from clipforge.train.logs import read_log

    # the resumed run logs every 10 steps and its last one
    assert [r["step"] for r in read_log(run) if r["kind"] == "train"] == [1, 2, 4]
    lines = (run / "log.jsonl").read_text().splitlines()
    assert all(line.startswith("{") and line.endswith("}") for line in lines)
    rows = (run / "train.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "4"]
