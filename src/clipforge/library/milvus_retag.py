"""`clipforge tag` on a milvus-lite library: the space's rows, newly tagged, switched in as a whole.

Milvus has no transactions, and `tag` rewrote each photo's row in place after recording the new vocabulary: a run
killed between two chunks left some photos with the new labels, the rest with the old ones, and the store naming the
new vocabulary (a tag filter, `tag --list` and the photos an add tags later all mixed two label sets). Here a run
writes every row of the space - the "ok" ones newly tagged, the failed ones as they are - into a fresh collection
(`<store>_m<fingerprint[:16]>_t<n>`), records the vocabulary for that collection (`milvus_vocabulary`), and then
points the space's registry row at it (`MilvusStore.switch_collection`): a one-row upsert, the one atomic write Milvus
has, switches the rows every reader reads and their vocabulary together. The old collection and its record are
dropped after. Killed anywhere, the library answers with one vocabulary everywhere: the old before the switch, the
new after; what the kill left (a half-written collection, or the old one) is dropped by the next run first
(`drop_leftovers`). The in-place rewrite read and upserted every row with its vector too: the cost is that, plus
creating a collection.

Only on milvus-lite: one process holds a milvus-lite folder (`StoreLockedError`), and in it the run holds the store's
write lock (`MilvusStore.writes`, shared by every library object of the store in the process, taken by each of their
writes) from its first read of the rows to the switch, so nothing writes into the old collection while its rows are
copied; writes waiting for it then go to the new one (`MilvusSpace.collection`). On a Milvus server another
process's `index add` may, and its rows would go with the old collection: there `tag` still rewrites the rows in
place (`MilvusClassify.classify` says so).

The rows are read a chunk at a time (`row_chunks`), never all at once: on milvus-lite, whose query has no paging, their
keys first and then each chunk's rows by key; on a server, as its pages come. Held at once, the vectors of 100,000
photos of a 512-wide model are 1.6 GB of Python floats (10,000 such rows: a peak of 348 MB of Python allocations,
the in-process engine's included, against 187 MB a chunk at a time); read by key, the run takes as long.

An `index add` of another library object of the same store in the process, running while a `tag` switches, writes
each batch under that lock too, from reading the rows whose tags it keeps to its upsert, and asks there for the
tagger of the vocabulary the store names then (`MilvusWriter.write`, `milvus_tags.space_tagger`): a batch lands
before the switch (copied and tagged anew by the run) or after it (tagged with the new vocabulary). Tagged with the
vocabulary read when the add began, its photos kept the old labels until the next `tag`. Holding the lock for a
batch, not the whole add, lets a `tag` run in between two batches; reads take no lock.

A run killed between recording its vocabulary and the switch leaves a record of a collection the registry does not
name: no reader reads it (`VocabularyRecords.has_tag_vocabulary` counts the named collections' records only, so an
add does not load the text tower for it), and the next run drops it with its collection (`drop_leftovers`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import numpy as np

from clipforge.library.milvus_store import MilvusSpace, MilvusStore
from clipforge.library.milvus_writer import RECORD_FIELDS

__all__ = ["CHUNK", "drop_leftovers", "retag_space", "row_chunks", "tag_chunk"]

CHUNK = 1024
"""Rows tagged and written per upsert (what the in-place rewrite wrote per call)."""

Tag = Callable[[np.ndarray], list[tuple[list[str], list[float]]]]


def tag_chunk(rows: list[dict[str, Any]], tag: Tag, counts: Counter[str]) -> None:
    """Set the tags of the "ok" `rows` (their vectors scored by `tag`), counting each one's top label."""
    ok = [row for row in rows if row.get("status", "ok") == "ok"]
    if not ok:
        return
    vectors = np.asarray([row["vector"] for row in ok], dtype=np.float32)
    for row, (names, scores) in zip(ok, tag(vectors), strict=True):
        row["tags"], row["tag_scores"] = names, scores
        counts[names[0]] += 1


def drop_leftovers(milvus: MilvusStore, space: MilvusSpace) -> None:
    """Drop the collections of the space that the registry does not name (what a killed run left: its half-written
    collection before the switch, the old one after), each with its vocabulary record. A collection under such a
    name that is not a clipforge space of the space's dimension (another tool's) is refused, before any is dropped."""
    for collection in milvus.checked_collections(space.fingerprint, space.dim, space.name):  # foreign: refused
        if collection != space.collection:
            milvus.forget_collection(space.fingerprint, collection)


def _next_collection(milvus: MilvusStore, space: MilvusSpace) -> str:
    """`<base>_t<n>`, one above the current collection's number (the base one counts as 0)."""
    base = milvus.base_collection(space.fingerprint)
    number = space.collection.removeprefix(base + "_t")
    return f"{base}_t{int(number) + 1 if number.isdigit() else 1}"


def row_chunks(space: MilvusSpace, filter: str = "") -> Iterator[list[dict[str, Any]]]:
    """The rows matching `filter`, with their vectors, `CHUNK` at a time (see the module docstring): the next chunk is
    read only when the caller asks for it, after writing this one."""
    fields = [*RECORD_FIELDS, "vector"]
    if space.store.spec.kind != "milvus-lite":  # a server's `iter_rows` pages by key: a chunk per page or so
        rows = iter(space.iter_rows(filter, fields))
        while chunk := list(islice(rows, CHUNK)):
            yield chunk
        return
    paths = sorted(row["path"] for row in space.iter_rows(filter, ["path"]))
    for start in range(0, len(paths), CHUNK):
        part = paths[start : start + CHUNK]
        found = space.rows_for_paths(part, fields)
        yield [found[path] for path in part if path in found]


def retag_space(milvus: MilvusStore, space: MilvusSpace, tag: Tag, vocabulary: str) -> tuple[MilvusSpace, Counter[str]]:
    """Tag every "ok" row of `space` with `tag` and make that, with `vocabulary` (JSON), the space's tags in one
    switch (see the module docstring). Returns the space as it now is and the photos' top-label counts."""
    with milvus.writes():  # no write of this process between the rows' read and the switch
        milvus.check_tagsets()  # a foreign one refused before the target collection is made, not after
        drop_leftovers(milvus, space)
        old = space.collection  # after the switch `space.collection` names the new one (`MilvusStore.moved`)
        target = MilvusSpace(milvus, _next_collection(milvus, space), space.fingerprint, space.name, space.dim)
        schema, index = target.layout()
        milvus.call(milvus.client.create_collection, target.collection, schema=schema)
        # The index apart, not waited for: pymilvus polls a new index every 0.5 s, and an empty collection's is built.
        milvus.call(milvus.client.create_index, target.collection, index, sync=False)
        milvus.call(milvus.client.load_collection, target.collection)
        milvus.set_tag_vocabulary(space.fingerprint, vocabulary, collection=target.collection)  # read by no one yet
        counts: Counter[str] = Counter()
        for chunk in row_chunks(space):  # failed ones too
            tag_chunk(chunk, tag, counts)
            target.upsert(chunk)
        milvus.switch_collection(space.fingerprint, target.collection)  # the rows and their vocabulary, together
        milvus.forget_collection(space.fingerprint, old)  # killed before: the next run drops it
    return target, counts
