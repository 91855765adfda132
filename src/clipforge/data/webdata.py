"""Streaming image-text pairs from WebDataset tar shards (`<key>.jpg` + `<key>.txt`).

Sample grouping comes from the `webdataset` package, tar parsing from Python's `tarfile` as webdataset uses it
(`_shard_files`, its `tar_file_expander` but for one bound); which shards a process reads is decided here,
explicitly, so it can be tested without a process group:

* without resampling, the (per-epoch shuffled, identically on every rank) shard list is dealt
  out round-robin: shard i goes to rank i % world_size, then to DataLoader worker
  (i // world_size) % num_workers. Ranks see disjoint shards and together see every shard once, but not
  equally many samples (shards of other sizes, 3 shards on 2 ranks): the trainer ends every rank's epoch when
  the first rank's share runs out (`clipforge.train.trainer_steps`), the rest of the others' unused.
* with `resampled=True`, every rank/worker draws shards with replacement from its own seeded
  stream, forever; `samples_per_epoch` (this rank's: the trainer passes the job's `samples_per_epoch` / ranks,
  `clipforge.train.data`) makes epochs finite. This is the pretraining
  mode: no rank ever runs out of data, so no rank waits on another at the end of an epoch.

Undecodable samples come out as `BadImage` (index -1, path `<shard>::<key>`), which
`skip_bad_collate` drops and reports. A shard that cannot be read to its end (truncated, not a tar,
unreadable) ends with one `DamagedShard` (a `BadImage` naming the shard, the error and the samples read
from it before the error), which the trainer counts apart from the images (`clipforge.train.skipped`):
how many samples its unreadable rest held is unknown. Before, webdataset's `warn_and_continue` printed
the exception's repr once per epoch and the run's summary said 0 skipped.

What a shard may make the reader hold is bounded (audit 62 #6, review 62 #1). webdataset read every member whole,
and a resampled stream's shuffle buffer (1,000 samples) held ~111 copies of a one-shard run's samples: a 20 MB
caption, `.json` or `.jpg` took `train` to 2.9 GB. So (`_shard_files`):

* a member training never uses (not an image or caption key: `.json`, `.npy`, `.cls`, ...) is skipped unread; an
  `_Unread` stands in for it, so "sample has no image; has [...]" still lists it;
* a caption member (`.txt`, `.text`, `.caption`) over `MAX_CAPTION` bytes (131,072; caption CSVs refuse a longer
  field) and an image member over `MAX_IMAGE_FILE_BYTES` (1 GiB, the file and zip readers' cap) are skipped unread,
  and their sample is a `BadImage` saying so;
* the shuffle buffer holds at most `MAX_SHUFFLE_BYTES` of member bytes as well as `shuffle_buffer` samples.

A tar header that is corrupt or cut short after the shard's first is damage too: tarfile takes it for the archive's
end, and a shard with one bad checksum gave 15 of its 250 samples and no record (review 62 #4).
"""

from __future__ import annotations

import itertools
import os
import random
import re
import tarfile
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset

from clipforge.image.loading import MAX_IMAGE_FILE_BYTES

from .base import DECODE_ERRORS, BadImage, DatasetLayoutError, error_reason
from .captions import MAX_CAPTION
from .imagetext import Tokenizer, apply_transform, sample_rng

__all__ = ["DamagedShard", "WebDatasetImageText", "expand_shards", "rank_and_world"]

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
TEXT_KEYS = ("txt", "text", "caption")

MAX_SHUFFLE_BYTES = 256 * 2**20
"""Most member bytes a shuffle buffer holds (per DataLoader worker), whichever of it and `shuffle_buffer` comes first.
1,000 LAION-style samples (~100-200 KB of jpg + caption) are 100-200 MB, so typical data never reaches it and shuffles
as before; a short shard of 20 MB photos, resampled, fills the buffer with copies of itself, and is held to ~12."""


def expand_shards(urls: str | Sequence[str]) -> list[str]:
    """A shard list from a list, a brace pattern (`shards-{000..009}.tar`) or `a.tar::b.tar`."""
    if isinstance(urls, (str, os.PathLike)):
        import webdataset as wds

        return list(wds.shardlists.expand_urls(str(urls)))
    return [str(u) for u in urls]


def rank_and_world() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed when initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


@dataclass(frozen=True)
class DamagedShard(BadImage):
    """A shard the stream could not read to its end: `path` is the shard, `error` what failed (`reason`:
    "damaged shard (<error>)"), `samples_read` the samples it gave before the error (used; the rest was not)."""

    samples_read: int = 0
    error: str = ""


def _shard_error(exc: BaseException) -> str:
    """`ReadError: unexpected end of data` (webdataset appends the stream and url to the exception's args)."""
    first = str(exc.args[0]).split(" @ ")[0] if exc.args else ""  # some versions append " @ <stream>" here
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@dataclass(frozen=True)
class _Unread:
    """What `_shard_files` yields in place of a member's bytes when it does not read them: a member training never
    uses (`limit` 0), or a caption or image member over its limit (`what`: "caption" / "image")."""

    name: str
    size: int
    what: str = ""
    limit: int = 0

    @property
    def reason(self) -> str:
        return f"{self.what} {self.name} is {self.size:,} bytes, more than the {self.limit:,} {'a caption' if self.what == 'caption' else 'an image file'} may hold (not read)"


def _first(sample: dict[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if key in sample:
            return sample[key]
    return None


class WebDatasetImageText(IterableDataset):
    """`(image_tensor, token_ids)` from tar shards; see the module doc for sharding rules."""

    def __init__(
        self,
        urls: str | Sequence[str],
        transform: Callable | None = None,
        tokenizer: Callable[[str], torch.Tensor] | None = None,
        *,
        resampled: bool = False,
        shuffle_buffer: int = 1000,
        shuffle_shards: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        samples_per_epoch: int | None = None,
    ) -> None:
        self.urls = expand_shards(urls)
        if not self.urls:
            raise DatasetLayoutError(f"no shards in {urls!r}; expected tar files of <key>.jpg + <key>.txt")
        local = [u for u in self.urls if "://" not in u and not u.startswith("pipe:")]
        absent = [u for u in local if not Path(u).is_file()]
        if absent:
            raise DatasetLayoutError(f"missing shard file {absent[0]} ({len(absent)} of {len(self.urls)} missing)\n"
                                     "expected layout: tar shards holding <key>.jpg + <key>.txt pairs")
        if resampled and not samples_per_epoch:
            warnings.warn("resampled WebDataset without samples_per_epoch streams forever", stacklevel=2)
        self.transform = transform
        self.tokenizer = tokenizer if tokenizer is not None else Tokenizer()
        self.resampled = resampled
        self.shuffle_buffer = int(shuffle_buffer)
        self.shuffle_shards = shuffle_shards
        self.seed = int(seed)
        self.epoch = 0
        self._rank, self._world = rank, world_size
        self.samples_per_epoch = samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rank_world(self) -> tuple[int, int]:
        rank, world = rank_and_world()
        return (self._rank if self._rank is not None else rank, self._world if self._world is not None else world)

    def shards_for(self, rank: int, world: int, worker: int = 0, num_workers: int = 1) -> list[str]:
        """The shards one (rank, worker) reads this epoch without resampling."""
        urls = list(self.urls)
        if self.shuffle_shards:
            random.Random(f"{self.seed}:{self.epoch}:shards").shuffle(urls)  # same order on every rank
        return urls[rank::world][worker::num_workers]

    def _shard_stream(self, rank: int, world: int, worker: int, num_workers: int) -> Iterator[str]:
        if self.resampled:
            rng = random.Random(f"{self.seed}:{self.epoch}:{rank}:{worker}:resample")
            return (rng.choice(self.urls) for _ in itertools.count())
        shards = self.shards_for(rank, world, worker, num_workers)
        if not shards and worker == 0:
            warnings.warn(f"rank {rank} gets no shards: {len(self.urls)} shards for {world} ranks x "
                          f"{num_workers} workers; use more shards or resampled=True", stacklevel=2)
        return iter(shards)

    def _shuffled(self, samples: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        buffer: list[dict] = []
        held = 0  # member bytes in `buffer`: under the count bound alone, the order is what it was before
        for sample in samples:
            buffer.append(sample)
            held += _nbytes(sample)
            while buffer and (len(buffer) >= self.shuffle_buffer or held > MAX_SHUFFLE_BYTES):
                i = rng.randrange(len(buffer))
                buffer[i], buffer[-1] = buffer[-1], buffer[i]
                held -= _nbytes(buffer[-1])
                yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer

    def decode(self, sample: dict[str, Any]) -> Any:
        """One raw tar sample -> (image, tokens), or a BadImage saying why not."""
        from ._decode import load_bytes

        if isinstance(sample, BadImage):  # a damaged shard's record (`_samples`), passed on as it is
            return sample
        source = f"{sample.get('__url__', '?')}::{sample.get('__key__', '?')}"
        data, text = _first(sample, IMAGE_KEYS), _first(sample, TEXT_KEYS)
        if data is None or text is None:
            missing = "image (.jpg/.png/.webp)" if data is None else "caption (.txt)"
            return BadImage(source, f"sample has no {missing}; has {sorted(k for k in sample if not k.startswith('__'))}")
        if isinstance(data, _Unread) or isinstance(text, _Unread):
            return BadImage(source, (data if isinstance(data, _Unread) else text).reason)
        try:
            caption = text.decode("utf-8").strip() if isinstance(text, bytes) else str(text).strip()
            rng = sample_rng(self.seed, self.epoch, source)
            image = apply_transform(self.transform, load_bytes(data, source), rng)
        except DECODE_ERRORS as exc:
            return BadImage(source, error_reason(exc))
        return image, self.tokenizer(caption)

    def __iter__(self) -> Iterator[Any]:
        rank, world = self.rank_world()
        worker, num_workers = _worker()
        samples = _samples(self._shard_stream(rank, world, worker, num_workers))
        rng = random.Random(f"{self.seed}:{self.epoch}:{rank}:{worker}:buffer")
        stream = map(self.decode, self._shuffled(samples, rng))
        if self.samples_per_epoch:
            per_worker = self.samples_per_epoch // num_workers + (worker < self.samples_per_epoch % num_workers)
            stream = itertools.islice(stream, per_worker)
        yield from stream


def _nbytes(sample: Any) -> int:
    """The member bytes a raw sample holds (a `DamagedShard` and `_Unread` members hold none)."""
    return sum(len(v) for v in sample.values() if isinstance(v, bytes)) if isinstance(sample, dict) else 0


def _samples(urls: Iterator[str]) -> Iterator[dict[str, Any] | DamagedShard]:
    """The raw samples of each shard in turn (webdataset's tar reader); a shard whose reading fails (opening
    it, or a member: a truncated tar) stops there and is followed by one `DamagedShard` saying so."""
    from webdataset.tariterators import group_by_keys, url_opener

    for url in urls:
        failures: list[BaseException] = []

        def stop(exc: BaseException, failures: list[BaseException] = failures, url: str = url) -> bool:
            if isinstance(exc, (tarfile.TarError, EOFError, OSError, zlib.error)):
                failures.append(exc)
                return False  # the stream itself failed: the rest of this shard is unreadable, on to the next
            # one bad member (a duplicate name, a sample webdataset cannot group): the shard's other samples are
            # read as before; stopping dropped 36 good samples of 40 for one duplicate
            warnings.warn(f"shard {url}: {type(exc).__name__}: {exc} (that sample is skipped)", stacklevel=2)
            return True

        read = 0
        members = (m for opened in url_opener([{"url": url}], handler=stop)
                   for m in _shard_files(opened["url"], opened["stream"], stop))
        for sample in group_by_keys(members, handler=stop):  # webdataset's `tarfile_to_samples`, but for the bound
            read += 1
            yield sample
        if failures:
            error = _shard_error(failures[0])
            yield DamagedShard(url, f"damaged shard ({error})", samples_read=read, error=error)


_META = re.compile(r"__[^/]*__($|/)")  # webdataset's `skip_meta`: members it never reads


class _Header(tarfile.TarInfo):
    """tarfile's header, but one that is corrupt or cut short after the archive's start is an error: tarfile ends the
    archive there as if it were its end-of-archive blocks, and the shard's rest was lost without a record."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as exc:
            if tar.offset == 0:
                raise  # not a tar at all: tarfile's own error, as before
            raise tarfile.ReadError(f"{exc} (a corrupt header at byte {tar.offset:,})") from None


def _member(tar: tarfile.TarFile, info: tarfile.TarInfo, suffix: str | None) -> Any:
    """A member's bytes, or an `_Unread` for one training never uses or one over its kind's limit (tarfile's stream
    mode reads past an unread member in blocks)."""
    kind = suffix.lower() if suffix is not None else ""
    if kind in TEXT_KEYS and info.size > MAX_CAPTION:
        return _Unread(info.name, info.size, "caption", MAX_CAPTION)
    if kind in IMAGE_KEYS and info.size > MAX_IMAGE_FILE_BYTES:
        return _Unread(info.name, info.size, "image", MAX_IMAGE_FILE_BYTES)
    if kind not in TEXT_KEYS and kind not in IMAGE_KEYS:
        return _Unread(info.name, info.size)
    return tar.extractfile(info).read()  # type: ignore[union-attr]  # a regular file's is never None


def _shard_files(url: str, stream: Any, handler: Callable[[BaseException], bool]) -> Iterator[dict[str, Any]]:
    """The members of one opened shard as webdataset's `tar_file_expander` gives them (`{fname, data, __url__}`, then
    `{}` at the shard's end; the same errors handed to `handler` at the same places, so a damaged shard gives the same
    samples), except that what `_member` does not read is an `_Unread` (webdataset has no bound on a member's size)
    and a corrupt header after the first is an error (`_Header`)."""
    from webdataset.tariterators import base_plus_ext

    try:
        with tarfile.open(fileobj=stream, mode="r|*", tarinfo=_Header) as tar:  # closes tarfile's reader, not `stream`
            for info in tar:
                try:
                    name = info.name
                    if not info.isreg() or not name or _META.match(name):
                        continue
                    if "/" not in name and name.startswith("__") and name.endswith("__"):
                        continue
                    yield {"fname": name, "data": _member(tar, info, base_plus_ext(name)[1]), "__url__": url}
                    tar.members = []  # a stream's TarFile keeps every header it read (webdataset empties it likewise)
                except Exception as exc:  # handed on as webdataset does: `handler` says whether the shard goes on
                    if handler(exc):
                        continue
                    break
        yield {}  # the shard's end: its last sample is complete
    except Exception as exc:  # opening the tar or reading a header failed: the rest of the shard is unreadable
        handler(exc)
