"""The Milvus store's writer for the one embedding loop, and the filter expressions it answers to.

`MilvusWriter` turns one batch of `clipforge.data.files.embed_files` into one upsert keyed by path:
new contents carry their fresh vector, bytes the store already holds reuse the stored vector (never
embedded twice), a file whose bytes are unchanged keeps its tags and id, and a bad file is a row with
status "failed" and its reason (a zero vector that `status == "ok"` filters out). A new path whose bytes
are a stored file's that no longer exists is that file moved: its row is re-keyed to the new path in
every model space (`MilvusSpace.move_row`), keeping id, vector, tags and added_at, as the embedded
store's relink keeps its record (`indexer.StoreWriter`), instead of a duplicate that prune later
deletes together with its tags. The report counts are the embedded store's (`indexer.AddReport`),
so both stores print the same summary for the same run.
Given the space's tagger (its remembered `tag` vocabulary), the new "ok" rows without tags are
tagged before that upsert, so a new photo is never stored without the tags a filter looks for.

A batch is written under the store's write lock (`MilvusStore.writes`), from reading the rows it keeps tags from to
its upsert, and asks for the space's tagger there (`TagSource`): on milvus-lite a `tag` run of another library
object of the store holds that lock from copying the rows to switching them, with their vocabulary, to a new
collection, so a batch lands wholly before the switch (and is copied and tagged anew by the run) or wholly after it
(tagged with the new vocabulary, keeping the tags the run gave). Tagged with the vocabulary read when the add began,
a batch written after the switch kept the old labels until the next `tag`. Reads take no lock.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from clipforge.data.base import BadImage
from clipforge.data.files import EmbeddedBatch
from clipforge.library.indexer import AddReport, _Planned
from clipforge.library.milvus_store import MAX_ERROR_BYTES, MAX_TAGS, MilvusSpace, image_id, quote
from clipforge.library.store import FileState, ImageRecord

__all__ = ["RECORD_FIELDS", "MilvusWriter", "TagSource", "record_from_row", "row_from_record", "stored_reason",
           "tag_filter"]

RECORD_FIELDS = ["path", "id", "sha256", "size", "mtime_ns", "width", "height", "status", "error", "added_at", "tags",
                 "tag_scores"]
"""The fields of a row that `record_from_row` and the tag readers need (everything but the vector)."""


def record_from_row(row: dict[str, Any]) -> ImageRecord:
    return ImageRecord(int(row["id"]), row["path"], row.get("sha256") or None, int(row["size"]),
                       int(row["mtime_ns"]), int(row["width"]) or None, int(row["height"]) or None,
                       float(row.get("added_at") or 0.0), row["status"], row.get("error") or None)


def row_from_record(record: ImageRecord, vector: np.ndarray | Sequence[float] | None, dim: int,
                    tags: Sequence[tuple[str, float]] = ()) -> dict[str, Any]:
    """The one layout of a model space's row (the inverse of `record_from_row`), for every writer: an `index add`
    batch (`MilvusWriter`) and `index copy` (`clipforge.library.transfer`). A failed file (or no `vector`) holds
    zeros, which `status == "ok"` filters out; its reason is cut to what the schema's field holds; at most
    `MAX_TAGS` tags, in rank order. An `added_at` of 0 is left out: `MilvusSpace.upsert` stamps the time of the
    write, so a new row's time is when it was stored."""
    ok = record.status == "ok" and vector is not None
    row: dict[str, Any] = {
        "path": record.path, "id": int(record.id), "sha256": record.sha256 or "", "size": int(record.size),
        "mtime_ns": int(record.mtime_ns), "width": int(record.width or 0), "height": int(record.height or 0),
        "status": record.status, "error": "" if record.status == "ok" else stored_reason(record.error),
        "tags": [str(label) for label, _ in tags[:MAX_TAGS]],
        "tag_scores": [float(score) for _, score in tags[:MAX_TAGS]],
        "vector": np.asarray(vector, np.float32).tolist() if ok else [0.0] * int(dim)}
    if record.added_at:
        row["added_at"] = float(record.added_at)
    return row


def stored_reason(error: str | None) -> str:
    """A failure reason as a row's `error` field holds it: at most `MAX_ERROR_BYTES` of UTF-8, which is how a Milvus
    server measures a VARCHAR (a cut at 2,000 characters let 2,000 Chinese ones through as 6,000 bytes, and the
    server refuses the whole batch, again on every re-run); characters UTF-8 cannot carry (an undecodable file
    name inside an OS error) written as escapes, since pymilvus cannot send them."""
    text = (error or "").encode("utf-8", "backslashreplace")
    return text[:MAX_ERROR_BYTES].decode("utf-8", "ignore")  # "ignore": a character the cut split in two


def tag_filter(labels: Sequence[str], tag_rank: int = 0, min_score: float = 0.0) -> str:
    """The Milvus expression for "one of `labels` at rank <= tag_rank with probability >= min_score"."""
    # No `array_length(tags) > rank` guard: an index past an array's end is false on both engines, and a
    # 2.3 server refuses `>` on array_length ("GreaterThan is not supported in execution backend").
    terms = []
    for rank in range(int(tag_rank) + 1):
        term = "(" + " or ".join(f"tags[{rank}] == {quote(label)}" for label in labels) + ")"
        if min_score > 0:
            term = f"({term} and tag_scores[{rank}] >= {float(min_score)!r})"
        terms.append(term)
    return "(" + " or ".join(terms) + ")"


Tagger = Callable[[np.ndarray], list[tuple[list[str], list[float]]]]
"""Unit vectors [n, dim] -> each one's (labels, scores) in rank order: a space's vocabulary applied."""

TagSource = Callable[[], Tagger | None]
"""The tagger of the vocabulary the store names for the space's rows now (None: it has none, or the add cannot tag):
asked by each batch under the store's write lock (`milvus_tags.space_tagger`)."""


class MilvusWriter:
    """`embed_files`' writer into one Milvus space: a batch is one upsert keyed by path (idempotent).

    `tags`: where the space's tagger comes from, asked by each batch that has rows to tag (None: rows keep no
    tags; see the module docstring); `tagged` counts the rows it tagged (`MilvusLibrary.last_tagged`). `others`:
    the store's other model spaces, the default first: a moved file is relinked in each of them too, as the embedded
    store's one images table moves it for every model, and a file new to this space takes its `added_at` from them
    (`_first_stored`)."""

    def __init__(self, space: MilvusSpace, report: AddReport, planned: dict[str, _Planned],
                 known: dict[str, FileState], held: set[str], tags: TagSource | None = None,
                 others: Callable[[], Sequence[MilvusSpace]] = tuple) -> None:
        self.space, self.report, self.planned, self.known, self.held = space, report, planned, known, held
        self.tags, self.tagged, self.others = tags, 0, others
        self._by_sha: dict[str, list[str]] | None = None

    def _moved_from(self, sha256: str, path: str) -> str | None:
        """The stored "ok" path holding these bytes whose file is gone (the first by name), as the embedded
        store's writer looks for one (`indexer.StoreWriter._write_item`); None: not a move."""
        if self._by_sha is None:  # built once, from the plan's snapshot of the space's rows
            self._by_sha = {}
            for known_path, state in sorted(self.known.items()):
                if state.status == "ok" and state.sha256:
                    self._by_sha.setdefault(state.sha256, []).append(known_path)
        return next((p for p in self._by_sha.get(sha256, []) if p != path and p in self.known
                     and not os.path.lexists(p)), None)

    def _relink(self, old: str, new: str, size: int, mtime_ns: int) -> bool:
        """Move `old`'s row to `new` here and in every other space holding it; False when this space's
        row vanished meanwhile (the file is then added as usual)."""
        if not self.space.move_row(old, new, size, mtime_ns):
            return False
        for space in self.others():
            space.move_row(old, new, size, mtime_ns)
        state = self.known.pop(old)
        self.known[new] = FileState(state.id, int(size), int(mtime_ns), "ok", state.sha256)
        return True

    def _first_stored(self, paths: Sequence[str]) -> dict[str, float]:
        """path -> `added_at` of its row in another model space (the default space first), for paths new to this
        one: the embedded store's image id is per file, shared by every space, so a file's time must be too (a
        space filled later by `index add --model B` stamped its rows in the order it wrote them, path order, and
        showed another of identical photos than the embedded store). One query per other space holding any of
        them, per batch."""
        found: dict[str, float] = {}
        if not paths:
            return found
        for space in self.others():
            left = [p for p in paths if p not in found]
            if not left:
                break
            for path, row in space.rows_for_paths(left, ["path", "added_at"]).items():
                if row.get("added_at"):
                    found[path] = float(row["added_at"])
        return found

    def write(self, batch: EmbeddedBatch) -> None:
        """One batch, one upsert, under the store's write lock (see the module docstring)."""
        with self.space.store.writes():
            self._write(batch)

    def _write(self, batch: EmbeddedBatch) -> None:
        fresh = batch.by_sha()
        missing = [f.sha256 for f in batch.files if f.sha256 not in fresh]
        # Bytes the store holds are not decoded again (the reader skips them: no width or height), so
        # their size comes from a stored row of the same content, as their vector does.
        stored = self.space.contents_for_shas(missing) if missing else {}
        paths = [f.path for f in batch.files] + [bad.path for bad in batch.bad]
        previous = self.space.rows_for_paths(paths, ["path", "sha256", "tags", "tag_scores", "width", "height",
                                                     "added_at"])
        first = self._first_stored([p for p in paths if not (previous.get(p) or {}).get("added_at")])
        rows = []
        claimed: set[str] = set()
        for item in batch.files:
            plan = self.planned[item.path]
            if item.path not in self.known:
                old = self._moved_from(item.sha256, item.path)
                if old is not None and self._relink(old, item.path, item.size, plan.mtime_ns):
                    self.report.relinked += 1  # nothing embedded, nothing added: the same photo, moved
                    continue
            vector = fresh.get(item.sha256)
            held = stored.get(item.sha256)
            if vector is None and held is not None:
                vector = held["vector"]
            if vector is None:  # held bytes whose row vanished meanwhile: count as failed, retried next run
                self.report.add_failure(BadImage(item.path, "content vanished from the store while indexing"))
                continue
            before = previous.get(item.path)
            keep_tags = before is not None and before.get("sha256") == item.sha256
            width, height = item.width, item.height
            if not width:  # not decoded: this path's own row of the same bytes, else any row of them
                same = before if keep_tags and before is not None and before.get("width") else held
                width, height = (same["width"], same["height"]) if same is not None else (0, 0)
            known = self.known.get(item.path)
            added_at = _added_at(before, first, item.path)
            tags = list(zip(before["tags"], before["tag_scores"], strict=False)) if keep_tags else []
            record = ImageRecord(_id(item.path, known), item.path, item.sha256, item.size, plan.mtime_ns,
                                 width or None, height or None, added_at, "ok", None)
            rows.append(row_from_record(record, vector, self.space.dim, tags))
            new_content = item.sha256 in fresh and item.sha256 not in claimed and item.sha256 not in self.held
            claimed.add(item.sha256)
            if known is None:
                self.report.added += 1
                self.report.embedded += int(new_content)
                self.report.duplicates += 0 if new_content else 1
            elif known.sha256 == item.sha256 and known.status == "ok":
                self.report.touched += 1
            else:
                self.report.updated += 1
                self.report.embedded += int(new_content)
                self.report.rehash_changed += plan.rehash  # read by --rehash only: its bytes had changed
        failed = []  # stored before the batch's photos, so stamped before them: the embedded writer's order
        for bad in batch.bad:
            plan = self.planned.get(bad.path, _Planned(bad.path, 0, 0))
            before_bad = self.known.get(bad.path)
            if plan.rehash and before_bad is not None and before_bad.status == "ok":  # a photo, broken now
                self.report.rehash_changed += 1
            record = ImageRecord(_id(bad.path, self.known.get(bad.path)), bad.path, bad.sha256 or None, plan.size,
                                 plan.mtime_ns, None, None, _added_at(previous.get(bad.path), first, bad.path),
                                 "failed", bad.reason)
            failed.append(row_from_record(record, None, self.space.dim))
            self.report.add_failure(bad)
        untagged = [row for row in rows if row["status"] == "ok" and not row["tags"]]
        tag = self.tags() if self.tags is not None and untagged else None  # the vocabulary named now, not at start
        if tag is not None:  # new or changed bytes: the vocabulary's tags, as `tag` gives
            vectors = np.asarray([row["vector"] for row in untagged], dtype=np.float32)
            for row, (labels, scores) in zip(untagged, tag(vectors), strict=True):
                row["tags"], row["tag_scores"] = labels, scores
            self.tagged += len(untagged)
        self.space.upsert(failed + rows)
        self.held.update(fresh)


def _added_at(before: dict[str, Any] | None, first: dict[str, float], path: str) -> float:
    """A row's time: a re-written file (ok or failed) keeps its row's first time, as the embedded store's record
    does; a file new to this space takes its time in another space (`_first_stored`); 0: stamped on upsert."""
    if before is not None and before.get("added_at"):
        return float(before["added_at"])
    return first.get(path, 0.0)


def _id(path: str, known: FileState | None) -> int:
    """A known path keeps its stored id (a relinked file's is its first path's); a new one gets its own."""
    return known.id if known is not None else image_id(path)
