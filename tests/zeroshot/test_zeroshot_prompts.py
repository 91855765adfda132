"""Prompt package data: the exact OpenAI lists, forgiving lookups, clear errors."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from clipforge.zeroshot import (
    ZeroShotClassifier,
    build_class_embeddings,
    clean_cub_classname,
    cub_classnames,
    get_classnames,
    get_templates,
    list_datasets,
    list_template_sets,
)
from clipforge.zeroshot.prompts import (
    MAX_PROMPT_CHARS,
    MAX_TEMPLATE_CHARS,
    TEMPLATE_PATTERN,
    TemplateError,
    check_template,
    fill_template,
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
    (tmp_path / "imgs").mkdir()  # a folder was "unknown template set" too
    with pytest.raises(ValueError, match=r"--templates .*imgs: is a folder; expected a \.json or \.txt file"):
        get_templates(str(tmp_path / "imgs"))
    with pytest.raises(ValueError, match="exactly once"):
        get_templates(["a photo"])
    with pytest.raises(ValueError, match=r"template '\{\} and \{\}' is not a valid template.*exactly once"):
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


# Templates that str.format would read as more than "put the label here": format specs (the 1.5 GB
# allocation of `{:>1500000000}`), conversions, attribute and index access, numbered and named fields.
HOSTILE = ["{:>1500000000}{}", "{:>10}{}", "{!r}", "{0}", "{0.__class__}", "{[0]}", "{label}", "{}{}", "{:{}}",
           "{{}}", "}{}", "{}{", "no braces", "", "{ }"]


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_templates_are_refused_with_one_message_naming_them(template):
    with pytest.raises(TemplateError) as info:
        check_template(template)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert repr(template) in message and "exactly once" in message
    with pytest.raises(TemplateError):
        fill_template(template, "cat")
    if "{" in template or "}" in template:  # a string with braces is a template to get_templates, never a name
        with pytest.raises(TemplateError, match="is not a valid template"):
            get_templates(template)


def test_safe_templates_fill_only_the_label():
    assert fill_template("a photo of a {}.", "cat") == "a photo of a cat."
    assert fill_template("{{literal}} {} }}{{", "dog") == "{literal} dog }{"
    assert fill_template("{{{}}}", "x") == "{x}"
    assert fill_template("{}", "{0.__class__}") == "{0.__class__}"  # a label is never formatted itself
    assert get_templates("{{set}} of {}") == ["{{set}} of {}"]
    # The pattern published in the server's OpenAPI spec is the same rule, as a regular expression.
    import re

    assert all(re.search(TEMPLATE_PATTERN, t) for t in ["a {}", "{{x}} {}", *get_templates("imagenet")])
    assert not any(re.search(TEMPLATE_PATTERN, t) for t in HOSTILE)


def test_template_and_prompt_lengths_are_bounded():
    check_template("x" * (MAX_TEMPLATE_CHARS - 2) + "{}")
    with pytest.raises(TemplateError, match=f"more than the limit of {MAX_TEMPLATE_CHARS}"):
        check_template("x" * MAX_TEMPLATE_CHARS + "{}")
    with pytest.raises(TemplateError, match=f"more than the limit of {MAX_PROMPT_CHARS}"):
        fill_template("a {}", "y" * MAX_PROMPT_CHARS)
    with pytest.raises(TemplateError, match="is not a string"):
        check_template(3)


def test_template_file_with_a_format_spec_names_the_file(tmp_path):
    (tmp_path / "t.txt").write_text("photo of {}\n{:>99999999}{}\n")
    with pytest.raises(TemplateError, match=r"t.txt: template '\{:>99999999\}\{\}' is not a valid template"):
        get_templates(str(tmp_path / "t.txt"))


def test_classifier_and_class_embeddings_refuse_hostile_templates():
    import torch

    from clipforge.models import create_model_from_config, get_config

    model = create_model_from_config(get_config("test-vit-tiny")).eval()
    with pytest.raises(TemplateError, match=r"'\{:>1500000000\}\{\}'"):
        ZeroShotClassifier(model, ["cat", "dog"], ["{:>1500000000}{}"], use_cache=False, progress=False)
    with pytest.raises(TemplateError, match=r"'\{0\.__class__\}'"):  # the lower-level builder checks too
        build_class_embeddings(model, ["cat"], ["{0.__class__}"], progress=False)
    embeddings = build_class_embeddings(model, ["cat", "dog"], ["a {{fine}} {}"], progress=False)
    assert embeddings.shape == (2, model.embed_dim) and torch.isfinite(embeddings).all()


@pytest.mark.parametrize("flag", ["--templates", "--template"])
def test_cli_classify_refuses_a_format_spec_template_in_one_line(tmp_path, capsys, monkeypatch, flag):
    from PIL import Image

    from clipforge.cli.main import main

    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    code = main(["classify", str(tmp_path / "red.png"), "--labels", "cat,dog", flag, "{:>10}{}",
                 "--model", "test-vit-tiny", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [lines[-1]] and "'{:>10}{}' is not a valid template" in lines[-1], err
