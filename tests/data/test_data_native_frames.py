"""UCF101 and Kinetics-700 through given frames, Hateful Memes from its jsonl files; and the paper
metrics they (and VOC) need: ROC AUC, mean(top-1, top-5), 11-point mAP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.data import open_dataset
from clipforge.evaluate.metrics import average_precision_11pt, binary_roc_auc, mean_average_precision_11pt


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)


def _text(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def test_ucf101_frames_and_split_lists(tmp_path):
    base = tmp_path / "ucf101"
    _text(base / "ucfTrainTestlist" / "classInd.txt", ["1 ApplyEyeMakeup", "2 Archery", "3 YoYo"])
    _text(base / "ucfTrainTestlist" / "testlist01.txt", ["YoYo/v_YoYo_g01_c01.avi", "Archery/v_Archery_g02_c03.avi",
                                                         "Archery/v_Archery_g03_c01.avi"])
    _text(base / "ucfTrainTestlist" / "trainlist01.txt", ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"])
    for rel in ("YoYo/v_YoYo_g01_c01.jpg", "Archery/v_Archery_g02_c03.png", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.jpg"):
        _img(base / "frames" / rel)
    ds = open_dataset("ucf101", tmp_path, "test")
    assert ds.classnames == ["ApplyEyeMakeup", "Archery", "YoYo"] and len(ds.missing) == 1
    assert {Path(s).name: lab for s, lab in ds.samples} == {"v_YoYo_g01_c01.jpg": 2, "v_Archery_g02_c03.png": 1}
    assert open_dataset("ucf101", base, "train").targets == [0]


def test_kinetics700_frames_from_annotations(tmp_path):
    base = tmp_path / "kinetics700"
    _text(base / "annotations" / "validate.csv", ["label,youtube_id,time_start,time_end,split",
                                                  "zumba,abc,10,20,validate", "abseiling,xyz,0,10,validate"])
    _text(base / "annotations" / "train.csv", ["label,youtube_id,time_start,time_end,split", "bowling,q,5,15,train"])
    _img(base / "frames" / "zumba" / "abc_000010_000020.jpg")
    _img(base / "frames" / "abseiling" / "xyz_000000_000010.jpg")
    ds = open_dataset("kinetics700", tmp_path, "test")
    assert ds.classnames == ["abseiling", "bowling", "zumba"]
    assert sorted(ds.targets) == [0, 2]


def test_hateful_memes_dev_seen(tmp_path):
    base = tmp_path / "hateful_memes"
    _text(base / "dev_seen.jsonl", [json.dumps({"id": 1, "img": "img/00001.png", "label": 1, "text": "t"}),
                                    json.dumps({"id": 2, "img": "img/00002.png", "label": 0, "text": "u"})])
    for i in (1, 2):
        _img(base / "img" / f"0000{i}.png")
    ds = open_dataset("hateful_memes", tmp_path, "test")
    assert ds.split == "dev_seen" and ds.targets == [1, 0] and ds.classnames == ["not hateful", "hateful"]
    _text(base / "train.jsonl", ["{not json"])
    with pytest.raises(ValueError, match="line 1"):
        open_dataset("hateful_memes", base, "train")


def test_paper_metrics():
    # AP: ranking pos, neg, pos -> precision 1 at recall .5, 2/3 at recall 1 (difficult item ignored)
    ap = average_precision_11pt([0.9, 0.8, 0.7, 0.95], [1, 0, 1, 0], difficult=[0, 0, 0, 1])
    assert ap == pytest.approx((6 * 1.0 + 5 * (2 / 3)) / 11)
    targets = np.array([[1, -1], [-1, 1], [0, -1]])
    assert mean_average_precision_11pt(np.array([[2.0, 0.0], [0.0, 2.0], [5.0, 1.0]]), targets) == pytest.approx(1.0)
    assert binary_roc_auc([0.9, 0.1, 0.8, 0.3], [1, 0, 0, 1]) == pytest.approx(0.75)
