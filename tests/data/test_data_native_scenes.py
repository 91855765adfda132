"""EuroSAT, RESISC45, GTSRB, Country211, Rendered SST2, CLEVR counts, KITTI distance, ImageNet-V2,
-Sketch, -A, -R, ObjectNet, VOC 2007 and the Karpathy retrieval splits: fixtures in the official
layouts, checked for class order, split membership and label mapping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.data import open_dataset
from clipforge.data.classnames import imagenet_classnames, imagenet_wnids
from clipforge.data.retrieval_sets import open_retrieval_dataset
from clipforge.data.scenes import kitti_distance_label


def _img(path: Path, size=(4, 4), colour=(128, 128, 128)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _text(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _by_file(ds) -> dict[str, int]:
    return {Path(src).name: label for src, label in ds.samples}


def test_eurosat_seeded_split_is_disjoint_and_per_class(tmp_path, monkeypatch):
    from clipforge.data.scenes import EuroSAT

    base = tmp_path / "eurosat" / "2750"
    for cls in ("Forest", "AnnualCrop", "River"):
        for i in range(6):
            _img(base / cls / f"{cls}_{i + 1}.jpg")
    # the paper's 500 test / 1,000 train per class, scaled to the fixture
    monkeypatch.setattr(EuroSAT, "SIZES", {"test": 2, "train": 3})
    test, train = open_dataset("eurosat", tmp_path / "eurosat", "test"), open_dataset("eurosat", tmp_path, "train")
    assert test.classnames == ["AnnualCrop", "Forest", "River"]
    assert np.bincount(test.targets).tolist() == [2, 2, 2] and np.bincount(train.targets).tolist() == [3, 3, 3]
    for src, label in test.samples + train.samples:
        assert Path(src).parent.name == test.classnames[label]
    assert not {s for s, _ in train.samples} & {s for s, _ in test.samples}
    assert open_dataset("eurosat", base, "test").samples == test.samples  # seeded: the same every time


def test_resisc45_torchgeo_split_files(tmp_path):
    base = tmp_path / "NWPU-RESISC45"
    for cls in ("airplane", "baseball_diamond"):
        for i in (1, 2):
            _img(base / cls / f"{cls}_{i:03d}.jpg")
    _text(base / "resisc45-test.txt", ["airplane_002.jpg", "baseball_diamond_001.jpg"])
    ds = open_dataset("resisc45", tmp_path, "test")
    assert ds.classnames == ["airplane", "baseball diamond"]
    assert _by_file(ds) == {"airplane_002.jpg": 0, "baseball_diamond_001.jpg": 1}


def test_gtsrb_training_folders_and_test_csv(tmp_path):
    base = tmp_path / "gtsrb"
    for folder, name in (("00000", "00000_00000.ppm"), ("00042", "00001_00002.ppm")):
        _img(base / "GTSRB" / "Training" / folder / name)
    for name in ("00000.ppm", "00001.ppm"):
        _img(base / "GTSRB" / "Final_Test" / "Images" / name)
    _text(base / "GT-final_test.csv", ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId",
                                       "00000.ppm;4;4;0;0;3;3;16", "00001.ppm;4;4;0;0;3;3;1"])
    test = open_dataset("gtsrb", tmp_path, "test")
    assert len(test.classnames) == 43 and _by_file(test) == {"00000.ppm": 16, "00001.ppm": 1}
    assert sorted(open_dataset("gtsrb", base, "train").targets) == [0, 42]


def test_country211_and_rendered_sst2(tmp_path):
    for split, codes in (("train", ("AD", "AE", "ZW")), ("test", ("AE", "AD"))):
        for code in codes:
            _img(tmp_path / "country211" / split / code / f"{code}_{split}.jpg")
    ds = open_dataset("country211", tmp_path, "test")
    assert ds.classnames == ["AD", "AE", "ZW"] and _by_file(ds) == {"AD_test.jpg": 0, "AE_test.jpg": 1}
    for split in ("test", "valid"):
        for cls in ("positive", "negative"):
            _img(tmp_path / "rendered-sst2" / split / cls / f"{cls}_{split}.png")
    sst = open_dataset("rendered_sst2", tmp_path, "test")
    assert sst.classnames == ["negative", "positive"]
    assert _by_file(sst) == {"negative_test.png": 0, "positive_test.png": 1}
    assert len(open_dataset("sst2", tmp_path, "val")) == 2


def test_clevr_counts_from_scenes(tmp_path):
    base = tmp_path / "CLEVR_v1.0"
    scenes = [{"image_filename": "CLEVR_val_000001.png", "objects": [{}] * 10},
              {"image_filename": "CLEVR_val_000000.png", "objects": [{}] * 3}]
    _text(base / "scenes" / "CLEVR_val_scenes.json", [json.dumps({"scenes": scenes})])
    for s in scenes:
        _img(base / "images" / "val" / s["image_filename"])
    ds = open_dataset("clevr_counts", tmp_path, "test")  # CLEVR's test has no scenes: test means val
    assert ds.classnames == ["3", "4", "5", "6", "7", "8", "9", "10"]
    assert _by_file(ds) == {"CLEVR_val_000000.png": 0, "CLEVR_val_000001.png": 7}


def test_kitti_closest_vehicle_distance_bins(tmp_path):
    labels = tmp_path / "kitti" / "training" / "label_2"

    def obj(kind, z):
        return f"{kind} 0.00 0 0.0 0 0 10 10 1.5 1.6 3.9 1.0 1.5 {z} 0.0"

    cases = {"000000": [obj("Car", 30.0), obj("Pedestrian", 2.0)], "000001": [obj("Van", 7.9)],
             "000002": [obj("Truck", 12.0), obj("Car", 25.0)], "000003": ["DontCare -1 -1 -10 0 0 1 1 -1 -1 -1 "
                                                                          "-1000 -1000 -1000 -10", obj("Cyclist", 3)]}
    for image_id, lines in cases.items():
        _text(labels / f"{image_id}.txt", lines)
    assert [kitti_distance_label(labels / f"{i}.txt") for i in cases] == [2, 0, 1, 3]
    for i in range(11):
        image_id = f"{i:06d}"
        if image_id not in cases:
            _text(labels / f"{image_id}.txt", [obj("Car", 5.0)])
        _img(tmp_path / "kitti" / "training" / "image_2" / f"{image_id}.png")
    test, train = open_dataset("kitti", tmp_path, "test"), open_dataset("kitti_distance", tmp_path, "train")
    assert len(test.classnames) == 4 and _by_file(test) == {"000010.png": 0}  # the last 9.5% of ids
    assert len(train) == 10 and _by_file(train)["000003.png"] == 3


def test_imagenet_v2_sketch_a_r(tmp_path):
    wnids = imagenet_wnids()
    v2 = tmp_path / "imagenetv2-matched-frequency-format-val"
    _img(v2 / "0" / "a.jpeg")
    _img(v2 / "999" / "b.jpeg")
    ds = open_dataset("imagenetv2", tmp_path, "test")
    assert _by_file(ds) == {"a.jpeg": 0, "b.jpeg": 999} and len(ds.classnames) == 1000
    sketch = tmp_path / "sketch"
    _img(sketch / wnids[5] / "sketch_1.JPEG")
    ds = open_dataset("imagenet_sketch", tmp_path, "test")
    assert _by_file(ds) == {"sketch_1.JPEG": 5} and ds.prompt_classnames == imagenet_classnames()
    for name in ("imagenet-a", "imagenet-r"):
        for w in (wnids[900], wnids[1]):
            _img(tmp_path / name / w / f"{w}.jpg")
        ds = open_dataset(name.replace("-", "_"), tmp_path, "test")
        assert ds.classnames == [wnids[1], wnids[900]] and ds.imagenet_indices == [1, 900]
        assert ds.prompt_classnames == [imagenet_classnames()[1], imagenet_classnames()[900]]
        assert _by_file(ds) == {f"{wnids[1]}.jpg": 0, f"{wnids[900]}.jpg": 1}


def test_objectnet_overlap_classes_and_border_crop(tmp_path):
    base = tmp_path / "objectnet-1.0"
    _text(base / "mappings" / "folder_to_objectnet_label.json",
          [json.dumps({"banana": "Banana", "air_freshener": "Air freshener", "bath_towel": "Bath towel"})])
    _text(base / "mappings" / "objectnet_to_imagenet_1k.json",
          [json.dumps({"Banana": "banana", "Bath towel": "bath towel"})])
    for folder in ("banana", "air_freshener", "bath_towel"):
        _img(base / "images" / folder / f"{folder}.png", size=(10, 8))
    ds = open_dataset("objectnet", tmp_path, "test")
    assert ds.classnames == ["Banana", "Bath towel"]
    assert _by_file(ds) == {"banana.png": 0, "bath_towel.png": 1}
    assert ds[0][0].size == (6, 4)  # the 2-pixel frame is gone


def test_voc2007_multilabel_marks(tmp_path):
    from clipforge.data.imagenet_variants import VOC_CLASSES

    main = tmp_path / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    marks = {"000001": {"dog": "1", "person": "1"}, "000002": {"cat": "0"}, "000004": {"car": "1"}}
    for cls in VOC_CLASSES:
        _text(main / f"{cls}_test.txt", [f"{i} {m.get(cls, '-1'):>2}" for i, m in marks.items()])
    for image_id in ("000001", "000002"):  # 000004 is missing on disk
        _img(tmp_path / "VOCdevkit" / "VOC2007" / "JPEGImages" / f"{image_id}.jpg")
    ds = open_dataset("voc2007", tmp_path, "test")
    assert ds.classnames == list(VOC_CLASSES) and len(ds.missing) == 1
    assert _by_file(ds) == {"000001.jpg": VOC_CLASSES.index("dog"), "000002.jpg": VOC_CLASSES.index("cat")}
    assert ds.multilabels.shape == (2, 20)
    assert ds.multilabels[0, VOC_CLASSES.index("person")] == 1 and ds.multilabels[1, VOC_CLASSES.index("cat")] == 0
    assert ds.multilabels[1, VOC_CLASSES.index("dog")] == -1


def test_karpathy_flickr30k_and_coco(tmp_path):
    data = {"images": [
        {"filename": "1.jpg", "split": "test", "sentences": [{"raw": f"caption {k}"} for k in range(6)]},
        {"filename": "2.jpg", "split": "train", "sentences": [{"raw": "t"}]},
        {"filename": "3.jpg", "split": "test", "sentences": [{"raw": "three"}, {"tokens": ["a", "b"]}]}]}
    _text(tmp_path / "flickr30k" / "dataset_flickr30k.json", [json.dumps(data)])
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        _img(tmp_path / "flickr30k" / "flickr30k-images" / name)
    ds = open_retrieval_dataset("flickr30k", tmp_path / "flickr30k", "test")
    assert [Path(p).name for p in ds.images] == ["1.jpg", "3.jpg"]
    assert ds.captions == [f"caption {k}" for k in range(5)] + ["three", "a b"]  # five per image at most
    assert ds.text_to_image == [0] * 5 + [1, 1] and ds.image_to_text[1] == [5, 6]
    coco = {"images": [{"filepath": "val2014", "filename": "COCO_val2014_1.jpg", "split": "test",
                        "sentences": [{"raw": "x"}]},
                       {"filepath": "val2014", "filename": "COCO_val2014_2.jpg", "split": "restval",
                        "sentences": [{"raw": "y"}]}]}
    _text(tmp_path / "mscoco" / "dataset_coco.json", [json.dumps(coco)])
    _img(tmp_path / "mscoco" / "val2014" / "COCO_val2014_1.jpg")
    _img(tmp_path / "mscoco" / "val2014" / "COCO_val2014_2.jpg")
    assert [Path(p).name for p in open_retrieval_dataset("mscoco", tmp_path / "mscoco").images] == \
        ["COCO_val2014_1.jpg"]
    assert len(open_retrieval_dataset("mscoco", tmp_path / "mscoco", "train").images) == 1  # restval is train


@pytest.mark.parametrize("name", ["eurosat", "gtsrb", "country211", "rendered_sst2", "clevr_counts", "kitti",
                                  "imagenetv2", "imagenet_a", "objectnet", "voc2007"])
def test_missing_layouts_name_what_is_missing(tmp_path, name):
    with pytest.raises(FileNotFoundError, match="expected layout"):
        open_dataset(name, tmp_path / "nothing", "test")


def test_eval_retrieval_reads_a_karpathy_json(tmp_path, monkeypatch):
    from clipforge.cli.main import main

    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    data = {"images": [{"filename": f"{i}.jpg", "split": "test", "sentences": [{"raw": f"photo {i}"}, {"raw": "x"}]}
                       for i in range(3)] + [{"filename": "9.jpg", "split": "train", "sentences": [{"raw": "t"}]}]}
    _text(tmp_path / "f30k" / "dataset_flickr30k.json", [json.dumps(data)])
    for i in (0, 1, 2, 9):
        _img(tmp_path / "f30k" / "flickr30k-images" / f"{i}.jpg", colour=(30 * i, 0, 0))
    out = tmp_path / "out"
    assert main(["eval", "retrieval", "--model", "test-vit-tiny", "--captions", str(tmp_path / "f30k" /
                 "dataset_flickr30k.json"), "--out", str(out), "--device", "cpu", "--workers", "0", "--quiet"]) == 0
    (report,) = out.glob("*.json")
    m = json.loads(report.read_text())["metrics"]
    assert (m["num_images"], m["num_texts"]) == (3, 6)
