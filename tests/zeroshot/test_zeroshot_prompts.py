"""Prompt package data: the exact OpenAI lists, forgiving lookups, clear errors."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from clipforge.zeroshot import (
    clean_cub_classname,
    cub_classnames,
    get_classnames,
    get_templates,
    list_datasets,
    list_template_sets,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SEVEN = ["itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
         "a {} in a video game.", "art of the {}.", "a photo of the small {}."]

# (name used by users, number of classes in the standard label set)
DATASETS = [("imagenet", 1000), ("cifar10", 10), ("cifar100", 100), ("cars", 196), ("food101", 101),
            ("pets", 37), ("flowers102", 102), ("caltech101", 102), ("sun397", 397), ("dtd", 47),
            ("eurosat", 10), ("fgvc-aircraft", 100), ("gtsrb", 43), ("mnist", 10), ("stl10", 10),
            ("country211", 211), ("resisc45", 45)]


def test_imagenet_templates_and_subset():
    full = get_templates("imagenet")
    assert len(full) == 80 and len(set(full)) == 80
    assert get_templates("imagenet7") == SEVEN
    assert set(SEVEN) <= set(full)
    assert get_templates("simple") == ["a photo of a {}."]


@pytest.mark.parametrize(("name", "count"), DATASETS)
def test_classnames_and_templates_for_every_dataset(name, count):
    names = get_classnames(name)
    assert len(names) == count and all(isinstance(n, str) and n for n in names)
    templates = get_templates(name)
    assert templates and all(t.count("{}") == 1 for t in templates)


def test_known_entries_and_aliases():
    assert get_classnames("imagenet")[:3] == ["tench", "goldfish", "great white shark"]
    assert get_classnames("ImageNet-1k") == get_classnames("imagenet")
    assert get_classnames("StanfordCars")[0] == "AM General Hummer SUV 2000"
    assert get_classnames("cifar10") == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                         "horse", "ship", "truck"]
    assert get_templates("CIFAR-10") == get_templates("cifar10")
    assert len(get_templates("cifar10")) == 18
    assert "imagenet" in list_datasets() and "imagenet7" in list_template_sets()


def test_package_data_is_byte_identical_to_shared_prompts_and_licensed():
    data = resources.files("clipforge.zeroshot").joinpath("data")
    assert "MIT License" in data.joinpath("LICENSE.openai-clip.txt").read_text()
    if not (SHARED / "prompts").is_dir():
        pytest.skip(f"{SHARED / 'prompts'} is absent")
    for name in ("openai_imagenet_classes.json", "openai_imagenet_templates.json",
                 "openai_prompts_all_datasets.json", "LICENSE.openai-clip.txt"):
        assert data.joinpath(name).read_bytes() == (SHARED / "prompts" / name).read_bytes(), name


def test_template_inputs(tmp_path):
    assert get_templates("a blurry photo of a {}.") == ["a blurry photo of a {}."]
    assert get_templates(["{} here", "there is a {}"]) == ["{} here", "there is a {}"]
    (tmp_path / "t.json").write_text(json.dumps(["x {}", "y {}"]))
    assert get_templates(str(tmp_path / "t.json")) == ["x {}", "y {}"]
    (tmp_path / "t.txt").write_text("# comment\nphoto of {}\n\nimage of {}\n")
    assert get_templates(str(tmp_path / "t.txt")) == ["photo of {}", "image of {}"]


def test_template_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown template set 'nonsense'"):
        get_templates("nonsense")
    with pytest.raises(ValueError, match="exactly once"):
        get_templates(["a photo"])
    with pytest.raises(ValueError, match=r"exactly once.*\{\} and \{\}"):
        get_templates(["{} and {}", "a {}"])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        get_templates(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        get_templates(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="no class names for dataset 'nope'"):
        get_classnames("nope")


def test_cub_names(tmp_path):
    assert clean_cub_classname("001.Black_footed_Albatross") == "Black footed Albatross"
    assert clean_cub_classname("200.Common_Yellowthroat") == "Common Yellowthroat"
    (tmp_path / "classes.txt").write_text("2 002.Laysan_Albatross\n1 001.Black_footed_Albatross\n")
    assert cub_classnames(tmp_path) == ["Black footed Albatross", "Laysan Albatross"]
    assert get_classnames("cub", root=tmp_path) == ["Black footed Albatross", "Laysan Albatross"]
    (tmp_path / "classes.txt").write_text("oops\n")
    with pytest.raises(ValueError, match=r"classes.txt:1: expected"):
        cub_classnames(tmp_path)
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        cub_classnames(tmp_path / "nowhere")


def test_cub_names_from_real_classes_txt():
    root = SHARED / "cub200_2011_mini"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    names = cub_classnames(root)
    assert len(names) == 200
    assert names[0] == "Black footed Albatross" and names[-1] == "Common Yellowthroat"
    assert not any("_" in n or n[0].isdigit() for n in names)
