"""`clipforge index copy`: a library's model spaces moved to another store, no model loaded, no image read.

A library that outgrows one machine moves to Milvus with the embeddings it already holds (hours of CPU for a
large collection not spent again), and back. What this module decides:

- **What is copied.** Every model space (or the one named), each with its file records (path, sha256, size,
  mtime, width, height, status ok/failed and the reason, added_at), its vectors, its tags with their scores
  in rank order, and its tag vocabulary; which space is the default is kept (the default is copied first,
  so a new store makes it its default, as its first `index add` would).
- **One layout.** Rows are written by the stores' own writers, never laid out here: a Milvus row is
  `milvus_writer.row_from_record` (what `index add`'s `MilvusWriter` upserts) through `MilvusSpace.upsert`;
  an embedded library's are the `Transaction` methods its `StoreWriter` and tagging use (`insert_embedding`,
  `upsert_image`, `mark_failed`, `replace_tags`, `set_meta`). So a later `index add` on the destination skips
  every unchanged file (same size and mtime, bytes embedded), and `search`, `index stats`, `tag` and
  `serve --store` answer as they do on the source.
- **Reading.** The embedded source is read in keyset pages of image records (`Store.images_after`) with their
  page's vectors (`vectors_for_shas`) and tags (`tags_for_images`), holding the library's lock so that no
  `index add` changes it meanwhile; a Milvus source through `MilvusSpace.iter_rows` (pages on a server; a
  milvus-lite source, small by nature, in one query). Memory is bounded by `batch_size`, whatever the size.
- **Crash story.** Every write is keyed by path (a Milvus upsert; the embedded store's ``ON CONFLICT(path)``
  in one transaction per batch), so a copy killed at any point (``kill -9``) is finished by running it again,
  and a re-run leaves each file stored once. A copy adds and replaces, never deletes.
- **Image ids.** Rows copied into Milvus get Milvus's id of their path (`milvus_store.image_id`, what
  `index add` gives a new file; unique across libraries merged into one collection); Milvus to Milvus keeps
  the stored ids; an embedded destination numbers its records itself.
- **Refusals** (`CopyRefused`, one line, before anything is written): the same store at both ends, a missing
  source or space, a destination that holds another library (its default model is not the source's), and a
  destination space of the same model with another dimension.
- **Not copied:** thumbnails and zero-shot caches (rebuilt on demand), uploads (files, not records), the FAISS
  index's kind (an embedded destination builds a flat index on its first search; `index rebuild --index ivf`).
  A record with no vector in a space (a file indexed only into another model's space) is skipped and counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from clipforge.errors import UserError
from clipforge.library.store import ImageRecord

__all__ = ["CopyRefused", "CopyReport", "SpaceInfo", "copy_library"]

VECTOR_DTYPE_META = "vector_dtype"  # the library's meta key (`library._META_DTYPE`)
MAX_BATCH_SIZE = 1_000_000

Item = tuple[ImageRecord, "np.ndarray | None", list[tuple[str, float]]]
"""One file of one space: its record, its vector (None for a failed file) and its tags in rank order."""


class CopyRefused(UserError, ValueError):
    """A copy that would mix libraries, overwrite its own source or copy nothing; refused before any write."""


@dataclass(frozen=True)
class SpaceInfo:
    fingerprint: str
    name: str
    dim: int
    default: bool

    def label(self) -> str:
        return f"{self.name or '(object)'} ({self.fingerprint[:12]})"


@dataclass
class CopyReport:
    """What a copy wrote: one entry per space (files, failed records, records without a vector, cut tags)."""

    source: str
    destination: str
    spaces: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files(self) -> int:
        return sum(s["files"] for s in self.spaces)

    @property
    def failed(self) -> int:
        return sum(s["failed"] for s in self.spaces)

    def summary_line(self) -> str:
        from clipforge.library.tagging import count_noun

        counts = " + ".join(str(s["files"]) for s in self.spaces) or "0"
        vocabularies = sum(bool(s["vocabulary"]) for s in self.spaces)
        vocabulary_noun = f"{vocabularies} tag " + ("vocabulary" if vocabularies == 1 else "vocabularies")
        line = (f"copied {count_noun(len(self.spaces), 'model space')} ({counts} files, "
                f"{count_noun(self.failed, 'failed record')}, {vocabulary_noun}) from {self.source} to "
                f"{self.destination} "
                f"in {self.seconds:.1f}s ({self.files / max(self.seconds, 1e-9):.0f} files/s)")
        skipped = sum(s["no_vector"] for s in self.spaces)
        if skipped:
            line += (f"; {count_noun(skipped, 'record')} without a vector in its space skipped (`clipforge index "
                     "add --model M` on the destination embeds them)")
        cut = sum(s["tags_cut"] for s in self.spaces)
        if cut:
            line += f"; {count_noun(cut, 'image')} kept its first 16 tags (a Milvus row holds 16)"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination, "spaces": self.spaces, "files": self.files,
                "failed": self.failed, "seconds": round(self.seconds, 3)}


# -- sources ---------------------------------------------------------------------------------
class _SqliteSource:
    """An embedded library, read page by page under its lock."""

    kind = "sqlite"

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        from clipforge.library.library import Library

        self.library = Library(root, create=False)
        self.store = self.library.store
        self.name = f"library {self.library.paths.root}"

    def key(self) -> tuple[str, ...]:
        return ("sqlite", os.path.realpath(self.library.paths.root))

    def spaces(self) -> list[SpaceInfo]:
        found = [SpaceInfo(s["fingerprint"], s["name"] or "", s["embed_dim"], s["default"])
                 for s in self.library.spaces()]  # a damaged database: one line naming it (`Store.model_spaces`)
        return sorted(found, key=lambda s: not s.default)

    def vector_dtype(self) -> str:
        return self.store.get_meta(VECTOR_DTYPE_META) or "float32"  # (`Library.stats` counts every table)

    def count(self, space: SpaceInfo) -> int:
        return sum(self.store.status_counts().values())

    def vocabulary(self, space: SpaceInfo) -> dict[str, Any] | None:
        from clipforge.library.tagging import tag_vocabulary

        return tag_vocabulary(self.store, space.fingerprint)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        from clipforge.library.lock import library_lock

        return library_lock(self.library.paths.lock)

    def batches(self, space: SpaceInfo, size: int) -> Iterator[list[Item]]:
        last = -1
        while True:
            records = self.store.images_after(last, size)
            if not records:
                return
            last = records[-1].id
            shas = sorted({r.sha256 for r in records if r.status == "ok" and r.sha256})
            vectors = self.store.vectors_for_shas(space.fingerprint, shas)
            tags = self.store.tags_for_images(space.fingerprint, [r.id for r in records])
            yield [(r, vectors.get(r.sha256 or "") if r.status == "ok" else None, tags.get(r.id, []))
                   for r in records]

    def close(self) -> None:
        self.library.close()


class _MilvusSource:
    """A Milvus store (server or milvus-lite), read space by space."""

    kind = "milvus"

    def __init__(self, spec: Any) -> None:
        from clipforge.library.milvus_store import MilvusStore, no_library

        self.spec, self.name = spec, spec.describe()
        self.milvus = MilvusStore(spec, create=False)
        if not self.milvus.spaces():
            self.milvus.close()
            raise FileNotFoundError(no_library(spec))

    def key(self) -> tuple[str, ...]:
        return (self.spec.kind, self.spec.uri, self.spec.collection)

    def spaces(self) -> list[SpaceInfo]:
        return [SpaceInfo(s.fingerprint, s.name or "", s.dim, i == 0) for i, s in enumerate(self.milvus.spaces())]

    def vector_dtype(self) -> str:
        return "float32"

    def _space(self, space: SpaceInfo) -> Any:
        found = self.milvus.space(space.fingerprint)  # loads its collection
        assert found is not None
        return found

    def count(self, space: SpaceInfo) -> int:
        return self._space(space).count()

    def vocabulary(self, space: SpaceInfo) -> dict[str, Any] | None:
        from clipforge.library.milvus_tags import Vocabularies
        from clipforge.library.tagging import tag_vocabulary

        return tag_vocabulary(Vocabularies(self.milvus), space.fingerprint)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def batches(self, space: SpaceInfo, size: int) -> Iterator[list[Item]]:
        from clipforge.library.milvus_writer import RECORD_FIELDS, record_from_row

        page: list[Item] = []
        for row in self._space(space).iter_rows(fields=[*RECORD_FIELDS, "vector"]):
            record = record_from_row(row)
            tags = list(zip(row.get("tags") or [], map(float, row.get("tag_scores") or []), strict=False))
            page.append((record, np.asarray(row["vector"], np.float32) if record.status == "ok" else None, tags))
            if len(page) >= size:
                yield page
                page = []
        if page:
            yield page

    def close(self) -> None:
        self.milvus.close()


# -- destinations ----------------------------------------------------------------------------
class _MilvusTarget:
    """A Milvus store: one `add_space` per space, one upsert of `row_from_record` rows per batch."""

    def __init__(self, spec: Any) -> None:
        self.spec, self.name = spec, spec.describe()
        self.milvus: Any = None
        self.space: Any = None
        self.keep_ids = False

    def key(self) -> tuple[str, ...]:
        return (self.spec.kind, self.spec.uri, self.spec.collection)

    def existing(self) -> list[SpaceInfo]:
        """The spaces already there; a milvus-lite path holding no store is not opened (nothing made yet)."""
        if self.spec.kind == "milvus-lite" and not (Path(self.spec.uri) / "collections").is_dir():
            return []
        self.open()
        return [SpaceInfo(s.fingerprint, s.name or "", s.dim, i == 0) for i, s in enumerate(self.milvus.spaces())]

    def open(self) -> None:
        if self.milvus is None:
            from clipforge.library.milvus_store import MilvusStore

            self.milvus = MilvusStore(self.spec, create=True)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # upserts keyed by path: concurrent writers cannot double a file

    def begin_space(self, space: SpaceInfo, first: bool, dtype: str) -> None:
        self.space = self.milvus.add_space(space.fingerprint, space.name, space.dim)

    def write(self, items: Sequence[Item]) -> int:
        """One upsert; returns how many images had more tags than a row holds (kept: the first 16)."""
        from clipforge.library.milvus_store import MAX_TAGS, image_id
        from clipforge.library.milvus_writer import row_from_record

        rows = [row_from_record(record if self.keep_ids else replace(record, id=image_id(record.path)), vector,
                                self.space.dim, tags) for record, vector, tags in items]
        self.space.upsert(rows)
        return sum(len(tags) > MAX_TAGS for _, _, tags in items)

    def set_vocabulary(self, space: SpaceInfo, vocabulary: dict[str, Any]) -> None:
        self.milvus.set_tag_vocabulary(space.fingerprint, json.dumps(vocabulary))

    def close(self) -> None:
        if self.milvus is not None:
            self.milvus.close()


class _SqliteTarget:
    """An embedded library: one transaction per batch, written as `index add` and `tag` write."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        from clipforge.library.paths import LibraryPaths

        self.paths = LibraryPaths(root)
        self.name = f"library {self.paths.root}"
        self.library: Any = None
        self.keep_ids = False
        self.dtype = "float32"

    def key(self) -> tuple[str, ...]:
        return ("sqlite", os.path.realpath(self.paths.root))

    def existing(self) -> list[SpaceInfo]:
        if not self.paths.db.exists():
            return []
        self.open()
        return sorted((SpaceInfo(s["fingerprint"], s["name"] or "", s["embed_dim"], s["default"])
                       for s in self.library.spaces()), key=lambda s: not s.default)

    def open(self) -> None:
        if self.library is None:
            from clipforge.library.library import Library

            self.library = Library(self.paths.root, create=True)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        from clipforge.library.lock import library_lock

        return library_lock(self.paths.lock)  # writers take turns, as every `index add` does

    def begin_space(self, space: SpaceInfo, first: bool, dtype: str) -> None:
        from clipforge.library.library import record_model

        record_model(self.library.store, space.fingerprint, space.name, space.dim, dtype)  # once: the first space
        self.dtype = self.library.store.get_meta(VECTOR_DTYPE_META) or dtype
        self.space, self.first = space, first

    def write(self, items: Sequence[Item]) -> int:
        store, fingerprint = self.library.store, self.space.fingerprint
        with store.transaction() as tx:
            tx.ensure_model(fingerprint, self.space.name or None, self.space.dim)
            for record, vector, tags in items:
                if record.status == "ok":
                    tx.insert_embedding(record.sha256, fingerprint, vector, self.dtype)
                    image_id = tx.upsert_image(record.path, record.sha256, record.size, record.mtime_ns, record.width,
                                               record.height, "ok", None, record.added_at or None)
                    if tags:
                        tx.replace_tags(fingerprint, [(image_id, label, score, rank)
                                                      for rank, (label, score) in enumerate(tags)])
                # Records are shared by every space here: a later space's failure never overrides one written
                elif self.first or store.image_by_path(record.path) is None:  # (seen inside this transaction)
                    tx.mark_failed(record.path, record.size, record.mtime_ns, record.error or "", record.sha256,
                                   record.added_at or None)
            tx.bump_generation()  # the FAISS index is rebuilt on the next search
        return 0

    def set_vocabulary(self, space: SpaceInfo, vocabulary: dict[str, Any]) -> None:
        from clipforge.library.tagging import VOCABULARY_KEY

        with self.library.store.transaction() as tx:
            tx.set_meta(VOCABULARY_KEY + space.fingerprint, json.dumps(vocabulary))

    def close(self) -> None:
        if self.library is not None:
            self.library.close()


# -- the copy --------------------------------------------------------------------------------
def _open_source(store: str | None, library: str | os.PathLike[str] | None) -> Any:
    from clipforge.library.backend import parse_store

    spec = parse_store(store)
    return _SqliteSource(library) if spec.kind == "sqlite" else _MilvusSource(spec)


def _target(to: str | None, to_library: str | os.PathLike[str] | None) -> Any:
    from clipforge.library.backend import parse_store

    try:
        spec = parse_store(to) if to else None
    except ValueError as exc:  # parse_store speaks of --store; here the destination is --to
        raise CopyRefused(str(exc).replace("--store ", "--to ", 1)) from None
    if spec is not None and spec.kind != "sqlite":
        if to_library is not None:
            raise CopyRefused(f"--to {to} names the destination already; --to-library is for an embedded one")
        return _MilvusTarget(spec)
    if to_library is None:
        raise CopyRefused("name the destination: --to milvus://HOST:PORT/COLLECTION (or milvus-lite:PATH.db), or "
                          "--to-library PATH for an embedded (SQLite + FAISS) library")
    root = Path(to_library).expanduser()
    blocker = next((p for p in [root, *root.parents] if os.path.lexists(p)), None)
    if blocker is not None and not blocker.is_dir():
        raise CopyRefused(f"--to-library {to_library}: {blocker} is a file, not a folder; give --to-library a "
                          "library folder or a new folder's path")
    return _SqliteTarget(to_library)


def _chosen(source: Any, space: str | None) -> list[SpaceInfo]:
    spaces = source.spaces()
    if not spaces:
        raise CopyRefused(f"{source.name} holds no model space yet: nothing to copy (`clipforge index add FOLDER` "
                          "first)")
    if space is None:
        return spaces
    match = [s for s in spaces if space in (s.name, s.fingerprint) or
             (len(space) >= 6 and s.fingerprint.startswith(space))]
    if len(match) != 1:
        raise CopyRefused(f"{source.name} has no single model space {space!r} (spaces: "
                          f"{', '.join(s.label() for s in spaces)})")
    return match


def _check_destination(source: Any, target: Any, spaces: list[SpaceInfo]) -> None:
    """Refuse a destination that holds another library, or a space of the same model of another width."""
    there = target.existing()
    if not there:
        return
    default = next(s for s in source.spaces() if s.default)
    if there[0].fingerprint != default.fingerprint:
        raise CopyRefused(
            f"{target.name} holds another library: its default model is {there[0].label()}, {source.name}'s is "
            f"{default.label()}; copy into a new collection or an empty folder (nothing was written)")
    held = {s.fingerprint: s for s in there}
    for space in spaces:
        other = held.get(space.fingerprint)
        if other is not None and other.dim != space.dim:
            raise CopyRefused(f"{target.name}'s model space {other.label()} holds {other.dim}-dimensional vectors, "
                              f"{source.name}'s {space.dim}-dimensional ones (nothing was written)")


def copy_library(store: str | None = None, library: str | os.PathLike[str] | None = None, *, to: str | None = None,
                 to_library: str | os.PathLike[str] | None = None, space: str | None = None,
                 batch_size: int = 1000, progress: bool = True) -> CopyReport:
    """Copy the library at `store` (None: the embedded one in `library`) into `to` (a `--store` string) or the
    embedded library `to_library`: every model space, or `space` (a model name or fingerprint prefix). See the
    module docstring for what is copied and refused; the report counts what was written."""
    from tqdm.auto import tqdm

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise CopyRefused(f"--batch-size must be a whole number from 1 to {MAX_BATCH_SIZE} (files per write), got "
                          f"{batch_size}")
    started = time.perf_counter()
    target = _target(to, to_library)
    source = _open_source(store, library)
    try:
        if source.key() == target.key():
            flag = "--to-library" if isinstance(target, _SqliteTarget) else "--to"
            raise CopyRefused(f"{source.name} is both the source and the destination: name another {flag}")
        spaces = _chosen(source, space)
        _check_destination(source, target, spaces)
        target.keep_ids = source.kind == "milvus"
        report = CopyReport(source.name, target.name)
        dtype = source.vector_dtype()
        with source.lock():
            total = sum(source.count(s) for s in spaces)
            target.open()
            with target.lock(), tqdm(total=total, unit="file", desc="copying", disable=not progress,
                                     dynamic_ncols=True) as bar:
                for i, info in enumerate(spaces):
                    report.spaces.append(_copy_space(source, target, info, i == 0, dtype, batch_size, bar))
        report.seconds = time.perf_counter() - started
        return report
    finally:
        source.close()
        target.close()


def _copy_space(source: Any, target: Any, info: SpaceInfo, first: bool, dtype: str, batch_size: int,
                bar: Any) -> dict[str, Any]:
    done = {"name": info.name or None, "fingerprint": info.fingerprint, "embed_dim": info.dim,
            "default": info.default, "files": 0, "failed": 0, "no_vector": 0, "tags_cut": 0, "vocabulary": False}
    bar.set_description(f"copying {info.name or info.fingerprint[:12]}")
    target.begin_space(info, first, dtype)
    for page in source.batches(info, batch_size):
        items = [item for item in page if item[0].status != "ok" or item[1] is not None]
        done["no_vector"] += len(page) - len(items)
        if items:
            done["tags_cut"] += target.write(items)
        done["files"] += len(items)
        done["failed"] += sum(record.status != "ok" for record, _, _ in items)
        bar.update(len(page))
    vocabulary = source.vocabulary(info)
    if vocabulary is not None:  # after the rows: a re-run of a copy killed before it writes it then
        target.set_vocabulary(info, vocabulary)
        done["vocabulary"] = True
    return done
