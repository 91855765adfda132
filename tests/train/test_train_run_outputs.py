"""What a training run tells and writes agrees with itself: skipped images are counted and named
(training and validation data, both data paths), the last checkpoint is the evaluated one its
summary describes, every file counts epochs the same way, a resumed run's elapsed time and first
logged loss go on from the checkpoint, and a bad `--out` is one line before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clipforge.cli.main import main
from clipforge.train.config import TrainConfig
from clipforge.train.logs import read_log
from clipforge.train.trainer import Trainer

TRUNCATED, NOT_AN_IMAGE = "2.png", "3.png"


@pytest.fixture(scope="module")
def folder(caption_folders) -> Path:
    """4 caption folders x 4 40x40 PNGs (colour by caption)."""
    return caption_folders


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory, folder) -> Path:
    """The same, with a truncated PNG and a text file named .png in caption_0."""
    import shutil

    root = tmp_path_factory.mktemp("bad") / "captions"
    shutil.copytree(folder, root)
    whole = (root / "caption_0" / TRUNCATED).read_bytes()
    (root / "caption_0" / TRUNCATED).write_bytes(whole[: len(whole) // 2])
    (root / "caption_0" / NOT_AN_IMAGE).write_text("not a picture\n")
    return root


def _config(root: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="test-vit-tiny", data="folder", root=str(root), batch_size=4, steps=6, lr=1e-3,
                precision="fp32", log_every=1, out_dir=str(out), seed=3, device="cpu", tensorboard=False,
                keep_last=10)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("in_memory", [False, True], ids=["loader", "in-memory"])
def test_skipped_images_are_counted_and_named_for_training_and_validation(bad_folder, tmp_path, capsys, in_memory):
    data = dict(data="labelled", dataset="folder", templates=["a photo of {}"], in_memory=True) if in_memory \
        else dict(data="folder")
    out = tmp_path / "run"
    result = Trainer(_config(bad_folder, out, steps=None, epochs=2, val_dataset="folder", val_root=str(bad_folder),
                             val_templates=["{}"], **data)).fit()
    captured = capsys.readouterr()
    assert "skipping" not in captured.out and "skipped" not in captured.out  # stdout is the command's result
    lines = [line for line in captured.err.replace("\r", "\n").splitlines() if " skipped: " in line]
    train_lines = [line for line in lines if "training data: 2 images skipped: " in line]
    val_lines = [line for line in lines if "val data: 2 images skipped: " in line]
    assert len(train_lines) == 1 and len(val_lines) == 1, lines  # once per run, not once per epoch
    for line in (train_lines[0], val_lines[0]):
        assert TRUNCATED in line and NOT_AN_IMAGE in line
    for data_set in ("train", "val"):
        summary = result["skipped_images"][data_set]
        assert summary["skipped"] == 2
        assert sorted(Path(e["source"]).name for e in summary["examples"]) == [TRUNCATED, NOT_AN_IMAGE]
    noted = {r["data"]: r for r in read_log(out) if r["kind"] == "skipped"}
    assert set(noted) == {"train", "val"} and noted["train"]["skipped"] == noted["val"]["skipped"] == 2
    assert json.dumps(result["skipped_images"], default=str)  # the summary JSON carries it


def test_files_a_caption_csv_lists_but_the_disk_lacks_are_named(folder, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rows = ["image,caption"]
    for c in range(4):
        for i in range(2):
            name = f"c{c}_{i}.png"
            (images / name).write_bytes((folder / f"caption_{c}" / f"{i}.png").read_bytes())
            rows.append(f"{name},caption {c}")
    rows.append("gone.png,a caption whose image was deleted")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    result = Trainer(_config(tmp_path / "captions.csv", tmp_path / "run", data="csv", steps=2)).fit()
    assert result["skipped_images"]["train"]["skipped"] == 1
    assert result["skipped_images"]["train"]["examples"][0]["reason"] == "listed by the dataset but not on disk"
    assert "training data: 1 image skipped: " in capsys.readouterr().err


def test_last_checkpoint_is_evaluated_and_every_file_counts_epochs_alike(folder, tmp_path):
    """16 images / batch 4 = 4 steps an epoch; 6 steps with save_every_steps=3: step 6 is both a
    periodic save and the end, so it must be the evaluated `model-step-6_acc-...` the summary shows."""
    out = tmp_path / "run"
    result = Trainer(_config(folder, out, save_every_steps=3, val_dataset="folder", val_root=str(folder),
                             val_templates=["{}"])).fit()
    ckpts = out / "checkpoints"
    names = sorted(p.name.removesuffix(".safetensors") for p in ckpts.glob("*.safetensors"))
    assert "model-step-3" in names and any(n.startswith("model-1_acc-") for n in names)
    assert "model-step-6" not in names  # no unevaluated twin of the last weights
    latest = json.loads((ckpts / "latest.json").read_text())
    assert latest["name"].startswith("model-step-6_acc-")
    assert Path(result["checkpoint"]).name == latest["name"] + ".safetensors"
    evals = {r["step"]: r for r in read_log(out) if r["kind"] == "eval"}
    assert sorted(evals) == [4, 6]
    assert result["metrics"] == latest["metrics"] and result["metrics"]["val_top1"] == evals[6]["val_top1"]
    # one epoch count everywhere: the records say what eval.csv / log.jsonl say for the same step
    index = {r["name"]: r for r in json.loads((ckpts / "index.json").read_text())}
    for name, record in index.items():
        if record["step"] in evals:
            assert record["epoch"] == evals[record["step"]]["epoch"], name
    epoch_one = next(r for n, r in index.items() if n.startswith("model-1_acc-"))
    assert epoch_one["epoch"] == 1 and evals[4]["epoch"] == 1
    assert latest["epoch"] == result["epoch"] == 1.5 == evals[6]["epoch"]


def test_a_paused_run_summary_shows_no_earlier_epochs_metrics(folder, tmp_path):
    out = tmp_path / "paused"
    result = Trainer(_config(folder, out, stop_after_steps=5, val_dataset="folder", val_root=str(folder),
                             val_templates=["{}"])).fit()
    assert Path(result["checkpoint"]).name == "model-step-5.safetensors"
    assert result["metrics"] == {}  # not evaluated at step 5; epoch 1's numbers belong to model-1_acc-...


def test_resume_goes_on_with_elapsed_time_and_the_whole_loss_window(folder, tmp_path):
    full = tmp_path / "full"
    Trainer(_config(folder, full, steps=8, log_every=4)).fit()
    parted = tmp_path / "parted"
    Trainer(_config(folder, parted, steps=8, log_every=4, stop_after_steps=6)).fit()
    state = torch.load(parted / "checkpoints" / "model-step-6.state.pt", weights_only=True)
    assert state["elapsed_s"] > 0
    Trainer(_config(folder, parted, steps=8, log_every=4, resume="latest")).fit()
    a = [r for r in read_log(full) if r["kind"] == "train"]
    b = [r for r in read_log(parted) if r["kind"] == "train"]
    assert [r["step"] for r in a] == [r["step"] for r in b] == [4, 8]
    # step 8 averages steps 5-8 in both runs (the resumed one had only 7-8 before)
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=0, atol=1e-6)
    assert b[1]["elapsed_s"] > state["elapsed_s"] >= b[0]["elapsed_s"]  # not restarted from zero
    rows = (parted / "train.csv").read_text().splitlines()
    assert float(rows[2].split(",")[-1]) == pytest.approx(b[1]["elapsed_s"])


def test_bad_out_is_one_line_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import clipforge.train.trainer as trainer

    def no_model(*_a, **_k):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(trainer, "build_model", no_model)
    afile = tmp_path / "afile"
    afile.write_text("x")
    outs = [(afile, "is a file"), (afile / "sub", "is a file")]
    if Path("/proc/self").is_dir():
        outs.append((Path("/proc/nope"), "cannot write files in /proc"))
    for out, expected in outs:
        code = main(["train", "--recipe", "finetune-cub", "--model", "test-vit-tiny", "--root", str(tmp_path),
                     "--steps", "1", "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"error: --out {out}: ") and expected in err, err
    assert afile.read_text() == "x" and not (afile.parent / "sub").exists()
