"""The caption readers say what they read (audit 58 #8, #10): a caption CSV's epoch is one sample per image (a
caption drawn among its rows), which the trainer's start line says with the counts, where open_clip's CsvDataset
takes one sample per row; a caption folder whose name is not UTF-8 is said in one warning line naming the folder
(its bytes as \\xNN) and how its caption was decoded, instead of training on "caf \\ufffd table" without a word."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from clipforge.data.imagetext import CaptionCsvImageText, FolderCaptionImageText


def test_a_caption_csv_counts_its_images_and_caption_rows(tmp_path, make_image):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        make_image(tmp_path / "images" / name)
    rows = ["image,caption", "a.jpg,one", "a.jpg,two", "b.jpg,three", "c.jpg,four", "c.jpg,five", "c.jpg,six",
            "gone.jpg,seven"]
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    dataset = CaptionCsvImageText(tmp_path / "captions.csv")
    assert (len(dataset), dataset.caption_rows) == (3, 6)  # the missing image's row is not one it trains on
    from clipforge.train.data import epoch_line

    assert epoch_line(dataset, "captions.csv") == (
        "training data (captions.csv): 3 images, 6 caption rows; an epoch is one sample per image with a caption "
        "drawn among its rows (open_clip's CsvDataset takes one sample per row)")


def test_the_trainer_says_a_caption_csvs_epoch_at_the_start(tmp_path, make_image, capsys):
    from clipforge.train.config import TrainConfig
    from clipforge.train.trainer import Trainer

    lines = ["image,caption"]
    for i in range(4):
        make_image(tmp_path / "images" / f"{i}.jpg", color=(60 * i, 20, 200 - 40 * i), size=(32, 32))
        lines += [f"{i}.jpg,picture {i} first", f"{i}.jpg,picture {i} second"]
    (tmp_path / "captions.csv").write_text("\n".join(lines) + "\n")
    Trainer(TrainConfig(model="test-vit-tiny", data="csv", root=str(tmp_path / "captions.csv"), batch_size=2,
                        steps=1, precision="fp32", device="cpu", tensorboard=False, warmup_steps=0,
                        out_dir=str(tmp_path / "run")))
    err = capsys.readouterr().err
    assert (f"training data ({tmp_path / 'captions.csv'}): 4 images, 8 caption rows; an epoch is one sample per "
            "image with a caption drawn among its rows (open_clip's CsvDataset takes one sample per row)\n") in err


def test_a_caption_folder_name_that_is_not_utf8_is_said_and_decoded_as_latin1(tmp_path, make_image):
    if os.name == "nt":
        pytest.skip("file names are UTF-16 on Windows")
    make_image(tmp_path / "a_dog_running" / "1.jpg")
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9_table")
    try:
        os.mkdir(odd)
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    make_image(Path(os.fsdecode(odd)) / "2.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = FolderCaptionImageText(tmp_path)
    assert dataset.texts == ["a dog running", "café table"]
    assert [str(w.message) for w in caught] == [
        f"caption folder {tmp_path}/caf\\xe9_table: its name is not UTF-8; its caption was decoded as Latin-1: "
        "'café table'"]
    assert os.path.isfile(dataset.sources[1])  # the file is still read through its own name
