"""The one reader: image files -> uint8 crops in DataLoader workers, bad files as `BadImage`.

Every command that turns files into embeddings reads them here (``index add``, ``embed``,
``classify``, ``similarity``, the server's uploads through `read_image_bytes`), then encodes
with `clipforge.inference.encoder.BatchEncoder`. `embed_files` is the one loop that joins the
two (clip-retrieval's reader -> mapper -> writer): batches of the reader go through the model and
into a *writer* - the library's SQLite store, clip-retrieval partitions, a Milvus collection, or
`CollectingWriter` behind `encode_files`. No other module loops over `read_batches`.

- **Read once.** A file's bytes are read once; the same bytes are hashed (optional sha256: the
  library's content key, so the stored hash describes exactly what was embedded) and decoded.
  With `skip_shas`, bytes already embedded skip decoding.
- **Draft decode.** Big JPEGs decode at a reduced DCT scale (still >= 1.5x the model
  resolution) before the exact bicubic resize: several times faster on camera photos,
  embedding cosine >= 0.99 to the exact decode (measured >= 0.9997). `draft=False` decodes
  every pixel (for evaluation that must match a reference pixel for pixel).
- **uint8 crops.** Workers ship the resized, centre-cropped uint8 crop (4x smaller than
  floats); the encoder normalises whole batches.
- **Decoded ahead.** A command's first photos may already be decoded, by `reading.read_file` in
  the process the console command forked before importing torch (`prefetch`); the reader takes
  those results only for the same pixel key and decodes everything else itself.
- **Workers** come from `make_loader` (one torch thread each); a bad file never raises out of a
  worker: it comes back as `BadImage(path, reason)`, the one record of a bad image that every
  writer and report keeps (``BadImage.to_dict()`` is its JSON form).
- **Embedded once.** With hashes, `embed_files` runs the model once per distinct content in a
  batch and never for bytes the writer already holds (`skip_shas`).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from clipforge.cores import fork_is_unsafe, usable_cores

from . import prefetch
from .bad import DECODE_ERRORS, BadImage, error_reason
from .collate import Indexed
from .reading import DecodedFile, decode_crop, read_file
from .sharing import shared_stack

__all__ = ["CollectingWriter", "DecodedFile", "EmbeddedBatch", "EncodedFiles", "FileBatch", "FileWriter",
           "ImageFileReader", "default_workers", "embed_files", "encode_files", "read_batches", "read_image_bytes",
           "with_max_pixels", "worker_context"]


def default_workers() -> int:
    """Decoding workers: one per core beyond the first, at least one, at most 8."""
    return max(1, min(8, usable_cores() - 1))


def _as_tensor(pixels: Any) -> Any:
    """A reader's numpy crop as the tensor batches stack (shared memory, no copy); None and tensors as they are."""
    return torch.from_numpy(pixels) if isinstance(pixels, np.ndarray) else pixels


def read_image_bytes(data: bytes, preprocess: Any, label: str = "<upload>") -> DecodedFile | BadImage:
    """One image's bytes (an upload) -> `DecodedFile` (with sha256) or `BadImage`; never raises for bad data."""
    out = DecodedFile(label, len(data), hashlib.sha256(data).hexdigest())
    if not data:
        return BadImage(label, "file is empty (0 bytes)", sha256=out.sha256)
    try:
        pixels, out.width, out.height = decode_crop(preprocess, data, label)
    except DECODE_ERRORS as exc:
        return BadImage(label, error_reason(exc), sha256=out.sha256)
    out.pixels = _as_tensor(pixels)
    return out


class ImageFileReader(Dataset):
    """Paths -> `DecodedFile` or `BadImage` (see module docstring). Picklable for workers.

    `preprocess` is a `clipforge.image.Preprocess` (its `draft` decides draft decoding) or any
    callable PIL image -> tensor. `hash=True` computes each file's sha256.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], preprocess: Any, *, hash: bool = False,
                 skip_shas: frozenset[str] = frozenset()) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.preprocess = preprocess
        self.hash = bool(hash or skip_shas)
        self.skip_shas = skip_shas

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> DecodedFile | BadImage:
        path = self.paths[index]
        item = prefetch.take(path, self.preprocess, hash=self.hash, skip_shas=self.skip_shas, index=index)
        if item is None:
            item = read_file(path, self.preprocess, hash=self.hash, skip_shas=self.skip_shas, index=index)
        if isinstance(item, DecodedFile):
            item.pixels = _as_tensor(item.pixels)
        return item


@dataclass
class FileBatch:
    """One loader batch: `files` in reading order, `pixels` stacked for the files that have them
    (row k belongs to ``files[decoded[k]]``), and the bad ones."""

    files: list[DecodedFile]
    pixels: torch.Tensor | None
    decoded: list[int]
    bad: list[BadImage]


def collate_files(items: Sequence[Any]) -> FileBatch:
    """Items -> `FileBatch`; in a worker the pixels are stacked into shared memory there (`sharing.shared_stack`):
    stacked in ordinary memory, they were copied into it by the worker's queue thread, whose failure (a full
    /dev/shm, `ulimit -f`) lost the batch and left the command waiting for it for ever."""
    files: list[DecodedFile] = []
    bad: list[BadImage] = []
    for item in items:
        if isinstance(item, Indexed):
            item = item.item
        (bad if isinstance(item, BadImage) else files).append(item)
    decoded = [k for k, f in enumerate(files) if f.pixels is not None]
    pixels = shared_stack([files[k].pixels for k in decoded]) if decoded else None
    for k in decoded:
        files[k].pixels = None  # the stacked tensor is the one copy that travels on
    return FileBatch(files, pixels, decoded, bad)


FIRST_BATCH = 8
"""Files in the first batch when workers decode: the model starts (and packs its weights) after eight
decoded files instead of a whole batch, while the workers decode the next. With one worker on two
cores the main process used to idle until 64 files were decoded: `clipforge embed` of 300 photos
(ViT-B/32 size, 2-core EPYC, medians of alternating runs) 9.11 -> 8.90 s in bf16, 14.83 -> 14.65 s in fp32."""


def worker_context() -> Any:
    """How the decoding workers start: forked (None: instant, they share the command's pages), but from a
    forkserver while a Milvus store's gRPC client is open in this process (`cores.fork_unsafe`).

    gRPC registers fork handlers, and a fork while its threads run can leave the child stuck in gRPC's
    post-fork handler for ever: seen, an `index add --store milvus-lite` whose DataLoader worker never started
    (the run hung until the test's 600 s timeout; gdb: the child in `__run_postfork_handlers` inside cygrpc).
    A forkserver is a fresh process that never held a gRPC thread; the workers fork from it, torch and the
    reader preloaded there once (a first start costs ~1 s; later ones are forks). The reader is pickled to them
    (a list of paths and the preprocessing); what the command decoded ahead (`prefetch`) is decoded again. The
    workers' parent is the forkserver, not the command: they and the forkserver end with the command even after
    its `kill -9` (`lifeline`)."""
    if not fork_is_unsafe():
        return None
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "clipforge.data.files"])  # no effect once its server runs
    return context


def read_batches(reader: ImageFileReader, *, batch_size: int = 32, workers: int | None = None) -> Iterator[FileBatch]:
    """Batches of `reader`'s files through `make_loader` (workers decode; None: `default_workers()`), with no
    more workers than there are batches (`--workers 1000` started 1000 processes for 14 photos; a worker
    beyond the batches, counting the shorter first one, would only start up and wait)."""
    from .loader import make_loader

    workers = default_workers() if workers is None else max(0, int(workers))
    workers = min(workers, math.ceil(len(reader) / max(1, int(batch_size))) + 1) if len(reader) else 0
    prefetch.reader_starts(reader.preprocess)  # the command's decoding ahead stops; these workers go on
    loader = make_loader(reader, batch_size=max(1, int(batch_size)), workers=workers, collate_fn=collate_files,
                         prefetch_factor=2 if workers else None, first_batch=FIRST_BATCH if workers else None,
                         context=worker_context() if workers else None)
    for batch in loader:
        prefetch.note_delivered(len(batch.decoded))
        yield batch


@dataclass
class EmbeddedBatch:
    """One reader batch after the model: `vectors[j]` belongs to ``files[rows[j]]``.

    A file without a row was either read but not decoded (its bytes are in the reader's
    `skip_shas`: the writer already holds their vector) or repeats, within this batch, the
    bytes of a file that has one (same sha256: embedded once). `bad` are the files that could
    not be read, in the one `BadImage` shape.
    """

    files: list[DecodedFile]
    rows: list[int]
    vectors: np.ndarray
    bad: list[BadImage]

    def by_sha(self) -> dict[str, np.ndarray]:
        """Content hash -> vector, for the rows whose file was hashed."""
        return {self.files[k].sha256: self.vectors[j] for j, k in enumerate(self.rows)
                if self.files[k].sha256 is not None}


class FileWriter(Protocol):
    """Where `embed_files` puts each batch (the library's store, partitions, Milvus, a list)."""

    def write(self, batch: EmbeddedBatch) -> None: ...


def _embed_batch(batch: FileBatch, encode: Callable[[torch.Tensor], np.ndarray], dim: int,
                 dedupe: bool, held: Container[str]) -> EmbeddedBatch:
    """The mapper: the model once per distinct decoded content of one batch, never for `held` bytes."""
    rows: list[int] = []
    picks: list[int] = []
    seen: set[str] = set()
    for row, k in enumerate(batch.decoded):
        sha = batch.files[k].sha256
        if dedupe and sha is not None:
            if sha in seen or sha in held:
                continue
            seen.add(sha)
        rows.append(k)
        picks.append(row)
    if not picks or batch.pixels is None:
        return EmbeddedBatch(batch.files, [], np.zeros((0, dim), dtype=np.float32), batch.bad)
    pixels = batch.pixels if len(picks) == len(batch.decoded) else batch.pixels[picks]
    return EmbeddedBatch(batch.files, rows, np.asarray(encode(pixels), dtype=np.float32), batch.bad)


def embed_files(reader: ImageFileReader, encode: Callable[[torch.Tensor], np.ndarray], writer: FileWriter, *,
                dim: int, batch_size: int = 32, workers: int | None = None, dedupe: bool = True,
                held: Container[str] = frozenset(), on_batch: Callable[[int], None] | None = None) -> None:
    """The one embedding loop: `reader`'s batches -> `encode` (uint8 crops -> unit vectors) -> `writer`.

    `dedupe` embeds repeated bytes within a batch once (needs a hashing reader) and skips bytes in
    `held` (the writer's live set of stored contents: bytes first seen in an earlier batch of this
    run were decoded - the reader's `skip_shas` is fixed when it starts - but are not embedded again); `on_batch(n)`
    is called after each batch is written with the number of files it consumed (progress).
    A writer that raises stops the loop: what it wrote before stays, the batch in flight is its
    own to make atomic.
    """
    for batch in read_batches(reader, batch_size=batch_size, workers=workers):
        writer.write(_embed_batch(batch, encode, dim, dedupe, held))
        if on_batch is not None:
            on_batch(len(batch.files) + len(batch.bad))


@dataclass
class EncodedFiles:
    """`vectors[i]` (unit float32) belongs to `files[i]`; `bad` lists what could not be read."""

    vectors: np.ndarray
    files: list[DecodedFile]
    bad: list[BadImage] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]


class CollectingWriter:
    """Keeps every vector in memory, in the reader's input order (the Python API's writer)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.chunks: list[np.ndarray] = []
        self.files: list[DecodedFile] = []
        self.bad: list[BadImage] = []

    def write(self, batch: EmbeddedBatch) -> None:
        if batch.rows:
            self.chunks.append(batch.vectors)
            self.files += [batch.files[k] for k in batch.rows]
        self.bad += batch.bad

    def result(self) -> tuple[np.ndarray, list[DecodedFile], list[BadImage]]:
        vectors = np.concatenate(self.chunks) if self.chunks else np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort([f.index for f in self.files], kind="stable")
        return vectors[order], [self.files[i] for i in order], sorted(self.bad, key=lambda b: b.index)


def encode_files(paths: Sequence[str | os.PathLike[str]], encoder: Any, *, batch_size: int = 32,
                 workers: int | None = None, draft: bool = True, hash: bool = False,
                 preprocess: Any = None, on_batch: Callable[[int], None] | None = None) -> EncodedFiles:
    """Files -> unit vectors with a `BatchEncoder`, in input order, bad files set aside.

    `preprocess` defaults to CLIP's for the model's resolution with `draft`; pass one to use a
    custom preprocess (its own draft setting then applies). `on_batch(n)` is called with the
    number of files each batch consumed (progress bars). Every file gets its own row, repeated
    bytes included (`embed_files` with `CollectingWriter`, no dedupe).
    """
    from clipforge.weights.preprocessing import preprocess_for

    if preprocess is None:
        preprocess = preprocess_for(encoder.model, draft=draft)
    reader = ImageFileReader(paths, preprocess, hash=hash)
    writer = CollectingWriter(encoder.embed_dim)
    start = time.perf_counter()
    embed_files(reader, encoder.images, writer, dim=encoder.embed_dim, batch_size=batch_size, workers=workers,
                dedupe=False, on_batch=on_batch)
    seconds = time.perf_counter() - start
    vectors, files, bad = writer.result()
    return EncodedFiles(vectors, files, bad, seconds,
                        {"batch_size": batch_size, "draft": bool(getattr(preprocess, "draft", draft)),
                         "precision": getattr(encoder, "precision", None)})


def with_max_pixels(preprocess: Any, max_pixels: int | None) -> Any:
    """`preprocess` refusing images over `max_pixels` (a copy; unchanged when None or not a `Preprocess`)."""
    if not max_pixels or not hasattr(preprocess, "max_pixels") or preprocess.max_pixels == max_pixels:
        return preprocess
    import copy

    out = copy.copy(preprocess)
    out.max_pixels = int(max_pixels)
    return out
