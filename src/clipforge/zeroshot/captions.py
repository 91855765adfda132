"""Training captions in several languages at once: a [template][class] table from template-set names."""

from __future__ import annotations

from collections.abc import Sequence

from clipforge.zeroshot.languages import classnames_for
from clipforge.zeroshot.prompts import fill_template, get_templates

__all__ = ["caption_table"]


def caption_table(sets: object, dataset: str, classnames: Sequence[str]) -> list[list[str]] | None:
    """Training captions [template][class] for a list of template-set names in any languages.

    ``["cifar10", "zh-cifar10"]`` gives OpenAI's 18 English CIFAR-10 templates filled with the English
    names followed by Chinese-CLIP's 11 templates filled with the Chinese names: a bilingual
    caption set. Returns None when `sets` is not a list of set names (a plain template list).
    """
    if isinstance(sets, str) or not isinstance(sets, Sequence) or not sets:
        return None
    if not all(isinstance(s, str) and "{" not in s for s in sets):
        return None
    table: list[list[str]] = []
    for name in sets:
        names = classnames_for(dataset, name, len(classnames)) or list(classnames)
        table.extend([fill_template(t, c) for c in names] for t in get_templates(name))
    return table
