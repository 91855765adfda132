"""Audit 56, finding 5: `eval zeroshot` and `eval retrieval` never said that the model's context cut text.

clipforge-tiny-zh reads 16 tokens: zh-imagenet's long templates lose the label in a third of ImageNet's prompts,
and about a quarter of Flickr8k's captions are embedded by their beginning only; classify, tag and search say such
things in one line. Now both evaluations count them in the report (``prompts_cut``, ``captions_cut``) and say them
in one notice line, by the tests those commands use (`prompt_fit.templates_cut`, `text.context_cut.cut_texts`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clipforge.cli.main import main

LONG = "a small red square drawn in the middle of a white page with a thin black border around it"
LONG2 = "two people walking a brown dog along the beach at sunset while the waves roll in behind them"


@pytest.fixture()
def classes(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "数据集"
    for name, rgb in (("bird", (200, 30, 30)), ("cat", (30, 200, 30)), ("dog", (30, 30, 200))):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), rgb).save(root / name / "0.png")
    names = tmp_path / "类名.txt"
    names.write_text("鸟\n猫\n狗\n", encoding="utf-8")
    return root, names


def _expected_lost(templates: str, names: list[str]) -> int:
    """Distinct prompts whose label clipforge-tiny-zh's context cuts, by the one-text test (`unread_part`)."""
    import clipforge
    from clipforge.text.context_cut import unread_part
    from clipforge.zeroshot.prompts import get_templates

    tokenizer = clipforge.load_model("clipforge-tiny-zh", "cpu").tokenizer
    lost = set()
    for name in names:
        for template in get_templates(templates):
            prompt = template.format(name)
            if unread_part(tokenizer, prompt[: prompt.find(name) + len(name)]):
                lost.add(prompt)
    return len(lost)


def test_eval_zeroshot_counts_and_says_the_prompts_that_lose_their_label(classes, tmp_path: Path, capsys) -> None:
    root, names = classes
    base = ["eval", "zeroshot", "--model", "clipforge-tiny-zh", "--dataset", "folder", "--root", str(root),
            "--classnames", str(names), "--workers", "0", "--out", str(tmp_path / "out"), "--json"]
    assert main([*base, "--templates", "zh-imagenet"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    lost = _expected_lost("zh-imagenet", ["鸟", "猫", "狗"])
    assert lost == 24  # of 234 distinct prompts (zh-imagenet repeats some templates)
    assert report["prompts_cut"] == {"prompts_losing_label": lost, "prompts": 234, "context_length": 16,
                                     "example": "一张干净的鸟的照片。"}
    line = ("notice: model clipforge-tiny-zh reads 16 tokens of a text: 24 of the 234 prompts lose their label to "
            "that cut (e.g. '一张干净的鸟的照片。') and score every label alike; a shorter template set fits "
            "(--templates zh-cifar10)")
    assert report["cut_notice"] == line and captured.err.splitlines().count(line) == 1
    assert line in Path(report["files"]["log"]).read_text(encoding="utf-8")
    # a set that keeps every label: counted (0), nothing said
    assert main([*base, "--templates", "zh-cifar10"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["prompts_cut"] == {"prompts_losing_label": 0, "prompts": 33, "context_length": 16}
    assert "cut_notice" not in report and "lose their label" not in captured.err


def test_eval_retrieval_counts_and_says_the_captions_cut(tmp_path: Path, capsys) -> None:
    (tmp_path / "images").mkdir()
    rows = ["image,caption"]
    for name, rgb in (("red", (220, 20, 20)), ("green", (20, 200, 20)), ("blue", (20, 20, 220))):
        Image.new("RGB", (24, 24), rgb).save(tmp_path / "images" / f"{name}.png")
        rows += [f"{name}.png,a {name} square", f"{name}.png,{LONG if name == 'red' else 'plain ' + name}"]
    rows.append(f"blue.png,{LONG2}")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["eval", "retrieval", "--model", "clipforge-tiny", "--captions", str(tmp_path / "captions.csv"),
                 "--workers", "0", "--out", str(tmp_path / "out"), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["captions_cut"] == {"captions_cut": 2, "captions": 7, "context_length": 16, "example": LONG}
    line = ("notice: model clipforge-tiny reads 16 tokens of a text: 2 of the 7 captions are longer and were embedded "
            "by their beginning only (e.g. 'a small red square d…ck border around it'); the recalls measure those "
            "beginnings")
    assert report["cut_notice"] == line and line in captured.err.splitlines()


def test_captions_cut_tests_every_caption_past_the_trainers_sample(monkeypatch) -> None:
    """The trainer samples `SAMPLE` captions; an evaluation tests every caption whole, whatever `SAMPLE` is."""
    import clipforge
    import clipforge.train.captions_cut as captions_module
    from clipforge.evaluate.text_cut import captions_cut
    from clipforge.text.context_cut import unread_part

    model = clipforge.load_model("clipforge-tiny", "cpu")
    texts = [f"photo {i}" for i in range(5)] + [f"{LONG} number {i}" for i in range(4)] + [LONG2, "photo 0"]
    monkeypatch.setattr(captions_module, "SAMPLE", 3)
    field, notice = captions_cut(texts, model.model, "clipforge-tiny")
    expected = sum(1 for t in dict.fromkeys(texts) if unread_part(model.tokenizer, t))
    assert expected == 5 and field["captions_cut"] == expected and field["captions"] == 10
    assert notice is not None and notice.startswith("notice: model clipforge-tiny reads 16 tokens of a text: 5 of ")
