"""What a student reproducing the paper on a laptop tripped on in `clipforge train` (docs/training.md's path).

Each was measured with the CLI on the Flickr8k captions and tested here on the session's small fixtures:
- a Chinese-CLIP (`random:cn-RN50`, or any cn_clip checkpoint) on a Chinese caption CSV: BPE ids fed to its
  21,128-word BERT, an `IndexError` traceback at the first step (exit 1). Its own WordPiece is used now;
- SigLIP's sigmoid loss from scratch (`random:test-siglip-tiny`): its `spiece.model` does not exist for random
  weights, and the run failed inside the first batch; now one line before anything is built, with the ways on;
- `--root captions.txt` without `--set data=csv`: "data=labelled needs dataset=<registry name>", which did not
  name the flag that reads a caption CSV;
- `--batch-size 64` on 8 images: "8 samples over 1 rank(s) do not fill one batch of 64; lower batch_size";
- captions longer than the model's context were cut in silence (clipforge-tiny, 16 tokens: 1,265 of the 5,000
  Flickr8k captions; a Chinese caption keeps about four characters); now one warning with the count;
- a run of one step said "trained 1 steps";
- a SigLIP run's train.csv showed the logit scale but not the bias the sigmoid loss learns beside it;
- `kill -9` during a checkpoint write: safetensors' own temporary (`.tmpXXXXXX`, a model's size) survived
  every resume; the trainer removed only its own temporaries.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from torch import nn

from clipforge.train.build import family_tokenizer
from clipforge.train.config import TrainConfig, TrainConfigError
from clipforge.train.trainer import Trainer


def _config(root: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(
        **{
            "model": "test-vit-tiny",
            "data": "folder",
            "root": str(root),
            "out_dir": str(out),
            "batch_size": 4,
            "steps": 1,
            "precision": "fp32",
            "tensorboard": False,
            "device": "cpu",
            **kw,
        }
    )


def test_a_model_that_carries_its_tokenizer_trains_with_it_not_with_clips_bpe() -> None:
    from clipforge.text.wordpiece import get_wordpiece_tokenizer

    model = nn.Linear(1, 1)
    model.tokenizer = get_wordpiece_tokenizer()  # what every Chinese-CLIP carries (no tokenizer_cfg)
    model.context_length = 52
    captions = ["一只黑狗在草地上奔跑", "一个孩子在楼梯上"]
    ids = family_tokenizer(model)(captions)
    assert ids.tolist() == model.tokenizer(captions, context_length=52, truncate=True).tolist()
    assert int(ids.max()) < 21128  # the BERT vocabulary; CLIP's BPE gave ids up to 49,407


def test_siglip_from_random_weights_without_a_tokenizer_file_is_one_line_before_anything_is_written(
    caption_folders, tmp_path
) -> None:
    out = tmp_path / "run"
    with pytest.raises(TrainConfigError) as raised:
        Trainer(_config(caption_folders, out, model="random:test-siglip-tiny", loss="siglip"))
    message = str(raised.value)  # the middle is clipforge.text's own line about the missing file
    assert message == (
        "--model random:test-siglip-tiny: its captions cannot be tokenized: this model's sentencepiece tokenizer "
        "file 'spiece.model' is needed and this model has no checkpoint folder to hold it; load the model from a "
        "checkpoint with the file beside it; or, from random weights, train with CLIP's tokenizer through an inline "
        'model_config ("scoring": "sigmoid" gives loss=siglip its logit_bias)'
    )  # it said "was not found in nowhere (no checkpoint folder)"
    assert "\n" not in message
    assert not out.exists()


def test_a_caption_csv_given_without_data_csv_names_the_setting(caption_folders, tmp_path) -> None:
    csv = tmp_path / "captions.csv"
    csv.write_text("image,caption\ncaption_0/0.png,a photo\n")
    with pytest.raises(TrainConfigError) as raised:
        Trainer(_config(csv, tmp_path / "run", data="labelled"))
    assert str(raised.value) == (
        "data=labelled needs dataset=<registry name> (e.g. cub, cars, cifar10); "
        f"--root {csv} is a file: for a caption CSV (image,caption rows) add --set data=csv"
    )


def test_a_batch_larger_than_the_data_names_the_data_its_size_and_the_batch_that_fits(
    caption_folders, tmp_path
) -> None:
    root = Path(shutil.copytree(caption_folders, tmp_path / "data"))
    csv = root / "captions.csv"
    csv.write_text(
        "image,caption\n"
        + "".join(f"caption_{c}/{i}.png,a photo\n" for c in range(2) for i in range(4))
        + "caption_9/0.png,not on disk\n"
    )
    out = tmp_path / "run"
    with pytest.raises(TrainConfigError) as raised:
        Trainer(_config(csv, out, data="csv", batch_size=64))
    assert str(raised.value) == (
        f"the training data ({csv}) has 8 samples (1 more listed but unusable): too few for one batch of "
        "--batch-size 64 (the last partial batch is dropped); use --batch-size 8 or less"
    )
    assert not out.exists()


def test_what_a_killed_checkpoint_write_left_is_removed_by_the_next_run(caption_folders, tmp_path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    leftover = checkpoints / ".tmpuFPlNb"  # safetensors' save_file writes here, then renames
    leftover.write_bytes(b"\0" * 64)
    mine = checkpoints / "notes.txt"
    mine.write_text("kept")
    Trainer(_config(caption_folders, tmp_path / "run")).fit()
    assert not leftover.exists()
    assert mine.read_text() == "kept"
    assert (checkpoints / "model-step-1.safetensors").is_file()


def test_siglip_from_scratch_with_clips_tokenizer_logs_the_learned_bias(caption_folders, tmp_path) -> None:
    """The way on from the refusal above: an inline model_config with sigmoid scoring trains loss=siglip from
    random weights with CLIP's BPE; train.csv shows the bias it learns (it showed only the scale)."""
    from clipforge.models import get_config
    from clipforge.train.logs import read_log

    out = tmp_path / "run"
    architecture = {**get_config("test-vit-tiny"), "scoring": "sigmoid"}
    Trainer(
        _config(caption_folders, out, model_config=architecture, loss="siglip", steps=2, lr=1e-2, log_every=1)
    ).fit()
    header = (out / "train.csv").read_text().splitlines()[0]
    assert header == "step,epoch,loss,lr,logit_scale,samples_per_s,elapsed_s,logit_bias"
    biases = [r["logit_bias"] for r in read_log(out) if r["kind"] == "train"]
    assert (
        len(biases) == 2 and biases[0] != -10.0 and biases[1] != biases[0]
    )  # initialised at -10, then learned


def test_captions_longer_than_the_context_are_said_once_and_one_step_is_one_step(
    caption_folders, tmp_path, capsys
) -> None:
    """clipforge-tiny reads 16 tokens: a quarter of the Flickr8k captions were cut with nothing said; and a run
    of one step ended "trained 1 steps"."""
    from clipforge.cli.main import main

    root = Path(shutil.copytree(caption_folders, tmp_path / "data"))
    long = "a dog " + "and another dog " * 30 + "on the grass"  # 100 tokens: test-vit-tiny reads 77
    rows = [
        f"caption_{c}/{i}.png,{long if (c, i) == (1, 2) else 'a photo'}\n" for c in range(2) for i in range(4)
    ]
    (root / "captions.csv").write_text("image,caption\n" + "".join(rows))
    out = tmp_path / "run"
    args = ["train", "--model", "test-vit-tiny", "--set", "data=csv", "--root", str(root / "captions.csv")]
    args += ["--out", str(out), "--batch-size", "4", "--steps", "1", "--set", "tensorboard=false"]
    assert main([*args, "--set", "precision=fp32", "--set", "device=cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"trained 1 step; checkpoint {out / 'checkpoints' / 'model-step-1.safetensors'}\n"
    assert (
        f"training data ({root / 'captions.csv'}): 1 of 2 distinct captions are longer than the model's 77-token "
        "text context and are cut there (e.g. 'a dog and another dog and another dog and another dog and...'): "
        "only their start is trained on"
    ) in captured.err
