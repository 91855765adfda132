"""Prompts a model's context cuts: `classify` says so, as `search` says it of a query.

clipforge-tiny-zh reads 16 tokens of a text. Chinese-CLIP's 80 zh-imagenet templates mostly outgrow that, so
each label was scored by its prompts' openings ("质量差的…"): a cat photo got 47% "猫" against 94% with
"一张{}的照片", and nothing said why.
"""

from __future__ import annotations

from pathlib import Path

from clipforge.cli.main import main


def test_classify_says_when_its_prompts_are_cut(tmp_path: Path, capsys) -> None:
    from PIL import Image

    image = tmp_path / "p.png"
    Image.new("RGB", (32, 32), (200, 20, 20)).save(image)
    assert main(["classify", str(image), "--labels", "猫,狗", "--templates", "zh-imagenet",
                 "--model", "clipforge-tiny-zh"]) == 0
    err = capsys.readouterr().err
    assert "notice: model clipforge-tiny-zh reads 16 tokens of a text: " in err
    assert "prompts lose their label to that cut (e.g. '" in err and "fits (--templates zh-cifar10)" in err
    assert main(["classify", str(image), "--labels", "猫,狗", "--model", "clipforge-tiny-zh"]) == 0
    assert "lose their label" not in capsys.readouterr().err  # zh-simple's cut "片" keeps every label
    assert main(["classify", str(image), "--labels", "cat,dog", "--templates", "imagenet", "--model",
                 "clipforge-tiny-zh", "--quiet"]) == 0
    assert "lose their label" not in capsys.readouterr().err


def test_cut_texts_agrees_with_unread_part() -> None:
    import clipforge
    from clipforge.text.context_cut import cut_texts, unread_part

    tokenizer = clipforge.load_model("clipforge-tiny-zh", "cpu").tokenizer
    texts = ["猫", "一张猫的照片", "一只在沙发上睡觉的猫", "a photo of a cat.", "a bad photo of the big red cat.",
             "a bad photo of the big red cat sitting on the old brown sofa.", ""]
    assert cut_texts(tokenizer, texts) == [t for t in texts if t and unread_part(tokenizer, t)]
    assert cut_texts(tokenizer, texts) == [
        "一张猫的照片", "一只在沙发上睡觉的猫", "a bad photo of the big red cat sitting on the old brown sofa."]
