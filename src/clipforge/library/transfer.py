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
  `index add` changes it meanwhile; a Milvus source by every row's (added_at, path) first, sorted oldest first
  (an embedded destination numbers its records in the source's order, so it shows the same copy of identical
  photos and lists in the same order: review 65), then each page's full rows by path. Memory is bounded by
  `batch_size` for an embedded source; a Milvus source also holds every row's path and time.
- **Crash story.** Every write is keyed by path (a Milvus upsert; the embedded store's ``ON CONFLICT(path)``
  in one transaction per batch), so a copy killed at any point (``kill -9``) is finished by running it again,
  and a re-run leaves each file stored once. A copy adds and replaces, never deletes.
- **Image ids.** Rows copied into Milvus get Milvus's id of their path (`milvus_store.image_id`, what
  `index add` gives a new file; unique across libraries merged into one collection); Milvus to Milvus keeps
  the stored ids; an embedded destination numbers its records itself.
- **Refusals** (`CopyRefused`, one line, before anything is written): the same store at both ends, a missing
  source or space, a destination that holds another library (its default model is not the source's), a
  destination space of the same model with another dimension, and a tag vocabulary with a label longer than a
  Milvus destination holds.
- **Uploads** are files of the source's folder: into an embedded destination (`--to-library`) they are copied
  to its ``uploads/`` and its records name the copies (`uploads.copy_upload`); a Milvus destination's records
  name the source's files, as every other record names the file it was indexed from.
- **Not copied:** thumbnails and zero-shot caches (rebuilt on demand), the FAISS index's kind (an embedded destination builds a flat index on its first search; `index rebuild --index ivf`).
  A record with no vector in a space (a file indexed only into another model's space) is skipped and counted.

This module runs the copy (choosing the spaces, the refusals, the loop over pages) and holds its report; the
reading end is `clipforge.library.transfer_sources`, the writing end `clipforge.library.transfer_targets`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipforge.errors import UserError
from clipforge.library.library_base import names_space
from clipforge.library.transfer_sources import SpaceInfo as SpaceInfo
from clipforge.library.transfer_sources import _MilvusSource, _SqliteSource
from clipforge.library.transfer_targets import _MilvusTarget, _SqliteTarget

__all__ = ["CopyRefused", "CopyReport", "SpaceInfo", "copy_library"]

MAX_BATCH_SIZE = 1_000_000


class CopyRefused(UserError, ValueError):
    """A copy that would mix libraries, overwrite its own source or copy nothing; refused before any write."""


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
        line = (
            f"copied {count_noun(len(self.spaces), 'model space')} ({counts} files, "
            f"{count_noun(self.failed, 'failed record')}, {vocabulary_noun}) from {self.source} to "
            f"{self.destination} "
            f"in {self.seconds:.1f}s ({self.files / max(self.seconds, 1e-9):.0f} files/s)"
        )
        skipped = sum(s["no_vector"] for s in self.spaces)
        if skipped:
            line += (
                f"; {count_noun(skipped, 'record')} without a vector in its space skipped (`clipforge index "
                "add --model M` on the destination embeds them)"
            )
        cut = sum(s["tags_cut"] for s in self.spaces)
        if cut:
            line += f"; {count_noun(cut, 'image')} kept its first 16 tags (a Milvus row holds 16)"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "spaces": self.spaces,
            "files": self.files,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
        }


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
        raise CopyRefused(
            "name the destination: --to milvus://HOST:PORT/COLLECTION (or milvus-lite:PATH.db), or "
            "--to-library PATH for an embedded (SQLite + FAISS) library"
        )
    root = Path(to_library).expanduser()
    blocker = next((p for p in [root, *root.parents] if os.path.lexists(p)), None)
    if blocker is not None and not blocker.is_dir():
        raise CopyRefused(
            f"--to-library {to_library}: {blocker} is a file, not a folder; give --to-library a "
            "library folder or a new folder's path"
        )
    return _SqliteTarget(to_library)


def _chosen(source: Any, space: str | None) -> list[SpaceInfo]:
    spaces = source.spaces()
    if not spaces:
        raise CopyRefused(
            f"{source.name} holds no model space yet: nothing to copy (`clipforge index add FOLDER` first)"
        )
    if space is None:
        return spaces
    match = [s for s in spaces if names_space(space, s.name, s.fingerprint)]
    if len(match) != 1:
        raise CopyRefused(
            f"{source.name} has no single model space {space!r} (spaces: "
            f"{', '.join(s.label() for s in spaces)})"
        )
    return match


def _check_destination(source: Any, target: Any, spaces: list[SpaceInfo]) -> None:
    """Refuse a destination that holds another library, or a space of the same model of another width, or (a
    Milvus one) a collection the copy would use that is not clipforge's: each was refused only when the copy
    reached it, after the spaces before it (or every row, before the vocabularies) were written."""
    there = target.existing()
    default = next(s for s in source.spaces() if s.default)
    if there and there[0].fingerprint != default.fingerprint:
        raise CopyRefused(
            f"{target.name} holds another library: its default model is {there[0].label()}, {source.name}'s is "
            f"{default.label()}; copy into a new collection or an empty folder (nothing was written)"
        )
    held = {s.fingerprint: s for s in there}
    for space in spaces:
        other = held.get(space.fingerprint)
        if other is not None and other.dim != space.dim:
            raise CopyRefused(
                f"{target.name}'s model space {other.label()} holds {other.dim}-dimensional vectors, "
                f"{source.name}'s {space.dim}-dimensional ones (nothing was written)"
            )
    check = getattr(target, "check_collections", None)  # a Milvus destination's
    if check is not None:
        check(spaces)


def _check_labels_fit(source: Any, target: Any, spaces: list[SpaceInfo]) -> None:
    """Refuse, before anything is written, a tag vocabulary a Milvus destination cannot hold: a server refuses
    rows whose labels pass `milvus_classify.MAX_LABEL_BYTES` (milvus-lite takes them), and the copied
    vocabulary would then fail every later `index add` there, as `tag` on such a store refuses it up front."""
    if not isinstance(target, _MilvusTarget):
        return
    from clipforge.library.milvus_classify import check_label_sizes

    for info in spaces:
        vocabulary = source.vocabulary(info) or {}
        try:
            check_label_sizes([str(label) for label in vocabulary.get("labels") or ()])
        except ValueError as exc:
            raise CopyRefused(
                f"{source.name}'s tag vocabulary of {info.label()} cannot go to {target.name}: {exc}; tag the "
                "source again with shorter labels (nothing was written)"
            ) from None


def copy_library(
    store: str | None = None,
    library: str | os.PathLike[str] | None = None,
    *,
    to: str | None = None,
    to_library: str | os.PathLike[str] | None = None,
    space: str | None = None,
    batch_size: int = 1000,
    progress: bool = True,
) -> CopyReport:
    """Copy the library at `store` (None: the embedded one in `library`) into `to` (a `--store` string) or the
    embedded library `to_library`: every model space, or `space` (a model name or fingerprint prefix). See the
    module docstring for what is copied and refused; the report counts what was written."""
    from tqdm.auto import tqdm

    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or not 1 <= batch_size <= MAX_BATCH_SIZE
    ):
        raise CopyRefused(
            f"--batch-size must be a whole number from 1 to {MAX_BATCH_SIZE} (files per write), got "
            f"{batch_size}"
        )
    started = time.perf_counter()
    target = _target(to, to_library)
    source = _open_source(store, library)
    try:
        if source.key() == target.key():
            flag = "--to-library" if isinstance(target, _SqliteTarget) else "--to"
            raise CopyRefused(f"{source.name} is both the source and the destination: name another {flag}")
        spaces = _chosen(source, space)
        _check_labels_fit(source, target, spaces)  # first: asking the destination what it holds may create it
        _check_destination(source, target, spaces)
        target.keep_ids = source.kind == "milvus"
        report = CopyReport(source.name, target.name)
        dtype = source.vector_dtype()
        with source.lock():
            total = sum(source.count(s) for s in spaces)
            target.open()
            with (
                target.lock(),
                tqdm(
                    total=total, unit="file", desc="copying", disable=not progress, dynamic_ncols=True
                ) as bar,
            ):
                for i, info in enumerate(spaces):
                    report.spaces.append(_copy_space(source, target, info, i == 0, dtype, batch_size, bar))
        report.seconds = time.perf_counter() - started
        return report
    finally:
        source.close()
        target.close()


def _copy_space(
    source: Any, target: Any, info: SpaceInfo, first: bool, dtype: str, batch_size: int, bar: Any
) -> dict[str, Any]:
    done = {
        "name": info.name or None,
        "fingerprint": info.fingerprint,
        "embed_dim": info.dim,
        "default": info.default,
        "files": 0,
        "failed": 0,
        "no_vector": 0,
        "tags_cut": 0,
        "vocabulary": False,
    }
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
