"""Batching that survives bad images, and a running tally of what was skipped and why.

Datasets return a `BadImage` in place of an undecodable image; `skip_bad_collate` stacks the
good samples and returns the bad ones beside them, so an evaluation can report "37 images
skipped (31 truncated JPEG, 6 not an image)" instead of dying at 80%.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import default_collate

from .base import BadImage
from .sharing import shared_tensor

__all__ = ["Batch", "BadSampleLog", "Indexed", "skip_bad_collate"]


class Indexed(NamedTuple):
    """A sample tagged with its dataset index (made by `make_loader`'s wrapper)."""

    index: int
    item: Any


class Batch(NamedTuple):
    """`images` and `labels` are stacked tensors (labels may be token ids for image-text data);
    `indices` are dataset indices of the kept samples (-1 where unknown, e.g. streamed shards);
    `errors` are the samples dropped from this batch. A batch may be empty (len(indices) == 0)."""

    images: Any
    labels: Any
    indices: torch.Tensor
    errors: list[BadImage]


def skip_bad_collate(items: Sequence[Any]) -> Batch:
    good: list[Any] = []
    indices: list[int] = []
    errors: list[BadImage] = []
    for item in items:
        index = -1
        if isinstance(item, Indexed):
            index, item = item
        if isinstance(item, BadImage):
            errors.append(item)
            continue
        good.append(item)
        indices.append(index)
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), errors)
    images, labels = default_collate(good)  # in a worker: in shared memory there (`sharing`), as the indices
    return Batch(images, labels, shared_tensor(torch.tensor(indices, dtype=torch.long)), errors)


class BadSampleLog:
    """Accumulates `Batch.errors` over a run and summarises them for logs and JSON reports."""

    def __init__(self, keep: int = 50) -> None:
        self.count = 0
        self.reasons: Counter[str] = Counter()
        self.examples: list[BadImage] = []
        self.keep = keep

    def add(self, errors: Iterable[BadImage]) -> None:
        for err in errors:
            self.count += 1
            self.reasons[_reason_kind(err)] += 1
            if len(self.examples) < self.keep:
                self.examples.append(err)

    def as_dict(self) -> dict[str, Any]:
        return {
            "skipped": self.count,
            "reasons": dict(self.reasons.most_common()),
            "examples": [{"index": e.index, "source": e.source, "reason": e.reason} for e in self.examples],
        }

    def summary(self) -> str:
        if not self.count:
            return "no bad images"
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.reasons.most_common())
        return f"{self.count} bad images skipped ({kinds})"


def _reason_kind(err: BadImage) -> str:
    """The reason with the file name taken out, so the tally does not have one row per file."""
    text = err.reason.replace(err.source, "<file>") if err.source else err.reason
    return text if len(text) <= 120 else text[:117] + "..."
