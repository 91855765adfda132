"""CUB-200-2011 and Stanford Cars adapters on tiny fixtures of the real layouts, and the real mini CUB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from clipforge.data import (
    CUB,
    DatasetFormatError,
    DatasetLayoutError,
    StanfordCars,
    clean_cub_name,
    open_dataset,
)

# ---------------------------------------------------------------- CUB


@pytest.fixture()
def cub_root(tmp_path, make_image) -> Path:
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    images = {  # id: (class id, relative path, is_train, exists)
        1: (1, "001.Black_footed_Albatross/a1.jpg", 1, True),
        2: (1, "001.Black_footed_Albatross/a2.jpg", 0, True),
        5: (3, "003.Sooty_Albatross/s1.jpg", 0, True),
        7: (2, "002.Laysan_Albatross/l1.jpg", 0, False),  # listed but absent
        9: (2, "002.Laysan_Albatross/l2.jpg", 1, True),
    }
    (tmp_path / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    (tmp_path / "images.txt").write_text("".join(f"{i} {v[1]}\n" for i, v in images.items()))
    (tmp_path / "image_class_labels.txt").write_text("".join(f"{i} {v[0]}\n" for i, v in images.items()))
    (tmp_path / "train_test_split.txt").write_text("".join(f"{i} {v[2]}\n" for i, v in images.items()))
    for _, rel, _, exists in images.values():
        if exists:
            make_image(tmp_path / "images" / rel)
    return tmp_path


def test_cub_splits_labels_and_missing(cub_root):
    test = CUB(cub_root, "test")
    assert [(Path(p).name, lab) for p, lab in test.samples] == [("a2.jpg", 0), ("s1.jpg", 2)]
    assert [Path(p).name for p in test.missing] == ["l1.jpg"]
    train = open_dataset("cub", cub_root, "train")
    assert [(Path(p).name, lab) for p, lab in train.samples] == [("a1.jpg", 0), ("l2.jpg", 1)]
    assert len(CUB(cub_root, "all")) == 4
    assert test.classnames == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]


def test_cub_without_its_split_file_reads_all_and_says_so_for_a_split(cub_root):
    (cub_root / "train_test_split.txt").unlink()
    assert sorted(Path(p).name for p, _ in CUB(cub_root, "all").samples) == ["a1.jpg", "a2.jpg", "l2.jpg", "s1.jpg"]
    with pytest.raises(DatasetLayoutError, match=r"train_test_split.txt: CUB's test split is read from it; without it "
                                                 r"only --split all \(every image\) can be evaluated"):
        CUB(cub_root, "test")


def test_cub_nested_root_and_errors(cub_root, tmp_path_factory):
    outer = tmp_path_factory.mktemp("outer")
    cub_root.rename(outer / "CUB_200_2011")
    assert len(CUB(outer, "test")) == 2
    (outer / "CUB_200_2011" / "train_test_split.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"missing file .*train_test_split\.txt") as err:
        CUB(outer, "test")
    assert "image_class_labels.txt" in str(err.value)  # the layout description lists all files
    (outer / "CUB_200_2011" / "train_test_split.txt").write_text("1 0\n2 maybe\n")
    with pytest.raises(DatasetFormatError, match="train_test_split.txt line 2"):
        CUB(outer, "test")


def test_clean_cub_name():
    assert clean_cub_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert clean_cub_name("200.Common_Yellowthroat ") == "Common Yellowthroat"


@pytest.mark.data
def test_real_cub_mini(shared):
    root = shared("cub200_2011_mini")
    ds = open_dataset("cub", root, "test")
    assert len(ds) == 250 and not ds.missing and len(ds.classnames) == 200
    assert ds.classnames[0] == "Black footed Albatross"
    counts = ds.class_counts()
    assert counts[:50] == [5] * 50 and sum(counts[50:]) == 0
    with pytest.raises(DatasetFormatError, match="no samples for split 'train'"):
        CUB(root, "train")


# ---------------------------------------------------------------- Stanford Cars

CAR_NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"]


def _annotations(rows: list[tuple[str, int]]) -> np.ndarray:
    """A 1 x N struct array with the devkit's fields (bbox_x1..bbox_y2, class, fname)."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    ann = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, (fname, cls) in enumerate(rows):
        box = [np.array([[v]], dtype=np.uint16) for v in (1, 2, 30, 40)]
        ann[0, i] = (*box, np.array([[cls]], dtype=np.uint8), np.array([fname]))
    return ann


@pytest.fixture()
def cars_mat_root(tmp_path, make_image) -> Path:
    names = np.empty((1, len(CAR_NAMES)), dtype=object)
    names[0, :] = CAR_NAMES
    (tmp_path / "devkit").mkdir()
    scipy.io.savemat(tmp_path / "devkit" / "cars_meta.mat", {"class_names": names})
    scipy.io.savemat(tmp_path / "devkit" / "cars_train_annos.mat",
                     {"annotations": _annotations([("00001.jpg", 3), ("00002.jpg", 1)])})
    scipy.io.savemat(tmp_path / "cars_test_annos_withlabels.mat",
                     {"annotations": _annotations([("00001.jpg", 2), ("00002.jpg", 2), ("00003.jpg", 1)])})
    for name in ("00001.jpg", "00002.jpg"):
        make_image(tmp_path / "cars_train" / name)
    for name in ("00001.jpg", "00003.jpg"):  # test 00002 listed but absent
        make_image(tmp_path / "cars_test" / name)
    return tmp_path


def test_cars_devkit_mat(cars_mat_root):
    train = StanfordCars(cars_mat_root, "train")
    assert train.layout == "mat" and train.classnames == CAR_NAMES
    assert [(Path(p).name, lab) for p, lab in train.samples] == [("00001.jpg", 2), ("00002.jpg", 0)]
    test = open_dataset("cars", cars_mat_root, "test")
    assert [(Path(p).name, lab) for p, lab in test.samples] == [("00001.jpg", 1), ("00003.jpg", 0)]
    assert [Path(p).name for p in test.missing] == ["00002.jpg"]


def test_cars_unlabelled_test_annos_is_explained(cars_mat_root):
    (cars_mat_root / "cars_test_annos_withlabels.mat").rename(cars_mat_root / "devkit" / "cars_test_annos.mat")
    with pytest.raises(DatasetLayoutError, match="cars_test_annos_withlabels.mat") as err:
        StanfordCars(cars_mat_root, "test")
    assert "has no class labels" in str(err.value)


def _write_cars_csv(root: Path, make_image, train_rows: str, names: str) -> None:
    (root / "class_names.csv").write_text(names)
    (root / "cars_train_annos.csv").write_text("fname,bbox_x1,bbox_y1,bbox_x2,bbox_y2,class\n" + train_rows)
    for line in train_rows.strip().splitlines():
        make_image(root / "cars_train" / line.split(",")[0])


def test_cars_csv_one_based(tmp_path, make_image):
    _write_cars_csv(tmp_path, make_image, "a.jpg,1,1,5,5,3\nb.jpg,1,1,5,5,1\n", "\n".join(CAR_NAMES) + "\n")
    ds = StanfordCars(tmp_path, "train")
    assert ds.layout == "csv" and ds.class_id_base == 1 and ds.classnames == CAR_NAMES
    assert ds.targets == [2, 0]


def test_cars_csv_zero_based_with_header(tmp_path, make_image):
    _write_cars_csv(tmp_path, make_image, "a.jpg,1,1,5,5,0\nb.jpg,1,1,5,5,2\n",
                    "class_name\n" + "\n".join(CAR_NAMES) + "\n")
    ds = StanfordCars(tmp_path, "train")
    assert ds.class_id_base == 0 and ds.targets == [0, 2] and ds.classnames == CAR_NAMES


def test_cars_csv_errors(tmp_path, make_image):
    _write_cars_csv(tmp_path, make_image, "a.jpg,1,1,5,5,9\n", "\n".join(CAR_NAMES) + "\n")
    with pytest.raises(DatasetFormatError, match=r"class ids span 9\.\.9 but there are 3 class names"):
        StanfordCars(tmp_path, "train")
    with pytest.raises(DatasetLayoutError, match=r"missing file .*cars_test_annos\.csv"):
        StanfordCars(tmp_path, "test")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetLayoutError, match=r"cars_meta\.mat.*class_names\.csv"):
        open_dataset("cars", empty, "test")
