"""The caption-cut warning's cost is bounded whatever the captions hold.

`cut_texts` tokenizes a batch at a width of 4 tokens per byte of its longest text; `cut_captions` gave it all
2,000 sampled captions at once, so one alt text of 10,000 characters among them made a 2,000 x ~40,000 id tensor
(750 MB more on rank 0 before training: measured 1,013 MB peak RSS against 254 MB); one of 100,000, 6 GB.
"""

from __future__ import annotations

import types

import torch

from clipforge.train.captions_cut import cut_captions, cut_captions_line

MAX_IDS = 2_000_000  # ids one tokenizer call may return (16 MB of int64)


def _one_id_a_character(asked: list[tuple[int, int]]):
    """A truncating tokenizer with one token per character, padded with 0: what was asked is recorded."""

    def tokenizer(texts: list[str], length: int) -> torch.Tensor:
        asked.append((len(texts), length))
        assert len(texts) * length <= MAX_IDS, f"{len(texts)} texts x {length} ids"
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [ord(c) % 1000 + 1 for c in text[:length]]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    return tokenizer


def test_a_huge_caption_among_many_costs_what_a_short_one_costs() -> None:
    same_start = ["z" * 200 + " one", "z" * 200 + " two"]  # one image's two captions: one start, two cut
    captions = [["x" * 100_000]] + [[f"a photo of dog number {i:04d}"] for i in range(1997)] + [same_start]
    asked: list[tuple[int, int]] = []
    cut, seen, total, first = cut_captions(
        types.SimpleNamespace(captions=captions), _one_id_a_character(asked), 16
    )
    assert (cut, seen, total) == (2000, 2000, 2000)
    assert first == "x" * 100_000  # the caption itself, not the start it was tested by
    assert asked and max(n * length for n, length in asked) <= MAX_IDS


def test_the_line_names_a_whole_caption_shortened_for_show() -> None:
    data = types.SimpleNamespace(captions=[["y" * 500], ["short"]])
    line = cut_captions_line(data, _one_id_a_character([]), 16, "captions.csv")
    assert line == (
        "training data (captions.csv): 1 of 2 distinct captions are longer than the model's 16-token text context "
        f"and are cut there (e.g. {'y' * 57 + '...'!r}): only their start is trained on"
    )
