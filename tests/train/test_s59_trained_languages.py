"""A checkpoint trained from clipforge-tiny-zh reads zh, en as its source did (`train.languages`).

Checkpoints recorded no languages, so one fine-tuned from clipforge-tiny-zh (and the `cifar10-bilingual`
recipe's own output, the run that made clipforge-tiny-zh) was taken for English: a Chinese query got
"notice: ... was trained for en only", and `eval zeroshot` / `eval suite` prompted in English by default. The
trainer now sets ``model.languages`` and every checkpoint records them (``clipforge_languages``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from clipforge.train.config import TrainConfig, TrainConfigError, build_config
from clipforge.zeroshot.languages import default_template_set, model_languages, query_notice

IMAGE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "imagenet_sample" / "images"


@pytest.fixture(scope="module")
def zh_run(tmp_path_factory, caption_folders) -> Path:
    """clipforge-tiny-zh fine-tuned for 2 steps (a checkpoint after each)."""
    from clipforge.train.trainer import Trainer

    out = tmp_path_factory.mktemp("zh_run")
    Trainer(TrainConfig(model="clipforge-tiny-zh", data="folder", root=str(caption_folders), batch_size=4, steps=2,
                        lr=1e-4, precision="fp32", tensorboard=False, device="cpu", out_dir=str(out),
                        save_every_steps=1)).fit()
    return out / "checkpoints"


def test_a_checkpoint_fine_tuned_from_clipforge_tiny_zh_reads_zh_and_en(zh_run) -> None:
    from clipforge.api import load_model

    path = zh_run / "model-step-2.safetensors"
    with safe_open(str(path), framework="np") as fh:
        assert json.loads(fh.metadata()["clipforge_languages"]) == ["zh", "en"]
    loaded = load_model(str(path))
    assert model_languages(loaded) == ("zh", "en")  # it said ("en",)
    assert model_languages(str(path)) == ("zh", "en")  # a spec, as `eval suite --models` reads it
    assert query_notice("一只猫", loaded) is None  # "trained for en only", before
    assert default_template_set("cifar10", model_languages(loaded), "cifar10") == "zh-cifar10"  # eval's default


def test_similarity_prints_no_language_notice_for_a_chinese_query(zh_run, capsys) -> None:
    from clipforge.cli.main import main

    image = IMAGE / "n02123045_tabby.JPEG"
    if not image.is_file():
        pytest.skip(f"shared test image missing: {image}")
    assert main(["similarity", str(image), "--text", "一只猫", "一只狗", "--model",
                 str(zh_run / "model-step-2.safetensors")]) == 0
    captured = capsys.readouterr()
    assert "trained for" not in captured.err and "notice: the query" not in captured.err
    assert "一只猫" in captured.out


def test_an_english_checkpoint_still_gets_the_notice(tmp_path, caption_folders) -> None:
    from clipforge.api import load_model
    from clipforge.train.trainer import Trainer

    Trainer(TrainConfig(model="clipforge-tiny", data="folder", root=str(caption_folders), batch_size=4, steps=1,
                        precision="fp32", tensorboard=False, device="cpu", out_dir=str(tmp_path))).fit()
    loaded = load_model(str(tmp_path / "checkpoints" / "model-step-1.safetensors"))
    assert model_languages(loaded) == ("en",)
    assert query_notice("一只猫", loaded).startswith("notice: the query '一只猫' is written in zh but model "
                                                    "model-step-1.safetensors was trained for en only;")


def test_wise_ft_of_two_zh_checkpoints_keeps_their_languages(zh_run, tmp_path) -> None:
    from clipforge.train.weight_interpolation import wise_ft

    out = wise_ft(zh_run / "model-step-1.safetensors", zh_run / "model-step-2.safetensors", 0.5,
                  tmp_path / "mix.safetensors")
    assert model_languages(str(out)) == ("zh", "en")


def test_the_bilingual_recipe_declares_the_languages_it_teaches() -> None:
    from clipforge.api import load_model
    from clipforge.train.languages import trained_languages

    config = build_config("cifar10-bilingual")
    assert config.languages == ["zh", "en"]  # clipforge-tiny-zh's languages.json, first language first
    start = load_model(config.model)
    assert model_languages(start) == ("en",)  # the recipe starts from the English clipforge-tiny
    assert trained_languages(config, start.model, start) == ("zh", "en")
    config.languages = None  # undeclared: the start's, then each training template set's language
    assert trained_languages(config, start.model, start) == ("en", "zh")


@pytest.mark.parametrize(("templates", "data", "weights", "expected"), [
    ("zh-cifar10", "labelled", "random (seed 0)", ("zh",)),  # random weights learn what they are taught
    (["A photo of a {}.", "a photo of the {}."], "labelled", "random (seed 0)", ("en",)),
    ("一张{}的照片", "labelled", "clipforge-tiny", ("en", "zh")),
    ("zh-cifar10", "csv", "clipforge-tiny", ("en",)),  # captions from files are not read for it
])
def test_undeclared_languages_follow_the_start_and_the_templates(templates, data, weights, expected) -> None:
    from clipforge.train.languages import trained_languages

    start = SimpleNamespace(model=torch.nn.Linear(1, 1), name="clipforge-tiny", weights=weights)
    config = TrainConfig(model="clipforge-tiny", data=data, templates=templates)
    assert trained_languages(config, start.model, start) == expected


def test_a_multilingual_start_stays_multilingual() -> None:
    from clipforge.train.languages import trained_languages

    start = SimpleNamespace(model=torch.nn.Linear(1, 1), name="test-worldwide-tiny", weights="x.safetensors")
    config = TrainConfig(model="test-worldwide-tiny", templates="zh-cifar10")
    assert trained_languages(config, start.model, start) == ("en", "multilingual")


@pytest.mark.parametrize(("value", "said"), [
    ("zh", "config field 'languages' must be a JSON list of str or null, got 'zh'"),
    ('[""]', "config field 'languages' must be a list of 1-8 language codes, the model's first language first "
             "(e.g. [\"zh\", \"en\"]), got ['']"),
])
def test_a_bad_languages_value_is_one_line(value, said) -> None:
    from clipforge.train.checks import check_config

    with pytest.raises(TrainConfigError) as raised:
        check_config(build_config(None, [f"languages={value}"]))
    assert str(raised.value) == said


def test_a_file_records_languages_and_a_bad_record_is_passed_over(tmp_path) -> None:
    from safetensors.torch import save_file

    from clipforge.weights.save import file_languages, save_safetensors

    model = torch.nn.Linear(2, 2)
    assert file_languages(save_safetensors(model.state_dict(), tmp_path / "plain.safetensors")) is None
    assert file_languages(save_safetensors(model.state_dict(), tmp_path / "zh.safetensors",
                                           languages=["zh", "en"])) == ("zh", "en")
    model.languages = ("zh",)  # a model's own languages are its default (Chinese-CLIP's loader sets them)
    assert file_languages(save_safetensors(model, tmp_path / "own.safetensors", config={})) == ("zh",)
    save_file({"w": torch.zeros(1)}, str(tmp_path / "bad.safetensors"), metadata={"clipforge_languages": "{"})
    assert file_languages(tmp_path / "bad.safetensors") is None
    assert model_languages(str(tmp_path / "bad.safetensors")) == ("en",)
    with pytest.raises(ValueError) as raised:
        save_safetensors(model.state_dict(), tmp_path / "x.safetensors", languages=["zh", " en"])
    assert str(raised.value) == "languages must be 1-8 language codes (e.g. ['zh', 'en']), got ['zh', ' en']"


def test_the_bare_loaded_model_reports_and_keeps_its_languages(tmp_path) -> None:
    """`clipforge.load(...)[0]` (the bare module) was taken for English, even for the shipped clipforge-tiny-zh,
    and saving it again through the Python API dropped the record."""
    import clipforge
    from clipforge.weights import save_safetensors
    from clipforge.weights.save import file_languages
    from clipforge.zeroshot.languages import model_languages

    bare, _ = clipforge.load("clipforge-tiny-zh")
    assert model_languages(bare) == ("zh", "en")
    again = save_safetensors(bare, tmp_path / "copy.safetensors")
    assert file_languages(again) == ("zh", "en")
    assert model_languages(clipforge.load(str(again))[0]) == ("zh", "en")
    assert model_languages(clipforge.load("clipforge-tiny")[0]) == ("en",)


def test_a_languages_file_in_the_working_folder_speaks_for_no_named_model(tmp_path, monkeypatch) -> None:
    """Review: `recorded_languages` looked beside any name, so a ./languages.json (the shipped clipforge-tiny-zh
    folder holds one: cd into it) made clipforge-tiny and RN50 Chinese, prompts and notices included."""
    from clipforge.zeroshot.languages import model_languages

    (tmp_path / "languages.json").write_text('{"languages": ["zh"]}', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert [model_languages(name) for name in ("clipforge-tiny", "RN50", "ViT-B/32")] == [("en",)] * 3
    assert model_languages("clipforge-tiny-zh") == ("zh", "en")
    assert model_languages(str(tmp_path)) == ("zh",)  # the folder itself, named: its file speaks for it


def test_wise_ft_and_save_hf_keep_the_languages_read(tmp_path) -> None:
    """Review: WiSE-FT of clipforge-tiny with a bilingual fine-tune kept only English (the zero-shot model's),
    even at alpha 1; `save_hf` of a zh, en model wrote no languages and reloaded as English."""
    from clipforge.api import load_model
    from clipforge.train.weight_interpolation import wise_ft
    from clipforge.weights import save_safetensors
    from clipforge.weights.hf import save_hf
    from clipforge.zeroshot.languages import model_languages

    tiny = load_model("clipforge-tiny", "cpu").model
    bilingual = save_safetensors(tiny, tmp_path / "bilingual.safetensors", languages=["zh", "en"])
    mixed = wise_ft("clipforge-tiny", bilingual, 1.0, tmp_path / "mixed.safetensors")
    assert model_languages(load_model(mixed, "cpu")) == ("zh", "en")
    vit = load_model("random:test-vit-tiny", "cpu").model  # save_hf writes ViT towers (clipforge-tiny is a ResNet)
    vit.languages = ["zh", "en"]
    folder = save_hf(vit, tmp_path / "hf")
    assert model_languages(load_model(folder, "cpu")) == ("zh", "en")
