"""A Chinese-writing user, end to end: what tripped them, each case as it was met.

- `clipforge classify --model 中文模型.pt` (a Chinese-CLIP checkpoint file) said the Chinese labels were "written
  in zh but model 中文模型.pt was trained for en only": the notice was asked about the `--model` string, which
  names no language, not about the model the command had loaded (which says `languages == ("zh",)`).
- Chinese labels with a prompt set that has a Chinese twin (`tag`'s default `imagenet`, `--templates cifar10`)
  were prompted "a bad photo of a 猫." (only `simple` became "一张{}的照片"); and `eval zeroshot --classnames 中文`
  with an English model reported the template "a photo of a {}." while it prompted with "一张{}的照片".
- `clipforge search` cut a query longer than the model's context without a word: with the shipped bilingual
  model (16 tokens) "一只在沙发上睡觉的猫" searched "一只在沙发" and found the same photos as "...睡觉的狗".
- `eval zeroshot --classnames 类名.txt` with the names on one line ("飞机，汽车，...") or a name repeated said
  "1 class names given for 10 classes of folder": no file, no hint of what was expected.
- `classify --labels-file` with the labels on one line ("猫，狗，鸟", as `--labels` takes them) classified one
  label, "猫，狗，鸟", at 100%.
- Query arithmetic typed with a Chinese input method ('“猫” - “狗”') kept the curly quotes in the texts, which
  Chinese-CLIP's vocabulary does not hold ([UNK]: "57% of the query is outside the model's vocabulary").
- A template typed in full-width mode ("一张｛｝的照片") was "an unknown template set", and the message asked
  for the '{}' the user believed they had typed; a labels file saved by Notepad as "Unicode" (UTF-16 with a
  byte-order mark) was "not UTF-8 text (byte 0xff)" although its BOM names its encoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clipforge.cli.main import main
from tests.chinese.chinese_files import folder_dataset, write_photos


@pytest.fixture(scope="module")
def chinese_checkpoint(tmp_path_factory) -> Path:
    """A small Chinese-CLIP saved as cn_clip saves its checkpoints (fp16, DDP names), under a Chinese file name."""
    pytest.importorskip("transformers")
    from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip

    torch.manual_seed(0)
    config = chinese_clip_config("cn-ViT-B-16", vision_layers=1, vision_width=64, image_resolution=32, embed_dim=32,
                                 text_num_hidden_layers=1, text_hidden_size=64, text_intermediate_size=128,
                                 text_num_attention_heads=2)
    state = {f"module.{k}": v.half() for k, v in create_chinese_clip(config).state_dict().items()}
    path = tmp_path_factory.mktemp("模型") / "中文模型.pt"
    torch.save({"epoch": 1, "step": 10, "state_dict": state}, path)
    return path


def test_classify_with_a_chinese_clip_checkpoint_file_says_nothing_about_its_language(
        chinese_checkpoint: Path, tmp_path: Path, capsys) -> None:
    image = write_photos(tmp_path / "照片", ["猫.png"])[0]
    assert main(["classify", str(image), "--labels", "猫，狗", "--model", str(chinese_checkpoint)]) == 0
    captured = capsys.readouterr()
    assert "trained for en only" not in captured.err, captured.err
    assert "猫" in captured.out
    assert main(["classify", str(image), "--labels", "猫，狗", "--model", str(chinese_checkpoint), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["templates"] == ["一张{}的照片"] and "notice" not in out  # the JSON report is as it was
    # an English model still gets the notice, and --quiet still silences it
    assert main(["classify", str(image), "--labels", "猫，狗", "--model", "clipforge-tiny"]) == 0
    assert "trained for en only" in capsys.readouterr().err
    assert main(["classify", str(image), "--labels", "猫，狗", "--model", "clipforge-tiny", "-q"]) == 0
    assert "notice" not in capsys.readouterr().err


def test_chinese_labels_take_the_chinese_twin_of_a_prompt_set() -> None:
    from clipforge.zeroshot.languages import language_templates, templates_for_labels
    from clipforge.zeroshot.prompts import get_templates

    labels = ["猫", "狗"]
    assert get_templates(templates_for_labels("imagenet", labels)) == language_templates("zh-imagenet")
    assert templates_for_labels("ImageNet", labels) == "zh-imagenet"
    assert templates_for_labels("cifar10", labels) == "zh-cifar10"
    assert templates_for_labels("CIFAR100", labels) == "zh-cifar100"
    assert templates_for_labels("simple", labels) == "zh-simple"  # as before
    assert templates_for_labels("zh-imagenet", labels) == "zh-imagenet"
    assert templates_for_labels("imagenet7", labels) == "imagenet7"  # no Chinese twin: as asked
    assert templates_for_labels("imagenet", ["猫", "dog"]) == "imagenet"  # not every label is Chinese
    assert templates_for_labels("imagenet", ["cat", "dog"]) == "imagenet"
    assert templates_for_labels("a sketch of a {}.", labels) == "a sketch of a {}."  # a template of one's own


def test_tag_prompts_chinese_labels_in_chinese(tmp_path: Path, capsys, monkeypatch) -> None:
    from clipforge.zeroshot import classifier as classifier_module
    from clipforge.zeroshot.languages import language_templates

    write_photos(tmp_path / "照片", ["a.png", "b.png"])
    lib = str(tmp_path / "图库")
    assert main(["index", "add", str(tmp_path / "照片"), "--library", lib, "--model", "clipforge-tiny-zh", "-q"]) == 0
    used: list[list[str]] = []
    real = classifier_module.ZeroShotClassifier.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        used.append(self.templates)

    monkeypatch.setattr(classifier_module.ZeroShotClassifier, "__init__", spy)
    # imagenet named (tag's default set; unnamed, clipforge-tiny-zh's 16 tokens take zh-cifar10: test_s56_audit_templates)
    assert main(["tag", "--labels", "猫，狗", "--templates", "imagenet", "--library", lib, "-q"]) == 0
    assert used and used[-1] == language_templates("zh-imagenet"), used[-1][:2]


@pytest.fixture()
def chinese_folder_dataset(tmp_path: Path) -> tuple[Path, Path]:
    return folder_dataset(tmp_path)


def test_eval_reports_the_templates_it_prompted_with(chinese_folder_dataset, tmp_path: Path, capsys) -> None:
    root, names = chinese_folder_dataset
    assert main(["eval", "zeroshot", "--model", "clipforge-tiny", "--dataset", "folder", "--root", str(root),
                 "--classnames", str(names), "--out", str(tmp_path / "结果"), "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["templates"]["templates"] == ["一张{}的照片"], report["templates"]  # what the classifier used
    assert report["templates"]["spec"] == "zh-simple" and report["classnames"] == ["鸟", "猫", "狗"]


@pytest.mark.parametrize(("content", "expected"), [
    ("鸟，猫，狗\n", "'鸟，猫，狗' holds 3 names separated by commas: put each class name on a line of its own"),
    ("鸟\n猫\n猫\n狗\n", "'猫' is repeated"),
    ("鸟\n猫\n", "expected one name per line for each class, in the order of the dataset's classes (bird, cat, dog)"),
])
def test_eval_classnames_file_that_does_not_fit_is_named(chinese_folder_dataset, tmp_path: Path, capsys,
                                                          content: str, expected: str) -> None:
    root, _ = chinese_folder_dataset
    names = tmp_path / "我的类名.txt"
    names.write_text(content, encoding="utf-8")
    code = main(["eval", "zeroshot", "--model", "clipforge-tiny-zh", "--dataset", "folder", "--root", str(root),
                 "--classnames", str(names), "--out", str(tmp_path / "结果"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: class names file {names}: ") and "for the 3 classes of folder" in err, err
    assert expected in err, err


def test_classify_labels_file_with_the_labels_on_one_line(tmp_path: Path, capsys) -> None:
    image = write_photos(tmp_path, ["p.png"])[0]
    labels = tmp_path / "标签.txt"
    labels.write_text("猫，狗、鸟\n", encoding="utf-8")
    assert main(["classify", str(image), "--labels-file", str(labels), "--model", "clipforge-tiny-zh", "--json"]) == 0
    captured = capsys.readouterr()
    assert sorted(json.loads(captured.out)["results"][0]["labels"]) == ["狗", "猫", "鸟"]
    assert "one label" not in captured.err and "read as 3 labels" in captured.err


@pytest.mark.parametrize("line", ["Washington, D.C.", '["Washington, D.C."]'])
def test_a_one_line_labels_file_with_an_ascii_comma_is_one_label(tmp_path: Path, capsys, line: str) -> None:
    """An ASCII comma may be part of a label: "Washington, D.C." was scored as "Washington" and "D.C.", and a JSON
    list saved as .txt as '["Washington' and 'D.C."]'."""
    image = write_photos(tmp_path, ["p.png"])[0]
    labels = tmp_path / "one.txt"
    labels.write_text(line + "\n", encoding="utf-8")
    assert main(["classify", str(image), "--labels-file", str(labels), "--model", "clipforge-tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["labels"] == [line]


def _texts(query: str) -> list[tuple[float, str, str]]:
    from clipforge.library.query import parse_query

    return [(t.weight, t.kind, t.value) for t in parse_query(query, is_image=lambda _: False)]


def test_query_arithmetic_with_chinese_quotes() -> None:
    expected = [(1.0, "text", "猫"), (-1.0, "text", "狗")]
    assert _texts('"猫" - "狗"') == expected
    assert _texts("“猫” - “狗”") == expected  # what a Chinese input method types for "
    assert _texts("「猫」 -「狗」") == expected
    assert _texts("2:‘猫’ + 『狗』") == [(2.0, "text", "猫"), (1.0, "text", "狗")]
    assert _texts("“在沙发上-睡觉”的猫") == [(1.0, "text", "“在沙发上-睡觉”的猫")]  # a quote inside words is text
    assert _texts("一只叫“咪咪”的猫") == [(1.0, "text", "一只叫“咪咪”的猫")]
    assert _texts("“猫 - 狗") == [(1.0, "text", "“猫"), (-1.0, "text", "狗")]  # left open: text, as before


def test_search_says_when_the_query_is_cut_by_the_context(tmp_path: Path, capsys) -> None:
    write_photos(tmp_path / "照片", ["a.png", "b.png"])
    lib = str(tmp_path / "图库")
    assert main(["index", "add", str(tmp_path / "照片"), "--library", lib, "--model", "clipforge-tiny-zh", "-q"]) == 0
    capsys.readouterr()
    assert main(["search", "一只在沙发上睡觉的猫", "--library", lib, "-k", "1"]) == 0  # 16 tokens: ~4 characters
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert ("notice: model clipforge-tiny-zh reads 16 tokens of a text: only '一只在沙发上' of the query was searched "
            "('睡觉的猫' was cut off); shorten it") in err, err
    assert main(["search", "一只猫", "--library", lib, "-k", "1"]) == 0
    assert "cut off" not in capsys.readouterr().err
    assert main(["search", '"一只在沙发上睡觉的猫" - "狗"', "--library", lib, "-k", "1", "-q"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: no notices
    assert main(["search", '"一只在沙发上睡觉的猫" - "狗"', "--library", lib, "-k", "1"]) == 0  # each text term
    assert "only '一只在沙发上' of the query" in capsys.readouterr().err


def test_similarity_says_which_texts_are_cut(tmp_path: Path, capsys) -> None:
    image = write_photos(tmp_path, ["p.png"])[0]
    assert main(["similarity", str(image), "--text", "一只在沙发上睡觉的猫", "--text", "狗", "--model",
                 "clipforge-tiny-zh"]) == 0
    err = capsys.readouterr().err
    assert "only '一只在沙发上' of the text was read ('睡觉的猫' was cut off)" in err, err


def test_cut_point_of_every_tokenizer_kind(chinese_checkpoint: Path) -> None:
    from clipforge.api import load_model
    from clipforge.text.context_cut import unread_part

    tiny = load_model("clipforge-tiny-zh", device="cpu").tokenizer  # OpenAI's byte-level BPE, 16 tokens
    assert unread_part(tiny, "一只猫") == ""
    assert unread_part(tiny, "一只在沙发上睡觉的猫") == "睡觉的猫"  # 一只在沙发上: 13 byte tokens + 2
    chinese = load_model(str(chinese_checkpoint), device="cpu").tokenizer  # WordPiece, 52: one per character
    text = "猫" * 50
    assert unread_part(chinese, text) == ""  # 50 + [CLS] + [SEP] fit exactly
    assert unread_part(chinese, text + "狗的") == "狗的"


def test_full_width_braces_in_a_template_are_named(tmp_path: Path) -> None:
    from clipforge.zeroshot.prompts import TemplateError, get_templates

    hint = "full-width braces '｛｝'"
    with pytest.raises(ValueError, match=hint):
        get_templates("一张｛｝的照片")
    path = tmp_path / "模板.txt"
    path.write_text("一张{}的照片\n一张｛｝的图片\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=hint):
        get_templates(str(path))


def test_a_utf16_labels_file_with_its_byte_order_mark_is_read(tmp_path: Path) -> None:
    from clipforge.zeroshot.files import read_labels_file

    for codec in ("utf-16", "utf-16-le", "utf-16-be"):
        bom = {"utf-16": b"", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}[codec]
        path = tmp_path / f"{codec}.txt"
        path.write_bytes(bom + "猫\r\n狗\r\n".encode(codec))  # Notepad's "Unicode", Excel's "Unicode text"
        assert read_labels_file(path) == ["猫", "狗"], codec


def test_a_curly_quoted_phrase_followed_by_words_is_still_one_text() -> None:
    """Curly quotes (an editor's, or a Chinese input method's) quote a term only where an operator or the end
    follows: '“Starry Night” painting' was refused ("expected + or - between terms"), where it had been searched
    as one text, as before the Chinese quotes quoted."""
    from clipforge.library.query import parse_query

    for query in ("“Starry Night” painting", "‘Hello’ sign on a door", "“猫” 在草地上", "“cat” “dog”"):
        assert [(t.kind, t.value) for t in parse_query(query, lambda _: False)] == [("text", query)], query
    assert [(t.weight, t.value) for t in parse_query("“猫” - “草地”", lambda _: False)] == [(1.0, "猫"), (-1.0, "草地")]
    assert [(t.weight, t.value) for t in parse_query("“猫”", lambda _: False)] == [(1.0, "猫")]
