"""What `clipforge train` says about a run must be what happened, and a failed run leaves no litter.

- Resuming a run that already reached its `--steps` (or finished its epochs) trained nothing, re-saved its last
  checkpoint and said "trained 2 steps" with exit status 0: now one line naming the step it reached and the flag
  to raise, exit status 2, and no file touched.
- Resuming with another `--batch-size` counted the checkpoint's place in the data (batches of the old size) in
  batches of the new one: images skipped or seen twice, an epoch declared done half-read, and an epochs-based
  schedule bent mid-run, all without a word. The trainer's promise is an exact resume, so this is refused in one
  line naming both sizes and the ways on (`micro_batch` for memory, `--pretrained` for a new run).
- A run that fails before its first checkpoint (`--resume latest` into a new folder, training data with no
  usable image) left its new `--out` folder behind, empty or holding an empty TensorBoard event file; data with
  no usable image even looped for ever, saving checkpoints of 0 steps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.train.config import TrainConfig, TrainConfigError
from clipforge.train.trainer import Trainer


def _config(root: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="test-vit-tiny", data="folder", root=str(root), batch_size=4, steps=2, lr=1e-3,
                precision="fp32", log_every=1, out_dir=str(out), device="cpu", tensorboard=False)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def finished_runs(caption_folders, tmp_path_factory) -> dict[str, Path]:
    """Two finished 2-step runs of test-vit-tiny on the 16 caption images: "mid" (batch 4: half an epoch, ends
    at model-step-2) and "epoch" (batch 8: exactly one epoch, ends at model-1)."""
    top = tmp_path_factory.mktemp("runs")
    runs = {"mid": top / "mid", "epoch": top / "epoch"}
    Trainer(_config(caption_folders, runs["mid"])).fit()
    Trainer(_config(caption_folders, runs["epoch"], batch_size=8)).fit()
    return runs


def _copy(finished_runs: dict[str, Path], which: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished_runs[which], tmp_path / which))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _train(capsys, root: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    """(exit status, last stderr line, stdout) of `clipforge train` on the caption folders."""
    code = main(["train", "--model", "test-vit-tiny", "--root", str(root), "--set", "data=folder", "--set",
                 "precision=fp32", "--set", "log_every=1", "--out", str(out), *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    return code, lines[-1] if lines else "", captured.out


# -- 1. a resume with nothing left to train ------------------------------------------------------------------


@pytest.mark.parametrize("steps", ["2", "1"])
def test_resuming_at_or_past_its_steps_says_so_and_touches_nothing(finished_runs, caption_folders, tmp_path,
                                                                   capsys, steps):
    run = _copy(finished_runs, "mid", tmp_path)
    before = _snapshot(run)
    code, line, out = _train(capsys, caption_folders, run, "--batch-size", "4", "--steps", steps,
                             "--resume", "latest", "--set", "tensorboard=false")
    assert code == 2 and "trained" not in out
    assert line == (f"error: --resume latest: the run already reached step 2 (model-step-2) and --steps {steps} "
                    "asks for no more, so there is nothing to train: give a larger --steps to continue it")
    assert _snapshot(run) == before  # the checkpoint was saved again, the records rewritten


def test_resuming_a_run_that_finished_its_epochs_names_epochs(finished_runs, caption_folders, tmp_path, capsys):
    run = _copy(finished_runs, "epoch", tmp_path)
    before = _snapshot(run)
    code, line, _ = _train(capsys, caption_folders, run, "--batch-size", "8", "--epochs", "1",
                           "--resume", "latest", "--set", "tensorboard=false")
    assert code == 2
    assert line == ("error: --resume latest: the run already finished its 1 epoch(s) (step 2, model-1), so there is "
                    "nothing to train: give a larger --epochs to continue it")
    assert _snapshot(run) == before


def test_the_library_raises_the_same_user_error(finished_runs, caption_folders, tmp_path):
    run = _copy(finished_runs, "mid", tmp_path)
    with pytest.raises(TrainConfigError, match=r"already reached step 2 \(model-step-2\) and --steps 2"):
        Trainer(_config(caption_folders, run, resume="latest")).fit()


def test_resuming_with_more_steps_still_trains_on(finished_runs, caption_folders, tmp_path, capsys):
    run = _copy(finished_runs, "mid", tmp_path)
    code, _, out = _train(capsys, caption_folders, run, "--batch-size", "4", "--steps", "3", "--resume", "latest",
                          "--set", "tensorboard=false")
    assert code == 0 and out.startswith("trained step 3 (resumed at step 2); checkpoint ")  # not "trained 3"
    code, _, out = _train(capsys, caption_folders, run, "--batch-size", "4", "--steps", "5", "--resume", "latest",
                          "--set", "tensorboard=false", "--json")
    summary = json.loads(out)
    assert code == 0 and (summary["resumed_at_step"], summary["steps"]) == (3, 5)


def test_resuming_a_run_whose_time_budget_is_spent_names_the_budget(caption_folders, tmp_path, capsys):
    run = tmp_path / "budget"
    Trainer(_config(caption_folders, run, steps=None, epochs=5, time_budget_s=1e-6)).fit()  # spent at step 1
    code, line, _ = _train(capsys, caption_folders, run, "--batch-size", "4", "--epochs", "5", "--resume", "latest",
                           "--set", "time_budget_s=1e-6", "--set", "tensorboard=false")
    assert code == 2
    assert line.startswith("error: --resume latest: the run already spent its time budget (time_budget_s 1e-06; "
                           "step 1, model-step-1")
    assert line.endswith("so there is nothing to train: give a larger time_budget_s (--set time_budget_s=SECONDS) "
                         "to continue it")


# -- 3. a resume with another batch size ----------------------------------------------------------------------


def test_resuming_with_another_batch_size_is_refused_in_one_line(finished_runs, caption_folders, tmp_path, capsys):
    run = _copy(finished_runs, "mid", tmp_path)
    before = _snapshot(run)
    code, line, _ = _train(capsys, caption_folders, run, "--batch-size", "8", "--steps", "4", "--resume", "latest",
                           "--set", "tensorboard=false")
    assert code == 2
    assert line.startswith("error: --resume latest: model-step-2 was trained with --batch-size 4, this run has 8: ")
    assert "batches of 4" in line and "--batch-size 4" in line and "micro_batch" in line and "--pretrained" in line
    assert _snapshot(run) == before


# -- 2. a run that fails before its first checkpoint ---------------------------------------------------------


@pytest.mark.parametrize("tensorboard", ["true", "false"])
def test_a_failed_resume_into_a_new_folder_leaves_no_folder(caption_folders, tmp_path, capsys, tensorboard):
    out = tmp_path / "new" / "run"  # both folders are this run's to make
    code, line, _ = _train(capsys, caption_folders, out, "--batch-size", "4", "--steps", "2", "--resume", "latest",
                           "--set", f"tensorboard={tensorboard}")
    assert code == 2 and line == f"error: no latest checkpoint in {out / 'checkpoints'} (no latest.json)"
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_folder_that_was_there_before_stays(caption_folders, tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    code, _, _ = _train(capsys, caption_folders, out, "--batch-size", "4", "--steps", "2", "--resume", "latest")
    assert code == 2 and out.is_dir() and not any(out.iterdir())


@pytest.fixture
def unreadable_captions(caption_folders, tmp_path) -> Path:
    """The caption folders with every image replaced by text: no batch can be made."""
    root = Path(shutil.copytree(caption_folders, tmp_path / "unreadable"))
    for image in root.rglob("*.png"):
        image.write_text("not an image\n")
    return root


def test_training_data_with_no_usable_image_stops_in_one_line(unreadable_captions, tmp_path, capsys, monkeypatch):
    saved_steps: list[int] = []
    real_save = Trainer.save

    def save(self: Trainer, *args, **kwargs):
        saved_steps.append(self.step)
        if len(saved_steps) > 3:  # the old loop: an endless series of checkpoints of 0 steps
            raise KeyboardInterrupt
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "save", save)
    out = tmp_path / "run"
    code, line, _ = _train(capsys, unreadable_captions, out, "--batch-size", "4", "--steps", "2")
    assert saved_steps == []
    assert code == 2
    assert line.startswith("error: epoch 1 of the training data gave no batch to train on: training data: 16 images "
                           f"skipped: {unreadable_captions}")
    assert line.endswith("; replace or remove those files") and "log.jsonl" not in line  # there is no log
    assert not out.exists()  # nothing was trained: no folder, no empty log


def test_new_folders_remove_only_what_they_made_and_what_is_empty(tmp_path):
    from clipforge.atomic import NewFolders

    (tmp_path / "there").mkdir()
    noted = NewFolders([tmp_path / "there" / "a" / "b" / "c", tmp_path / "there" / "a" / "d"])
    assert noted.folders[-1] == tmp_path / "there" / "a"  # `there` existed: never a candidate
    (tmp_path / "there" / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "there" / "a" / "d").mkdir()
    (tmp_path / "there" / "a" / "b" / "log.jsonl").write_text("{}\n")  # the failed run did write something
    assert noted.remove_unused() == [tmp_path / "there" / "a" / "b" / "c", tmp_path / "there" / "a" / "d"]
    assert (tmp_path / "there" / "a" / "b" / "log.jsonl").is_file() and (tmp_path / "there").is_dir()
