"""Prompts a model's text context cuts before their label: counted, said, and avoided in a command's default.

A model reads `context_length` tokens of a text and drops the rest (open_clip and cn_clip truncate the same way).
A prompt cut inside or before its label is the same text for every label, so it pulls the labels' scores together:
clipforge-tiny-zh reads 16 tokens, and 126 of the 780 prompts Chinese-CLIP's 80 ``zh-imagenet`` templates make
for the ten CIFAR-10 labels lose their label that way (`tag`'s default for Chinese labels: 71 of 100 CIFAR-10
photos tagged right, 82 with ``zh-cifar10``). This module owns four decisions:

- what counts as cut: a prompt whose text *up to the end of its label* the context cuts (`templates_cut`; the test
  `clipforge.text.context_cut.cut_texts` makes for every command); a cut after the label ("一张猫的照" for
  "一张猫的照片") costs nothing and is not counted. The label's end is where the template puts it
  (`template_label_ends`), not its first occurrence: "漫画{}。" for the class 漫画 reads "漫画漫画";
- which shipped set fits instead (`fitting_set`): the largest general-purpose set of the same language whose
  prompts all keep their label (`GENERAL_SETS`: a dataset's own set such as ``food101`` says "a type of food");
- when a command's default gives way to it (`choose_templates`): only a default, never a ``--templates`` the
  user named, and always with one notice line saying so;
- what it costs: the prompts of the set used are tokenized once (`cut_texts` reads each twice), in chunks that
  bound the memory its wide call takes, and a candidate set is dropped at its first cut, its longest prompts
  tried first. 1,000 ImageNet labels on clipforge-tiny-zh had been tokenized in full for every candidate set,
  and again for the cut notice: `tag` took 24.7 s where it had taken 6.1 s, `classify` 17 s where 2.3 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from clipforge.zeroshot.languages import set_language, templates_for_labels
from clipforge.zeroshot.prompts import TemplateError, check_prompts, check_template, get_templates

__all__ = ["GENERAL_SETS", "LabelCut", "TemplateChoice", "choose_templates", "default_templates", "fitting_set",
           "template_label_ends", "templates_cut", "templates_cut_notice"]

GENERAL_SETS: dict[str, tuple[str, ...]] = {
    "zh": ("zh-imagenet", "zh-cifar10", "zh-cifar100", "zh-simple"),
    "en": ("imagenet", "cifar10", "cifar100", "imagenet7", "simple"),
}
"""Shipped template sets that describe any photo (not one domain), by language, the first listed of equal ones
preferred: ``zh-cifar10`` and ``zh-cifar100`` are the same 11 templates."""

_CHUNK = 2048
"""Texts a `cut_texts` call is given: its wide call is 4 tokens a byte of the longest, so 80,000 ImageNet prompts
at once had been a 250 MB tensor."""
_FIRST_LOOK = 64
"""Texts of a candidate set looked at first (its longest): a set that cuts a label is nearly always dropped here."""
_FIELD = re.compile(r"\{\{|\}\}|\{\}")  # a validated template's literal braces and its one label field


@dataclass(frozen=True)
class LabelCut:
    """How many of a classifier's distinct prompts (`total`) lose their label to a context of `context` tokens
    (`lost`), with the first such prompt (`example`; None when none is lost)."""

    lost: int
    total: int
    context: int
    example: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report field (`eval zeroshot`'s JSON): counts and the context, the example when there is one."""
        out: dict[str, Any] = {"prompts_losing_label": self.lost, "prompts": self.total,
                               "context_length": self.context}
        return {**out, "example": self.example} if self.example else out


@dataclass(frozen=True)
class TemplateChoice:
    """A command's default templates for its labels (`choose_templates`): the set (`templates`), the notice when
    it is not the usual default (`notice`), and the cut notice of the set used (`cut_notice`, None when every
    label is kept), from the one count of the default's prompts: a command says it without counting again."""

    templates: Any
    notice: str | None = None
    cut_notice: str | None = None


def _unbrace(text: str) -> str:
    return text.replace("{{", "{").replace("}}", "}")


def _around(template: str) -> tuple[str, str]:
    """(the text a template puts before its label, the text after it): `check_template` allows exactly one
    ``{}`` beside literal ``{{`` and ``}}``, so head + label + tail is ``template.format(label)``."""
    for field in _FIELD.finditer(check_template(template)):
        if field.group() == "{}":
            return _unbrace(template[: field.start()]), _unbrace(template[field.end():])
    raise AssertionError(f"check_template passed {template!r} without a field")  # unreachable


def _ends(templates: Sequence[str], labels: Sequence[str]) -> tuple[dict[str, str], int]:
    """(each prompt up to the end of its label -> its first prompt, label by label; how many distinct prompts)."""
    around = [_around(t) for t in templates]
    ends: dict[str, str] = {}
    prompts: set[str] = set()
    for label in labels:
        for head, tail in around:
            prompt = head + label + tail
            prompts.add(prompt)
            ends.setdefault(head + label, prompt)
    return ends, len(prompts)


def template_label_ends(templates: Sequence[str], labels: Sequence[str]) -> dict[str, str]:
    """Each prompt of `templates` x `labels` up to the end of its label (where the template puts it) -> the first
    prompt it begins: the texts the cut test reads."""
    return _ends(templates, labels)[0]


def _longest_first(texts: Sequence[str], first: int) -> Iterator[list[str]]:
    """`texts` by length in UTF-8 bytes, longest first (the likeliest cut), in chunks of `first` texts, doubling
    up to `_CHUNK`."""
    ordered = sorted(texts, key=lambda text: len(text.encode("utf-8", "surrogatepass")), reverse=True)
    start, size = 0, first
    while start < len(ordered):
        yield ordered[start:start + size]
        start, size = start + size, min(2 * size, _CHUNK)


def _cut(texts: Sequence[str], tokenizer: Any, stop: bool = False) -> set[str]:
    """The texts `tokenizer`'s context cuts (`cut_texts`), in bounded chunks; `stop`: at the first chunk with one."""
    from clipforge.text.context_cut import cut_texts

    lost: set[str] = set()
    for chunk in _longest_first(texts, _FIRST_LOOK if stop else _CHUNK):
        lost.update(cut_texts(tokenizer, chunk))
        if stop and lost:
            break
    return lost


def templates_cut(templates: Any, labels: Sequence[str], tokenizer: Any) -> LabelCut:
    """The prompts of `templates` (anything `get_templates` takes) for `labels` whose label `tokenizer`'s context
    cuts, each distinct prompt counted once, the first in label order as the example: what every command says.
    A label too long for a prompt is refused first (`check_prompts`), untokenized."""
    resolved = get_templates(templates)
    check_prompts(resolved, labels)
    ends, total = _ends(resolved, labels)
    lost = _cut(list(ends), tokenizer)
    example = next((prompt for end, prompt in ends.items() if end in lost), None)
    return LabelCut(len(lost), total, int(getattr(tokenizer, "context_length", 0) or 0), example)


def fitting_set(language: str, labels: Sequence[str], tokenizer: Any, cutting: Sequence[Any] = ()) -> str | None:
    """The largest set of `GENERAL_SETS[language]` whose prompts for `labels` all keep their label under
    `tokenizer`'s context, else None (no shipped set fits: the labels themselves are too long). `cutting`: sets
    already known to cut a label (the default a command counted), not tokenized again. A set with a prompt longer
    than the limit for some label (`check_prompts`) does not fit: it cannot be used."""
    known = {tuple(get_templates(spec)) for spec in cutting}
    by_size: dict[tuple[str, ...], str] = {}
    for name in GENERAL_SETS.get(language, ()):
        by_size.setdefault(tuple(get_templates(name)), name)  # equal sets: the first listed
    for templates, name in sorted(by_size.items(), key=lambda item: -len(item[0])):
        if templates not in known and _fillable(templates, labels) and \
                not _cut(list(_ends(templates, labels)[0]), tokenizer, stop=True):
            return name
    return None


def _fillable(templates: Sequence[str], labels: Sequence[str]) -> bool:
    """Whether every prompt of `templates` for `labels` is within the length limit (`check_prompts`)."""
    try:
        check_prompts(templates, labels)
    except TemplateError:
        return False
    return True


def _language(templates: Any) -> str:
    """The language of a set name (``zh-...`` -> zh, else en)."""
    return set_language(templates) if isinstance(templates, str) else "en"


def _advice_language(templates: Any, labels: Sequence[str]) -> str:
    """The language of the set a cut notice suggests: the templates', else the labels' (all Chinese: zh)."""
    chinese = _language(templates) == "zh" or _language(templates_for_labels("simple", list(labels))) == "zh"
    return "zh" if chinese else "en"


def _cut_line(cut: LabelCut, name: str, shorter: str | None) -> str:
    """`classify`'s words for `cut` (lost > 0), suggesting the set `shorter` that keeps every label, if any."""
    from clipforge.text.width import shorten

    advice = (f"a shorter template set fits (--templates {shorter})" if shorter
              else "no shipped template set keeps every label: shorter labels or a model with a longer context do")
    return (f"notice: model {name} reads {cut.context} tokens of a text: {cut.lost} of the {cut.total} prompts lose "
            f"their label to that cut (e.g. {shorten(cut.example or '', 40)!r}) and score every label alike; {advice}")


def templates_cut_notice(templates: Any, labels: Sequence[str], tokenizer: Any, name: str,
                         spec: Any = None) -> tuple[LabelCut, str | None]:
    """(`templates_cut`, the one notice line when it is not nothing, else None): what `classify`, `tag` and `eval
    zeroshot` say of templates the user named, with the largest set that fits (`fitting_set`) in the language of
    `spec` (the set named, e.g. ``zh-imagenet``, when `templates` are its resolved list), else of the labels."""
    cut = templates_cut(templates, labels, tokenizer)
    if not cut.lost:
        return cut, None
    spec = templates if spec is None else spec
    shorter = fitting_set(_advice_language(spec, labels), labels, tokenizer, [templates])
    return cut, _cut_line(cut, name, shorter)


def choose_templates(default: str, labels: Sequence[str], tokenizer: Any, name: str) -> TemplateChoice:
    """The templates a command prompts `labels` with when the user named none, with what it says of them.

    `default` is the command's default set (``imagenet`` for `tag`, ``simple`` for `classify`), first put in the
    labels' language (`templates_for_labels`: Chinese labels take ``zh-imagenet``). When the model's context cuts
    labels out of its prompts and a shipped set of the same language keeps them all (`fitting_set`), that set is
    used instead and `notice` says so; otherwise the default stays and `cut_notice` tells what is lost. The
    default's prompts are counted once, before the model's text tower runs; a command reuses the count.
    """
    resolved = templates_for_labels(default, list(labels))
    if tokenizer is None:
        return TemplateChoice(resolved)
    if not isinstance(resolved, str):  # a list of templates given as the default: said, never replaced
        return TemplateChoice(resolved, cut_notice=templates_cut_notice(resolved, labels, tokenizer, name)[1])
    cut = templates_cut(resolved, labels, tokenizer)
    if not cut.lost:
        return TemplateChoice(resolved)
    fitting = fitting_set(_language(resolved), labels, tokenizer, [resolved])
    if fitting is None:
        return TemplateChoice(resolved, cut_notice=_cut_line(cut, name, None))
    count = len(get_templates(fitting))
    return TemplateChoice(fitting, (
        f"notice: model {name} reads {cut.context} tokens of a text, which cuts the label out of {cut.lost} of the "
        f"{cut.total} prompts of the default templates {resolved}; prompting with {fitting} ({count} "
        f"template{'s' if count != 1 else ''}, every label kept) instead (--templates {resolved} to use them "
        "anyway)"))


def default_templates(default: str, labels: Sequence[str], tokenizer: Any, name: str) -> tuple[Any, str | None]:
    """(`choose_templates`' templates, its notice or None)."""
    choice = choose_templates(default, labels, tokenizer, name)
    return choice.templates, choice.notice
