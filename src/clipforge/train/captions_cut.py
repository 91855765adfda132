"""Captions longer than the model's text context: said once, before training, instead of cut in silence.

Training tokenizes with truncation (as open_clip and the paper's code do), so a long caption is never an error;
but a small context trains on the start of each caption only. `clipforge-tiny` reads 16 tokens: 1,265 of the
5,000 Flickr8k captions are cut, and a Chinese caption under its BPE keeps about four characters
("一只黑狗和一只斑点狗在打架" is 35 tokens). Nothing said so. `cut_captions` counts them on a strided sample of a
caption dataset's distinct captions (CSV captions, caption folders); the trainer warns in one line.
"""

from __future__ import annotations

from typing import Any

SAMPLE = (
    2000  # captions tokenized twice: bounded, so a caption file of millions of rows costs what 2,000 cost
)
_PROBE_CHARS = 8  # characters of a caption's start per token of context: twice what BPE averages on English
_CHUNK = 128  # captions per tokenizer call


def _captions(dataset: Any) -> list[str]:
    """The distinct captions of a caption CSV (`captions`: a list per image) or caption folders (`texts`)."""
    groups = getattr(dataset, "captions", None)
    if groups:  # a list per image, or one caption per entry
        texts = [c for group in groups for c in ([group] if isinstance(group, str) else group)]
    else:
        texts = list(getattr(dataset, "texts", None) or ())
    return list(dict.fromkeys(t for t in texts if isinstance(t, str)))


class _AtContext:
    """A training tokenizer (a family's ``tokenizer(texts, context_length)``, or None: CLIP's BPE) read at the
    model's context, in the shape `clipforge.text.context_cut.cut_texts` takes (a ``context_length`` attribute)."""

    def __init__(self, tokenizer: Any, context: int) -> None:
        self.tokenizer, self.context_length = tokenizer, context

    def __call__(self, texts: list[str], length: int) -> Any:
        if self.tokenizer is None:
            from clipforge.text import tokenize

            return tokenize(texts, context_length=length, truncate=True)
        return self.tokenizer(texts, length)


def cut_captions(dataset: Any, tokenizer: Any, context: int) -> tuple[int, int, int, str | None]:
    """(captions cut, captions looked at, distinct captions, the first one cut) for `tokenizer` (a model's truncating
    ``tokenizer(texts, context_length)``; None: CLIP's BPE) at `context` tokens: the test `classify` and `search`
    apply to their texts (`cut_texts`), on a strided sample of `SAMPLE` distinct captions."""
    from clipforge.text.context_cut import cut_texts

    texts = _captions(dataset)
    if not texts or context <= 0:
        return 0, 0, len(texts), None
    step = max(1, len(texts) // SAMPLE)
    picked = texts[::step][:SAMPLE]
    # Each caption is tested by its start, `_PROBE_CHARS` characters per token of context, in groups of `_CHUNK`:
    # tokenizing costs what 2,000 short captions cost whatever the data holds (alt texts of 100,000 characters),
    # at the price of missing the rare caption whose start is that long yet fits (`cut_texts` bounds the memory).
    probes: dict[str, list[str]] = {}  # a start -> the captions that begin with it
    for text in picked:
        probes.setdefault(text[: _PROBE_CHARS * context], []).append(text)
    starts, reader = list(probes), _AtContext(tokenizer, context)
    cut = [
        t
        for i in range(0, len(starts), _CHUNK)
        for s in cut_texts(reader, starts[i : i + _CHUNK])
        for t in probes[s]
    ]
    return len(cut), len(picked), len(texts), (cut[0] if cut else None)


def cut_captions_line(dataset: Any, tokenizer: Any, context: int, root: str | None) -> str | None:
    """The warning for the captions of `dataset` that the context cuts, or None when none is cut."""
    cut, seen, total, first = cut_captions(dataset, tokenizer, context)
    if not cut or first is None:
        return None
    shown = first if len(first) <= 60 else first[:57] + "..."
    of = f"{seen:,} distinct captions" + (f" (a sample of {total:,})" if total > seen else "")
    return (
        f"training data ({root}): {cut:,} of {of} "
        f"are longer than the model's {context}-token text context and are cut there (e.g. {shown!r}): only "
        "their start is trained on"
    )
