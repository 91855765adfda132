"""ImageNet adapters: four layouts, the devkit ID -> sorted-wnid mapping, errors, the real sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from clipforge.data import (
    DatasetFormatError,
    DatasetLayoutError,
    ImageNet,
    detect_imagenet_layout,
    open_dataset,
)
from clipforge.data.classnames import imagenet_classnames, imagenet_wnids

WNIDS = imagenet_wnids()


def _write_meta(path: Path, leaves: list[tuple[int, str]]) -> None:
    """A meta.mat shaped like the devkit's: a struct array `synsets` (N x 1) with the devkit's
    fields, leaf classes (num_children 0) plus one inner node, which must be ignored."""
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    rows = [(ident, wnid, 0) for ident, wnid in leaves] + [(1001, "n00001740", len(leaves))]
    synsets = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for i, (ident, wnid, children) in enumerate(rows):
        synsets[i, 0] = (
            np.array([[ident]], dtype=np.uint16), np.array([wnid]), np.array([f"words {wnid}"]),
            np.array([f"gloss {wnid}"]), np.array([[children]], dtype=np.uint8),
            np.array([list(range(1, children + 1))], dtype=np.uint8) if children else np.zeros((1, 0), np.uint8),
            np.array([[0]], dtype=np.uint8), np.array([[1300]], dtype=np.uint16),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"synsets": synsets})


@pytest.fixture()
def devkit_root(tmp_path, make_image) -> Path:
    # ILSVRC2012_IDs in meta.mat order deliberately differ from sorted-wnid order.
    leaves = [(1, WNIDS[999]), (2, WNIDS[500]), (3, WNIDS[0]), (4, WNIDS[1])]
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    _write_meta(data / "meta.mat", leaves)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("3\n1\n4\n2\n2\n")
    for i in range(1, 5):  # image 5 is listed by the ground truth but absent
        make_image(tmp_path / "ILSVRC2012_img_val" / f"ILSVRC2012_val_{i:08d}.JPEG")
    return tmp_path


def test_devkit_maps_ilsvrc_ids_through_meta_to_sorted_wnid_labels(devkit_root):
    ds = ImageNet(devkit_root)
    assert detect_imagenet_layout(devkit_root) == "devkit" and ds.layout == "devkit"
    assert [Path(p).name for p, _ in ds.samples] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 5)]
    assert ds.targets == [0, 999, 1, 500]
    assert ds.missing == [str(devkit_root / "ILSVRC2012_img_val" / "ILSVRC2012_val_00000005.JPEG")]
    assert len(ds.classnames) == 1000 and ds.classnames == imagenet_classnames()


def test_devkit_unknown_id_names_the_line(devkit_root):
    (devkit_root / "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt").write_text("3\n77\n")
    with pytest.raises(DatasetFormatError, match=r"ground_truth.txt line 2: '77'"):
        ImageNet(devkit_root)


def test_devkit_without_meta_names_missing_file(devkit_root):
    (devkit_root / "ILSVRC2012_devkit_t12/data/meta.mat").unlink()
    with pytest.raises(DatasetLayoutError, match=r"missing file .*ILSVRC2012_devkit_t12/data/meta\.mat") as err:
        ImageNet(devkit_root)
    assert "expected layout" in str(err.value)


def test_devkit_without_images_says_where_it_looked(tmp_path):
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    _write_meta(data / "meta.mat", [(1, WNIDS[3])])
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n")
    with pytest.raises(DatasetLayoutError, match="no validation images ILSVRC2012_val_"):
        ImageNet(tmp_path)


def test_class_folders_layout(tmp_path, make_image):
    for wnid, n in ((WNIDS[7], 2), (WNIDS[3], 1)):
        for i in range(n):
            make_image(tmp_path / "val" / wnid / f"img{i}.JPEG")
    (tmp_path / "val" / WNIDS[3] / "notes.txt").write_text("not an image")
    ds = open_dataset("imagenet", tmp_path, "test")
    assert ds.layout == "folders" and ds.split == "val"
    assert ds.targets == [3, 7, 7]  # sorted-wnid index, not folder position
    assert ImageNet(tmp_path / "val").targets == [3, 7, 7]


def test_kaggle_layout(tmp_path, make_image):
    rows = [("ILSVRC2012_val_00000002", WNIDS[10]), ("ILSVRC2012_val_00000001", WNIDS[990]),
            ("ILSVRC2012_val_00000003", WNIDS[42])]
    text = "ImageId,PredictionString\n" + "".join(f"{i},{w} 10 20 30 40 {w} 1 2 3 4\n" for i, w in rows)
    (tmp_path / "LOC_val_solution.csv").write_text(text)
    for image_id, _ in rows[:2]:
        make_image(tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val" / f"{image_id}.JPEG")
    ds = ImageNet(tmp_path)
    assert ds.layout == "kaggle"
    assert [(Path(p).name, lab) for p, lab in ds.samples] == [
        ("ILSVRC2012_val_00000001.JPEG", 990), ("ILSVRC2012_val_00000002.JPEG", 10)]
    assert [Path(p).name for p in ds.missing] == ["ILSVRC2012_val_00000003.JPEG"]


def test_kaggle_bad_header(tmp_path, make_image):
    (tmp_path / "LOC_val_solution.csv").write_text("id,label\nILSVRC2012_val_00000001,n01440764\n")
    make_image(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetFormatError, match="ImageId,PredictionString"):
        ImageNet(tmp_path)


def test_flat_layout_labels_by_wnid_prefix(tmp_path, make_image):
    make_image(tmp_path / "images" / f"{WNIDS[999]}_toilet_tissue.JPEG")
    make_image(tmp_path / "images" / f"{WNIDS[1]}_goldfish.png")
    make_image(tmp_path / "images" / "holiday.jpg")
    ds = ImageNet(tmp_path)
    assert ds.layout == "flat" and ds.targets == [1, 999]
    assert [Path(p).name for p in ds.unlabelled] == ["holiday.jpg"]


def test_no_layout_error_names_expected_files(tmp_path):
    with pytest.raises(DatasetLayoutError) as err:
        open_dataset("imagenet", tmp_path, "val")
    text = str(err.value)
    for needed in ("ILSVRC2012_validation_ground_truth.txt", "LOC_val_solution.csv", "meta.mat", "<wnid>"):
        assert needed in text


def test_wrong_number_of_classnames(tmp_path, make_image):
    make_image(tmp_path / f"{WNIDS[0]}_x.JPEG")
    with pytest.raises(ValueError, match="1000 class names"):
        ImageNet(tmp_path, classnames=["a", "b"])
    assert ImageNet(tmp_path, classnames=WNIDS).classnames[0] == WNIDS[0]


@pytest.mark.data
def test_real_imagenet_sample_flat_layout(shared):
    root = shared("imagenet_sample")
    truth = {Path(r["file"]).name: r for r in json.loads((root / "labels.json").read_text())}
    ds = open_dataset("imagenet", root, "val")
    assert ds.layout == "flat" and len(ds) == 1000 and not ds.unlabelled
    for path, label in ds.samples:
        record = truth[Path(path).name]
        assert label == record["label"]
        assert ds.classnames[label] == record["openai_classname"]
