"""Prompts a model's text context cuts before their label: counted, said, and avoided in a command's default.

A model reads `context_length` tokens of a text and drops the rest (open_clip and cn_clip truncate the same way).
A prompt cut inside or before its label is the same text for every label, so it pulls the labels' scores together:
clipforge-tiny-zh reads 16 tokens, and 126 of the 780 prompts Chinese-CLIP's 80 ``zh-imagenet`` templates make
for the ten CIFAR-10 labels lose their label that way (`tag`'s default for Chinese labels: 71 of 100 CIFAR-10
photos tagged right, 82 with ``zh-cifar10``). This module owns three decisions:

- what counts as cut: a prompt whose text *up to the end of its label* the context cuts (`label_cut`; the test
  `clipforge.text.families.cut_texts` makes for every command); a cut after the label ("一张猫的照" for
  "一张猫的照片") costs nothing and is not counted;
- which shipped set fits instead (`fitting_set`): the largest general-purpose set of the same language whose
  prompts all keep their label (`GENERAL_SETS`: a dataset's own set such as ``food101`` says "a type of food");
- when a command's default gives way to it (`default_templates`): only a default, never a ``--templates`` the
  user named, and always with one notice line saying so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clipforge.zeroshot.languages import set_language, templates_for_labels
from clipforge.zeroshot.prompts import fill_template, get_templates

__all__ = ["GENERAL_SETS", "LabelCut", "default_templates", "fitting_set", "label_cut", "prompts_cut_notice",
           "prompts_for"]

GENERAL_SETS: dict[str, tuple[str, ...]] = {
    "zh": ("zh-imagenet", "zh-cifar10", "zh-cifar100", "zh-simple"),
    "en": ("imagenet", "cifar10", "cifar100", "imagenet7", "simple"),
}
"""Shipped template sets that describe any photo (not one domain), by language, the first listed of equal ones
preferred: ``zh-cifar10`` and ``zh-cifar100`` are the same 11 templates."""


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


def prompts_for(templates: Any, labels: Sequence[str]) -> dict[str, list[str]]:
    """label -> its prompts under `templates` (anything `get_templates` takes), each filled by `fill_template`."""
    resolved = get_templates(templates)
    return {label: [fill_template(t, label) for t in resolved] for label in labels}


def label_cut(prompts: Mapping[str, Sequence[str]], tokenizer: Any) -> LabelCut:
    """The prompts (label -> its prompts) whose label `tokenizer`'s context cuts, counted once each."""
    from clipforge.text.families import cut_texts

    through_label: dict[str, str] = {}  # each prompt up to the end of its label: cut there, the label is unread
    for label, group in prompts.items():
        for prompt in group:
            at = prompt.find(label)
            through_label.setdefault(prompt[: at + len(label)] if at >= 0 else prompt, prompt)
    lost = cut_texts(tokenizer, list(through_label))
    total = len({prompt for group in prompts.values() for prompt in group})
    context = int(getattr(tokenizer, "context_length", 0) or 0)
    return LabelCut(len(lost), total, context, through_label[lost[0]] if lost else None)


def fitting_set(language: str, labels: Sequence[str], tokenizer: Any) -> str | None:
    """The largest set of `GENERAL_SETS[language]` whose prompts for `labels` all keep their label under
    `tokenizer`'s context, else None (no shipped set fits: the labels themselves are too long)."""
    by_size: dict[tuple[str, ...], str] = {}
    for name in GENERAL_SETS.get(language, ()):
        by_size.setdefault(tuple(get_templates(name)), name)  # equal sets: the first listed
    for templates, name in sorted(by_size.items(), key=lambda item: -len(item[0])):
        if not label_cut({label: [fill_template(t, label) for t in templates] for label in labels}, tokenizer).lost:
            return name
    return None


def _language(templates: Any) -> str:
    """The language of a set name (``zh-...`` -> zh, else en)."""
    return set_language(templates) if isinstance(templates, str) else "en"


def prompts_cut_notice(prompts: Mapping[str, Sequence[str]], tokenizer: Any, name: str,
                       templates: Any = None, cut: LabelCut | None = None) -> str | None:
    """One line when a model's context cuts labels out of a classifier's prompts (label -> its prompts), else None:
    the wording of `classify`, `tag` and `eval zeroshot`. `templates`: the spec they came from, whose language the
    suggested set is in (the largest that fits, `fitting_set`); `cut`: `label_cut` already taken."""
    from clipforge.text.width import shorten

    cut = cut or label_cut(prompts, tokenizer)
    if not cut.lost or cut.example is None:
        return None
    labels = list(prompts)
    chinese = _language(templates) == "zh" or _language(templates_for_labels("simple", labels)) == "zh"
    shorter = fitting_set("zh" if chinese else "en", labels, tokenizer)
    advice = (f"a shorter template set fits (--templates {shorter})" if shorter
              else "no shipped template set keeps every label: shorter labels or a model with a longer context do")
    return (f"notice: model {name} reads {cut.context} tokens of a text: {cut.lost} of the {cut.total} prompts lose "
            f"their label to that cut (e.g. {shorten(cut.example, 40)!r}) and score every label alike; {advice}")


def default_templates(default: str, labels: Sequence[str], tokenizer: Any, name: str) -> tuple[Any, str | None]:
    """(the templates a command prompts `labels` with when the user named none, its notice or None).

    `default` is the command's default set (``imagenet`` for `tag`, ``simple`` for `classify`), first put in the
    labels' language (`templates_for_labels`: Chinese labels take ``zh-imagenet``). When the model's context cuts
    labels out of its prompts and a shipped set of the same language keeps them all (`fitting_set`), that set is
    used instead and the notice says so; otherwise the default stays (the cut notice then tells what is lost).
    """
    resolved = templates_for_labels(default, list(labels))
    if not isinstance(resolved, str) or tokenizer is None:
        return resolved, None
    cut = label_cut(prompts_for(resolved, labels), tokenizer)
    if not cut.lost:
        return resolved, None
    fitting = fitting_set(_language(resolved), labels, tokenizer)
    if fitting is None or fitting == resolved:
        return resolved, None
    count = len(get_templates(fitting))
    return fitting, (f"notice: model {name} reads {cut.context} tokens of a text, which cuts the label out of "
                     f"{cut.lost} of the {cut.total} prompts of the default templates {resolved}; prompting with "
                     f"{fitting} ({count} template{'s' if count != 1 else ''}, every label kept) instead "
                     f"(--templates {resolved} to use them anyway)")
