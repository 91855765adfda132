"""The images a training run could not use, told once per data set: how many, the first few, why.

A batch job skips, counts and explains bad items (DESIGN.md). The data layer already hands the
trainer both kinds: files a dataset's metadata lists but the disk lacks (`missing`, dropped when
the dataset opens) and files that fail to decode (a `BadImage` in a batch's `errors`). The normal
training path dropped both without a word (a CUB copy with a deleted image, a truncated JPEG and a
text file named .jpg trained with exit 0; only `val_samples 247` hinted at it), while the in-memory
path printed its own count. `SkippedImages` is the one tally for both paths, for the training data
and every evaluation set: it counts with the project's `clipforge.data.BadSampleLog` (the tally
`eval` reports, so the JSON has the same shape), each file once however many epochs read it.
Under torchrun each rank decodes only its share of the data, so `gather` merges every rank's news at
each report (before, the summary and the log held rank 0's share alone: 2 of 4 bad images on 2 ranks).
A WebDataset shard that cannot be read to its end (`clipforge.data.webdata.DamagedShard`) is kept apart
(`damaged`, `damaged_shards` in the summary, one line each): the images of its unreadable rest are not
known, so they are not counted as skipped images.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from clipforge.data.bad import BadImage
from clipforge.data.names import display_path

MISSING_REASON = "listed by the dataset but not on disk"
SHOWN = 3  # names in the one-line summary; the JSON keeps up to 50 (BadSampleLog's examples)


class SkippedImages:
    """Distinct images of one data set (`label`: "training data", "val data", ...) that were skipped."""

    def __init__(self, label: str) -> None:
        from clipforge.data.collate import BadSampleLog

        self.label = label
        self.log = BadSampleLog()
        self._seen: set[str] = set()
        self.damaged: dict[str, Any] = {}  # shard -> its `DamagedShard` (the first read's), in the order found
        self.told_damaged = 0  # how many of `damaged` the trainer has told
        self._news: list[BadImage] = []  # added since the last `gather`: what the other ranks do not know yet
        self.reported = 0  # how many `line()` has already told (the trainer tells only news)

    @property
    def count(self) -> int:
        return self.log.count

    def add(self, errors: Iterable[BadImage]) -> None:
        """Count each file once: a bad file fails again every epoch, and is still one bad file."""
        from clipforge.data.webdata import DamagedShard

        for err in errors:
            if err.path in self._seen:
                continue
            if isinstance(err, DamagedShard):
                self._seen.add(err.path)
                self._news.append(err)
                self.damaged[err.path] = err
                continue
            self._seen.add(err.path)
            self._news.append(err)
            self.log.add([err])

    def gather(self) -> None:
        """Merge the images every rank skipped since the last call into every rank's tally, each file once (a
        missing file every rank knows counts once). A collective under torchrun: every rank calls it, at the
        same points of the run (the trainer: each epoch end and the run's end)."""
        from clipforge.train.distributed import all_gather_objects

        news, self._news = self._news, []
        for part in all_gather_objects(news):
            self.add(part)
        self._news = []  # what was just merged, every rank now has

    def line(self, logged: bool = True) -> str:
        """`training data: 3 images skipped: a.jpg: reason; b.jpg: reason; ... (see log.jsonl)`. `logged=False`
        for a run that stops before writing its log (the line must not point at a file that is not there)."""
        shown = "; ".join(f"{e.path}: {e.reason}" for e in self.log.examples[:SHOWN])
        more = f"; and {self.count - SHOWN} more" if self.count > SHOWN else ""
        noun = "image" if self.count == 1 else "images"
        return f"{self.label}: {self.count} {noun} skipped: {shown}{more}" + (" (see log.jsonl)" if logged else "")

    def damaged_line(self, shard: Any, logged: bool = True) -> str:
        """`training data: shard a/bad.tar is damaged (ReadError: unexpected end of data): 26 samples were read
        from it, the rest could not be`."""
        read = shard.samples_read
        samples = f"{read} sample{'' if read == 1 else 's'} {'was' if read == 1 else 'were'} read from it"
        return (f"{self.label}: shard {display_path(shard.path)} is damaged ({shard.error}): {samples}, the rest "
                "could not be" + (" (see log.jsonl)" if logged else ""))

    def untold_damaged(self) -> list[Any]:
        """The damaged shards not told yet (marked told)."""
        news = list(self.damaged.values())[self.told_damaged:]
        self.told_damaged = len(self.damaged)
        return news

    def as_dict(self) -> dict[str, Any]:
        tally = self.log.as_dict()
        if self.damaged:
            tally["damaged_shards"] = [damaged_record(shard) for shard in self.damaged.values()]
        return tally


def damaged_record(shard: Any) -> dict[str, Any]:
    """A damaged shard as the summary and log.jsonl write it."""
    return {"shard": shard.to_dict()["path"], "samples_read": shard.samples_read, "error": shard.error}


def known_bad(dataset: Any) -> list[BadImage]:
    """The images of `dataset` already known to be unusable before a batch is read: files its
    metadata lists but the disk lacks (`missing`, also of a wrapped labelled set), and files a
    decode-once copy could not decode (`skipped` of `clipforge.data.decode_all`'s result, or of
    the in-memory training batches)."""
    bad: list[BadImage] = []
    for holder in (dataset, getattr(dataset, "dataset", None)):
        bad += [BadImage(str(path), MISSING_REASON) for path in getattr(holder, "missing", None) or ()]
    bad += list(getattr(dataset, "skipped", None) or ())
    return bad
