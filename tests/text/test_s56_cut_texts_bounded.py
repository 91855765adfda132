"""`cut_texts` bounds each tokenizer call itself: every caller (classify's prompts, eval's captions, the trainer's
sample) tested a batch at a width of 4 tokens per byte of its longest text, so one alt text of 100,000 characters
among 2,000 short ones asked for 2,001 x ~400,000 ids (6 GB); the callers each chunked on their own."""

from __future__ import annotations

import torch

from clipforge.text.context_cut import CUT_TEXTS_IDS, cut_texts


class _OneIdACharacter:
    """A truncating tokenizer, one token per character, padded with 0; records what it was asked."""

    context_length = 16

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []

    def __call__(self, texts: list[str], length: int) -> torch.Tensor:
        self.asked.append((len(texts), length))
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [ord(c) % 1000 + 1 for c in text[:length]]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


def test_one_huge_text_among_many_keeps_every_call_bounded_and_the_answer_exact() -> None:
    short = [f"dog {i:04d}" for i in range(1000)]  # 8 characters: kept
    long = [f"a photo of dog number {i:04d}" for i in range(1000)]  # 26: cut
    huge = "x" * 100_000
    texts = [*short[:500], huge, *long, *short[500:]]
    tokenizer = _OneIdACharacter()
    cut = cut_texts(tokenizer, texts)
    assert cut == [huge, *long]  # in the order given, each once
    assert max(n * length for n, length in tokenizer.asked) <= CUT_TEXTS_IDS
    assert (1, 16) in tokenizer.asked  # the huge text went alone
