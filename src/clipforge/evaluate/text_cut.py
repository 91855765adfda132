"""Text an evaluation's model cannot read whole: counted in the report, said in one notice line.

A model reads `context_length` tokens of a text and the rest is dropped (as open_clip and cn_clip truncate), so a
long prompt or caption is never an error; but `eval zeroshot --model clipforge-tiny-zh` (16 tokens) prompted
ImageNet with the 80 zh-imagenet templates, a third of whose prompts lose their label to that cut, and
`eval retrieval` on Flickr8k cut about a quarter of the captions, and neither said so, where `classify`, `tag` and
`search` did. Both counts are `clipforge.text.context_cut.cut_texts`, the test every command makes: on each prompt
up to the end of its label (`zeroshot.prompt_fit.templates_cut`, its prompts tokenized once), and on each whole
caption. The trainer's `train.captions_cut.cut_captions` tests a sample of captions by their first 8 characters
per token of context, which is not a count: "photographs photographs ..." holds 128 characters in 14 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["captions_cut", "prompts_cut"]

def prompts_cut(names: Sequence[str], templates: Sequence[str], model: Any, model_name: str,
                spec: Any = None) -> tuple[dict[str, Any], str | None]:
    """(the report's ``prompts_cut`` field, the notice or None) for prompting `names` with `templates`: how many
    distinct prompts lose their label to `model`'s context (`prompt_fit.templates_cut_notice`), in `classify`'s
    words, the suggested set in the language of `spec` (the set named). OpenAI's ImageNet names repeat
    ("crane"): each prompt is counted once."""
    from clipforge.text.families import tokenizer_of
    from clipforge.zeroshot.prompt_fit import templates_cut_notice

    cut, notice = templates_cut_notice(list(templates), list(dict.fromkeys(names)), tokenizer_of(model), model_name,
                                       spec)
    return cut.to_dict(), notice


def captions_cut(texts: Sequence[str], model: Any, model_name: str) -> tuple[dict[str, Any], str | None]:
    """(the report's ``captions_cut`` field, the notice or None): how many of the distinct captions `texts` are
    longer than `model`'s context and were embedded by their beginning only, each tested whole (`cut_texts`), the
    example the first such in `texts`' order."""
    from clipforge.text.context_cut import cut_texts
    from clipforge.text.families import tokenizer_of
    from clipforge.text.width import shorten

    tokenizer = tokenizer_of(model)
    context = int(getattr(tokenizer, "context_length", 0) or 0)
    distinct = list(dict.fromkeys(t for t in texts if isinstance(t, str)))
    cut = set(cut_texts(tokenizer, distinct)) if context else set()  # in groups of bounded memory
    first = next((text for text in distinct if text in cut), None)
    field: dict[str, Any] = {"captions_cut": len(cut), "captions": len(distinct), "context_length": context}
    if first is None:
        return field, None
    field["example"] = first
    return field, (f"notice: model {model_name} reads {context} tokens of a text: {len(cut)} of the {len(distinct)} "
                   f"captions are longer and were embedded by their beginning only (e.g. {shorten(first, 40)!r}); "
                   "the recalls measure those beginnings")
