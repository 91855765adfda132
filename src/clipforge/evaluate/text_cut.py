"""Text an evaluation's model cannot read whole: counted in the report, said in one notice line.

A model reads `context_length` tokens of a text and the rest is dropped (as open_clip and cn_clip truncate), so a
long prompt or caption is never an error; but `eval zeroshot --model clipforge-tiny-zh` (16 tokens) prompted
ImageNet with the 80 zh-imagenet templates, a third of whose prompts lose their label to that cut, and
`eval retrieval` on Flickr8k cut about a quarter of the captions, and neither said so, where `classify`, `tag` and
`search` did. The tests are theirs, not copies: `zeroshot.prompt_fit.label_cut` (a prompt cut before the end of
its label) and `train.captions_cut.cut_captions` (the trainer's count of captions cut, bounded in cost whatever
a caption holds), both built on `clipforge.text.families.cut_texts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

__all__ = ["captions_cut", "prompts_cut"]


def prompts_cut(names: Sequence[str], templates: Sequence[str], model: Any, model_name: str,
                spec: Any = None) -> tuple[dict[str, Any], str | None]:
    """(the report's ``prompts_cut`` field, the notice or None) for prompting `names` with `templates`: how many
    distinct prompts lose their label to `model`'s context (`prompt_fit.label_cut`), in `classify`'s words."""
    from clipforge.text.families import tokenizer_of
    from clipforge.zeroshot.prompt_fit import label_cut, prompts_cut_notice
    from clipforge.zeroshot.prompts import fill_template

    tokenizer = tokenizer_of(model)
    prompts: dict[str, list[str]] = {}
    for name in names:  # OpenAI's ImageNet names repeat ("crane"): one group each
        prompts.setdefault(name, [fill_template(t, name) for t in templates])
    cut = label_cut(prompts, tokenizer)
    return cut.to_dict(), prompts_cut_notice(prompts, tokenizer, model_name, spec, cut=cut)


def captions_cut(texts: Sequence[str], model: Any, model_name: str) -> tuple[dict[str, Any], str | None]:
    """(the report's ``captions_cut`` field, the notice or None): how many of the distinct captions `texts` are
    longer than `model`'s context and were embedded by their beginning only. Every caption is tested: the
    trainer's sampled count (`cut_captions`, at most `SAMPLE` captions a call) is taken on consecutive slices."""
    from clipforge.text.families import tokenizer_of
    from clipforge.text.width import shorten
    from clipforge.train.captions_cut import SAMPLE, cut_captions

    tokenizer = tokenizer_of(model)
    context = int(getattr(tokenizer, "context_length", 0) or 0)
    distinct = list(dict.fromkeys(t for t in texts if isinstance(t, str)))
    count, first = 0, None
    for start in range(0, len(distinct), SAMPLE):
        cut, _, _, example = cut_captions(SimpleNamespace(captions=distinct[start:start + SAMPLE]), tokenizer, context)
        count, first = count + cut, first or example
    field: dict[str, Any] = {"captions_cut": count, "captions": len(distinct), "context_length": context}
    if not count or first is None:
        return field, None
    field["example"] = first
    return field, (f"notice: model {model_name} reads {context} tokens of a text: {count} of the {len(distinct)} "
                   f"captions are longer and were embedded by their beginning only (e.g. {shorten(first, 40)!r}); "
                   "the recalls measure those beginnings")
