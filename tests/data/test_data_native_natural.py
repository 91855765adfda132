"""Food-101, SUN397, DTD, Pets, Caltech-101, Flowers-102, FGVC-Aircraft, Birdsnap: small fixtures in
each archive's exact layout (written here), checked for class order, split membership, labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from clipforge.data import open_dataset
from clipforge.data.base import DatasetFormatError, DatasetLayoutError


def _img(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, value, value)).save(path)


def _text(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _by_file(ds) -> dict[str, int]:
    return {Path(src).name: label for src, label in ds.samples}


def test_food101_json_and_txt_meta(tmp_path):
    base = tmp_path / "food-101"
    meta = {"train": {"baklava": ["baklava/11"], "apple_pie": ["apple_pie/21", "apple_pie/22"]},
            "test": {"baklava": ["baklava/12"], "apple_pie": ["apple_pie/23"]}}
    for split, table in meta.items():
        _text(base / "meta" / f"{split}.json", [json.dumps(table)])
        for ids in table.values():
            for rel in ids:
                _img(base / "images" / f"{rel}.jpg")
    _text(base / "meta" / "classes.txt", ["apple_pie", "baklava"])
    ds = open_dataset("food101", tmp_path, "test")
    assert ds.classnames == ["apple_pie", "baklava"] and _by_file(ds) == {"23.jpg": 0, "12.jpg": 1}
    assert len(open_dataset("food-101", base, "train")) == 3
    (base / "meta" / "test.json").unlink()  # the .txt form the archive also carries
    _text(base / "meta" / "test.txt", ["baklava/12", "apple_pie/23", "apple_pie/99"])
    ds = open_dataset("food101", base, "test")
    assert _by_file(ds) == {"23.jpg": 0, "12.jpg": 1} and len(ds.missing) == 1


def test_sun397_classname_order_and_partitions(tmp_path):
    base = tmp_path / "SUN397"
    _text(base / "ClassName.txt", ["/a/abbey", "/b/bakery/shop", "/b/beach"])
    for rel in ("a/abbey/sun_a1.jpg", "b/bakery/shop/sun_b1.jpg", "b/beach/sun_c1.jpg", "b/beach/sun_c2.jpg"):
        _img(base / rel)
    ds = open_dataset("sun397", tmp_path, "test")  # no partition files: every image
    assert ds.classnames == ["abbey", "bakery shop", "beach"]
    assert _by_file(ds) == {"sun_a1.jpg": 0, "sun_b1.jpg": 1, "sun_c1.jpg": 2, "sun_c2.jpg": 2}
    _text(tmp_path / "Partitions" / "Testing_01.txt", ["/b/beach/sun_c2.jpg", "/b/bakery/shop/sun_b1.jpg"])
    _text(tmp_path / "Partitions" / "Training_01.txt", ["/a/abbey/sun_a1.jpg", "/b/beach/sun_c1.jpg"])
    assert _by_file(open_dataset("sun397", base, "test")) == {"sun_c2.jpg": 2, "sun_b1.jpg": 1}
    assert _by_file(open_dataset("sun397", base, "train")) == {"sun_a1.jpg": 0, "sun_c1.jpg": 2}


def test_dtd_partition_files(tmp_path):
    base = tmp_path / "dtd"
    for cls in ("zigzagged", "banded", "dotted"):
        for i in (1, 2):
            _img(base / "images" / cls / f"{cls}_000{i}.jpg")
    _text(base / "labels" / "test1.txt", ["zigzagged/zigzagged_0001.jpg", "banded/banded_0002.jpg"])
    _text(base / "labels" / "train1.txt", ["dotted/dotted_0001.jpg"])
    _text(base / "labels" / "test2.txt", ["dotted/dotted_0002.jpg"])
    ds = open_dataset("dtd", tmp_path, "test")
    assert ds.classnames == ["banded", "dotted", "zigzagged"]
    assert _by_file(ds) == {"zigzagged_0001.jpg": 2, "banded_0002.jpg": 0}
    assert _by_file(open_dataset("dtd", base, "test", partition=2)) == {"dotted_0002.jpg": 1}
    with pytest.raises(ValueError, match="no split 'bogus'"):
        open_dataset("dtd", base, "bogus")


def test_pets_class_ids_and_names(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    rows = ["#Image CLASS-ID SPECIES BREED ID", "Abyssinian_1 1 1 1", "american_bulldog_7 2 2 1",
            "american_pit_bull_terrier_3 3 2 2", "Bengal_4 6 1 2", "basset_hound_1 4 2 3", "beagle_2 5 2 4"]
    _text(base / "annotations" / "list.txt", rows)
    _text(base / "annotations" / "test.txt", ["american_bulldog_7 2 2 1", "Bengal_4 6 1 2"])
    _text(base / "annotations" / "trainval.txt", ["Abyssinian_1 1 1 1", "beagle_2 5 2 4"])
    for row in rows[1:]:
        _img(base / "images" / f"{row.split()[0]}.jpg")
    ds = open_dataset("pets", tmp_path, "test")
    assert ds.classnames == ["Abyssinian", "American Bulldog", "American Pit Bull Terrier", "Basset Hound",
                             "Beagle", "Bengal"]
    assert _by_file(ds) == {"american_bulldog_7.jpg": 1, "Bengal_4.jpg": 5}
    assert _by_file(open_dataset("oxford_pets", base, "train")) == {"Abyssinian_1.jpg": 0, "beagle_2.jpg": 4}


def test_caltech101_classes_include_background_and_seeded_split(tmp_path):
    cats = tmp_path / "caltech101" / "101_ObjectCategories"
    for cls in ("accordion", "BACKGROUND_Google", "Faces_easy"):
        for i in range(33):
            _img(cats / cls / f"image_{i + 1:04d}.jpg")
    test = open_dataset("caltech101", tmp_path, "test")
    train = open_dataset("caltech101", tmp_path, "train")
    assert test.classnames == ["BACKGROUND_Google", "Faces_easy", "accordion"]  # sorted, background kept
    assert np.bincount(train.targets).tolist() == [30, 30, 30] and np.bincount(test.targets).tolist() == [3, 3, 3]
    assert not {s for s, _ in train.samples} & {s for s, _ in test.samples}
    assert [s for s, _ in open_dataset("caltech101", tmp_path, "test").samples] == [s for s, _ in test.samples]
    for src, label in test.samples:
        assert Path(src).parent.name == test.classnames[label]


def test_flowers102_mat_files(tmp_path):
    base = tmp_path / "flowers-102"
    labels = np.array([3, 1, 102, 2, 1], dtype=np.uint8)
    base.mkdir()
    scipy.io.savemat(base / "imagelabels.mat", {"labels": labels[None, :]})
    scipy.io.savemat(base / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[4]]),
                                          "tstid": np.array([[3, 5]])})
    for i in range(1, 6):
        _img(base / "jpg" / f"image_{i:05d}.jpg")
    ds = open_dataset("flowers102", tmp_path, "test")
    assert len(ds.classnames) == 102 and _by_file(ds) == {"image_00003.jpg": 101, "image_00005.jpg": 0}
    assert _by_file(open_dataset("flowers", base, "train")) == {"image_00001.jpg": 2, "image_00002.jpg": 0}
    assert _by_file(open_dataset("flowers102", base, "val")) == {"image_00004.jpg": 1}


def test_fgvc_aircraft_variants(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    _text(data / "variants.txt", ["707-320", "A300B4", "Cessna 172"])
    _text(data / "images_variant_test.txt", ["0001 Cessna 172", "0002 707-320"])
    _text(data / "images_variant_trainval.txt", ["0003 A300B4"])
    for i in (1, 2, 3):
        _img(data / "images" / f"000{i}.jpg")
    ds = open_dataset("fgvc_aircraft", tmp_path, "test")
    assert ds.classnames == ["707-320", "A300B4", "Cessna 172"] and _by_file(ds) == {"0001.jpg": 2, "0002.jpg": 0}
    assert _by_file(open_dataset("aircraft", tmp_path, "trainval")) == {"0003.jpg": 1}
    _text(data / "images_variant_val.txt", ["0004 Boeing 999"])
    with pytest.raises(DatasetFormatError, match="Boeing 999"):
        open_dataset("fgvc_aircraft", tmp_path, "val")


def test_birdsnap_species_and_test_list(tmp_path):
    base = tmp_path / "birdsnap"
    _text(base / "species.txt", ["id\tcommon\tscientific\tdir", "2\tAcorn Woodpecker\tMelanerpes\tAcorn_Woodpecker",
                                 "1\tAcadian Flycatcher\tEmpidonax\tAcadian_Flycatcher"])
    _text(base / "images.txt", ["url\tmd5\tpath\tspecies_id", "u\tm\tAcadian_Flycatcher/1.jpg\t1",
                                "u\tm\tAcorn_Woodpecker/2.jpg\t2", "u\tm\tAcorn_Woodpecker/3.jpg\t2"])
    _text(base / "test_images.txt", ["path", "Acorn_Woodpecker/3.jpg"])
    for rel in ("Acadian_Flycatcher/1.jpg", "Acorn_Woodpecker/2.jpg", "Acorn_Woodpecker/3.jpg"):
        _img(base / "download" / "images" / rel)
    ds = open_dataset("birdsnap", tmp_path, "test")
    assert ds.classnames == ["Acadian Flycatcher", "Acorn Woodpecker"] and _by_file(ds) == {"3.jpg": 1}
    assert _by_file(open_dataset("birdsnap", base, "train")) == {"1.jpg": 0, "2.jpg": 1}


def test_missing_layout_names_the_file(tmp_path):
    with pytest.raises(DatasetLayoutError, match="food-101"):
        open_dataset("food101", tmp_path, "test")
