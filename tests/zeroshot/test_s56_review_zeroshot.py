"""Review of the session-56 zero-shot changes (ba31a5e): what the context fallback and the cut counts cost, and
whether the counts are exact.

- Cost: `tag`'s and `classify`'s default templates and `eval zeroshot`'s ``prompts_cut`` tokenized every prompt
  of every candidate set, fully, two or three times (the default's count, `fitting_set` from the largest set
  down, then the cut notice counted the same prompts again and ran `fitting_set` a second time for its advice).
  1,000 ImageNet labels: `tag` on clipforge-tiny-zh 6.1 s -> 24.7 s, `classify` 2.3 s -> 17 s. Now the prompts
  of the set used are tokenized once, and a candidate set that cuts a label is dropped at its first cut (its
  longest prompts are tried first). Counted here by the texts given to `cut_texts` (never by time).
- Exactness: a prompt's label was found with ``prompt.find(label)``, the first occurrence, so a label that is
  also a word of its template ("photo" in "photo photo ... {}", zh-imagenet's "漫画{}。" for the class 漫画)
  was measured at the template's word, and counted kept; `eval retrieval`'s ``captions_cut`` tested each caption
  by its first 8 characters per token of context, so "photographs photographs ..." (128 characters in 14
  tokens, 20 words) was counted whole. Both are now tested on the text the model reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clipforge.cli.main import main
from tests.chinese.chinese_files import write_photos

LONG = "a very fluffy orange tabby cat sleeping on a sofa in the afternoon sun"  # cut even in "a photo of a {}."


@pytest.fixture(scope="module")
def names() -> list[str]:
    from clipforge.zeroshot.prompts import get_classnames

    return [*get_classnames("imagenet")[:100], LONG]


@pytest.fixture()
def counted(monkeypatch) -> list[int]:
    """How many texts each `cut_texts` call is given (the tokenizer's work of every cut test)."""
    import clipforge.text.context_cut as context_cut

    calls: list[int] = []
    real = context_cut.cut_texts

    def counting(tokenizer, texts):
        calls.append(len(texts))
        return real(tokenizer, texts)

    monkeypatch.setattr(context_cut, "cut_texts", counting)
    return calls


def _through_label(templates: str, labels: list[str]) -> int:
    """Distinct prompts of `templates` up to the end of their label: what one pass of the cut test reads."""
    from clipforge.zeroshot.prompts import get_templates

    return len({t.split("{}")[0] + label for t in get_templates(templates) for label in labels})


def test_tag_tokenizes_the_default_prompts_once(names: list[str], counted: list[int], tmp_path: Path,
                                                capsys) -> None:
    write_photos(tmp_path / "photos", ["a.png"])
    lib = str(tmp_path / "lib")
    assert main(["index", "add", str(tmp_path / "photos"), "--library", lib, "--model", "clipforge-tiny", "-q"]) == 0
    counted.clear()
    capsys.readouterr()
    labels = [*names[:5], LONG]  # 480 prompts (the text tower embeds them all)
    assert main(["tag", "--labels", ",".join(labels), "--library", lib, "--json"]) == 0
    err = capsys.readouterr().err.splitlines()
    once = _through_label("imagenet", labels)
    assert once == 480
    # one pass over the default's prompts, and a first look at each smaller set (each cuts LONG): no second pass
    assert sum(counted) <= once + 600, counted  # was 2,232: 480 three times, and the smaller sets twice
    cut = [line for line in err if "lose their label" in line]
    assert cut == ["notice: model clipforge-tiny reads 16 tokens of a text: 80 of the 480 prompts lose their label "
                   "to that cut (e.g. 'a bad photo of a a v… the afternoon sun.') and score every label alike; no "
                   "shipped template set keeps every label: shorter labels or a model with a longer context do"]


def test_classify_default_costs_one_pass(names: list[str], counted: list[int], tmp_path: Path, capsys) -> None:
    photo = write_photos(tmp_path, ["p.png"])[0]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(names), encoding="utf-8")
    assert main(["classify", str(photo), "--labels-file", str(labels), "--model", "clipforge-tiny", "--json"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert sum(counted) <= _through_label("simple", names) + 600, counted  # was 21,000 (two fitting_set runs)
    assert [line for line in err if "lose their label" in line] == [
        "notice: model clipforge-tiny reads 16 tokens of a text: 1 of the 101 prompts lose their label to that cut "
        "(e.g. 'a photo of a a very … the afternoon sun.') and score every label alike; no shipped template set keeps "
        "every label: shorter labels or a model with a longer context do"]


def test_eval_prompts_cut_costs_one_pass(names: list[str], counted: list[int]) -> None:
    import clipforge
    from clipforge.evaluate.text_cut import prompts_cut
    from clipforge.zeroshot.prompts import get_templates

    model = clipforge.load_model("clipforge-tiny", "cpu").model
    field, notice = prompts_cut(names, get_templates("imagenet"), model, "clipforge-tiny", "imagenet")
    # 86: `unread_part` of each prompt up to its label, one at a time, says the same (and the first, in label order)
    assert field == {"prompts_losing_label": 86, "prompts": 8080, "context_length": 16,
                     "example": "a jpeg corrupted photo of a desert grassland whiptail lizard."}
    assert notice is not None and notice.endswith("no shipped template set keeps every label: shorter labels or a "
                                                  "model with a longer context do")
    assert sum(counted) <= _through_label("imagenet", names) + 600, counted


def test_a_label_that_is_also_a_word_of_its_template_is_measured_where_it_stands(tmp_path: Path, capsys) -> None:
    """"photo" in "photo photo ... {}" was found at the template's first word: 1 of the 2 prompts was said cut."""
    photo = write_photos(tmp_path, ["p.png"])[0]
    template = "photo " * 14 + "{}"  # 14 tokens, then the label: cut after sot + 14 in 16 tokens
    assert main(["classify", str(photo), "--labels", "photo,dog", "--templates", template,
                 "--model", "clipforge-tiny"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "lose their label" in line]
    assert len(lines) == 1 and lines[0].startswith(
        "notice: model clipforge-tiny reads 16 tokens of a text: 2 of the 2 prompts lose their label to that cut "
        "(e.g. 'photo photo photo ph…o photo photo photo')"), lines


def test_eval_measures_a_class_named_like_its_template_where_it_stands() -> None:
    """zh-imagenet has "漫画{}。" and ImageNet the class 漫画: the label is the second 漫画, not the first."""
    import clipforge
    from clipforge.evaluate.text_cut import prompts_cut
    from clipforge.text.context_cut import unread_part

    loaded = clipforge.load_model("clipforge-tiny-zh", "cpu")
    template = "漫画风格的一张很大很大的{}"
    assert all(unread_part(loaded.tokenizer, template.format(name)) for name in ("漫画", "猫"))  # both labels cut
    field, notice = prompts_cut(["漫画", "猫"], [template], loaded.model, "clipforge-tiny-zh", template)
    assert field == {"prompts_losing_label": 2, "prompts": 2, "context_length": 16,
                     "example": "漫画风格的一张很大很大的漫画"}
    assert notice is not None and notice.startswith("notice: model clipforge-tiny-zh reads 16 tokens of a text: 2 "
                                                    "of the 2 prompts lose their label to that cut")
    from clipforge.zeroshot.prompt_fit import template_label_ends

    assert template_label_ends(["漫画{}。", "一张{}的照片"], ["漫画", "猫"]) == {
        "漫画漫画": "漫画漫画。", "一张漫画": "一张漫画的照片", "漫画猫": "漫画猫。", "一张猫": "一张猫的照片"}


def test_captions_cut_is_exact_whatever_the_words(tmp_path: Path) -> None:
    """Each caption is tested whole: the start probe (128 characters for 16 tokens) read long words whole."""
    import clipforge
    from clipforge.evaluate.text_cut import captions_cut
    from clipforge.text.context_cut import unread_part

    loaded = clipforge.load_model("clipforge-tiny", "cpu")
    texts = ["photographs " * 20, "mountains " * 30, "a" + " " * 200 + " b c d e f g h i j k l m n o p q r s",
             "a dog runs on the grass", "x" * 40, "photographs " * 20]
    expected = [t for t in dict.fromkeys(texts) if unread_part(loaded.tokenizer, t)]
    assert len(expected) == 3
    field, notice = captions_cut(texts, loaded.model, "clipforge-tiny")
    assert field == {"captions_cut": 3, "captions": 5, "context_length": 16, "example": expected[0]}
    assert notice == ("notice: model clipforge-tiny reads 16 tokens of a text: 3 of the 5 captions are longer and "
                      "were embedded by their beginning only (e.g. 'photographs photogra…graphs photographs '); the "
                      "recalls measure those beginnings")
