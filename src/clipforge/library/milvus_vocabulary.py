"""A Milvus store's tag vocabularies, and which collection holds a model space's rows: a part of `MilvusStore`.

Each space's vocabulary (the labels, templates and top_k of its last `tag` run, as JSON) is a row of the
``C_tagsets`` collection, kept in Milvus, not in the `--library` folder: every process (each `index add`, a
server's uploads) must tag new photos with the labels of the last `tag`, wherever it runs. A space's rows start in
its base collection ``C_m<fingerprint[:16]>`` (`MilvusStore.add_space`), whose vocabulary is keyed by the
fingerprint; on milvus-lite a `tag` run moves them to a new collection ``..._t<n>``, whose vocabulary is keyed
``<fingerprint>#t<n>``, and then points the space's registry row at it (`clipforge.library.milvus_retag`): readers
find the rows and their vocabulary through that one row, so both switch together.

Within the process (the one that holds a milvus-lite folder) two things are shared by every `MilvusStore` of the
same store, so that a second library object of it (a script's second handle, a search object beside the one that
tags) follows a move: the collections that moved and where to (`moved`, read by `MilvusSpace.collection` on every
call: an object kept the collection it had opened, and after another one's `tag` dropped it, each of its reads was
"... is damaged: collection ... does not exist"), and one lock for the store's writes (`writes`), which a `tag` run
holds from its first read of the rows to the switch: a write of another object meanwhile went into the collection
being copied, and was dropped with it (photos added lost, photos removed back). An add holds it for each batch, from
choosing the batch's tags to storing it (`MilvusWriter.write`), so no batch is tagged from a vocabulary a switch
replaced before it was stored.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from clipforge.library.backend import StoreSpec
from clipforge.library.milvus_expr import quote
from clipforge.library.milvus_layout import MAX_VOCABULARY, tagsets_schema

__all__ = ["MAX_VOCABULARY", "VocabularyRecords"]

_SHARED = threading.Lock()  # guards the two tables below
_WRITES: dict[tuple[str, str], threading.RLock] = {}  # (milvus-lite folder, store name) -> its writes' lock
_MOVED: dict[tuple[str, str, str], str] = {}  # (folder, store name, a collection a `tag` run left) -> where to


class VocabularyRecords:
    """The vocabulary and space-collection methods of `MilvusStore` (see the module docstring), which sets the
    attributes declared here and provides `call` and `create_collection`."""

    spec: StoreSpec
    client: Any
    registry: str
    tagsets: str
    read: dict[str, Any]
    _checked: set[str]

    if TYPE_CHECKING:  # MilvusStore's

        def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any: ...

        def create_collection(self, name: str, schema: Any, index: Any) -> None: ...

        def check_layout(self, collection: str, schema: Callable[[], Any], what: str,
                         show_dim: bool = False) -> None: ...

    # -- shared by the process's objects of this store (see the module docstring) ------------------
    def _lite_key(self) -> tuple[str, str] | None:
        """The store's key in the process's tables; None for a server (whose spaces never move)."""
        return (os.path.realpath(self.spec.uri), self.spec.collection) if self.spec.kind == "milvus-lite" else None

    def writes(self) -> AbstractContextManager[Any]:
        """The lock every write to a space's rows holds (`MilvusSpace.upsert`, `delete_paths`), shared by every
        object of this milvus-lite store in the process; a `tag` run holds it from reading the rows to the switch
        (`milvus_retag`). Re-entrant. A server's writes take none: `tag` rewrites its rows in place."""
        key = self._lite_key()
        if key is None:
            return nullcontext()
        with _SHARED:
            return _WRITES.setdefault(key, threading.RLock())

    def moved(self, collection: str) -> str:
        """The collection a space's rows are in now, given one they were in: itself, or the one a `tag` run of
        this process switched them to since (`switch_collection`)."""
        key = self._lite_key()
        return collection if key is None else _MOVED.get((*key, collection), collection)

    def _moved_to(self, old: str, new: str) -> None:
        """Remember that the rows in `old` (and in whatever had moved to it) are in `new` now."""
        key = self._lite_key()
        if key is None:
            return
        with _SHARED:
            for known, to in list(_MOVED.items()):
                if known[:2] == key and to == old:
                    _MOVED[known] = new
            _MOVED[(*key, old)] = new
            _MOVED.pop((*key, new), None)  # the current one moved nowhere (names are never reused but after a drop)

    def forget_moves(self, fingerprint: str) -> None:
        """Forget where the space's collections moved (`drop_space`): filled again, it starts in its base one."""
        key, base = self._lite_key(), self.base_collection(fingerprint)
        with _SHARED:
            for known in [k for k in _MOVED if k[:2] == key and (k[2] == base or k[2].startswith(base + "_t"))]:
                del _MOVED[known]

    # -- the collections of a space's rows ----------------------------------------------------
    def base_collection(self, fingerprint: str) -> str:
        """The collection a space's rows start in (`add_space`); a milvus-lite `tag` moves them to a ``_t<n>`` one."""
        return f"{self.spec.collection}_m{fingerprint[:16]}"

    def collections_of(self, fingerprint: str) -> list[str]:
        """Every collection of the space's rows in the store: its base one and those `tag` runs made (the current
        one and any a killed run left), by name."""
        base = self.base_collection(fingerprint)
        return sorted(name for name in self.call(self.client.list_collections)
                      if name == base or (name.startswith(base + "_t") and name[len(base) + 2:].isdigit()))

    def vocabulary_key(self, fingerprint: str, collection: str | None) -> str:
        """The key of the vocabulary of the rows in `collection`: the fingerprint for the base collection (and
        every store made before `tag` moved rows), ``<fingerprint>#t<n>`` for a ``_t<n>`` one."""
        base = self.base_collection(fingerprint)
        if collection is None or collection == base:
            return fingerprint
        return f"{fingerprint}#{collection.removeprefix(base + '_')}"

    def current_collection(self, fingerprint: str) -> str | None:
        """The collection the registry names for the space (None: no such space). A server's is its base one,
        never moved (see `clipforge.library.milvus_retag`), and is not asked for (a Strong read waits ~0.2 s)."""
        if self.spec.kind != "milvus-lite" or not self.call(self.client.has_collection, self.registry):
            return None
        self.call(self.client.load_collection, self.registry)
        rows = self.call(self.client.query, self.registry, filter=f"fingerprint == {quote(fingerprint)}",
                         output_fields=["collection"], limit=1, **self.read)
        return rows[0]["collection"] if rows else None

    def switch_collection(self, fingerprint: str, collection: str) -> None:
        """Point the space's registry row at `collection`: one row upsert, which switches the rows every reader
        reads and the vocabulary they are tagged with (keyed by `collection`) together."""
        rows = self.call(self.client.query, self.registry, filter=f"fingerprint == {quote(fingerprint)}",
                         output_fields=["fingerprint", "name", "dim", "collection", "is_default", "created"],
                         limit=1, **self.read)
        if not rows:
            raise ValueError(f"{self.spec.describe()} has no model space {fingerprint[:12]}")
        self.call(self.client.upsert, self.registry, [{**rows[0], "collection": collection, "dummy": [0.0, 0.0]}])
        self._moved_to(rows[0]["collection"], collection)  # this process's other objects of the space follow

    def forget_collection(self, fingerprint: str, collection: str) -> None:
        """Drop a collection of the space's rows that the registry does not name, its vocabulary record first (a
        record never outlives its collection, so the next run finds whatever a kill left by the collection)."""
        if self._has_tagsets():
            key = self.vocabulary_key(fingerprint, collection)
            self.call(self.client.delete, self.tagsets, filter=f"fingerprint == {quote(key)}")
        if self.call(self.client.has_collection, collection):
            self.call(self.client.drop_collection, collection)
        self._checked.discard(collection)  # a collection made later under the name is checked again

    # -- tag vocabularies -----------------------------------------------------------------------
    def _has_tagsets(self) -> bool:
        """Whether the vocabulary collection exists (checked to be clipforge's, and loaded, when it does); stores made
        before it have none. Once found it is remembered: a server asks on every upload, and the collection is never
        dropped."""
        if self.__dict__.get("_tagsets_ready"):
            return True
        if not self.call(self.client.has_collection, self.tagsets):
            return False
        self.check_layout(self.tagsets, tagsets_schema, "record of tag vocabularies")
        self.call(self.client.load_collection, self.tagsets)
        self._tagsets_ready = True
        return True

    def check_tagsets(self) -> None:
        """Refuse a ``C_tagsets`` that is not clipforge's (`CollectionMismatchError`) now, before anything is
        written: found only when a vocabulary was first needed, it failed an upload of a server mid-request
        (HTTP 500, the file left in uploads/), a copy after it had written a space, a `tag` after it had made
        its new collection."""
        self._has_tagsets()

    def has_tag_vocabulary(self) -> bool:
        """Whether some model space's rows have a vocabulary: an add then needs the text tower as well.

        Only the records of the collections the registry names count: a milvus-lite `tag` run killed between
        recording its vocabulary (for the collection it was filling) and its switch left a record that names no
        reader's rows, and tags nothing (`tag_vocabulary` reads the current collection's); counted, it had every
        later add load the text tower for nothing. The run made its collection before the record, so the next `tag`
        run drops both (`milvus_retag.drop_leftovers`)."""
        if not self._has_tagsets() or not self.call(self.client.has_collection, self.registry):
            return False
        self.call(self.client.load_collection, self.registry)
        spaces = self.call(self.client.query, self.registry, filter='fingerprint != ""',
                           output_fields=["fingerprint", "collection"], **self.read)
        keys = ", ".join(quote(self.vocabulary_key(r["fingerprint"], r["collection"])) for r in spaces)
        return bool(keys) and bool(self.call(self.client.query, self.tagsets, filter=f"fingerprint in [{keys}]",
                                             output_fields=["fingerprint"], limit=1, **self.read))

    def tag_vocabulary(self, fingerprint: str) -> str | None:
        """The JSON text of the vocabulary of the space's current rows (see `tagging.tag_vocabulary`), or None."""
        if not self._has_tagsets():
            return None
        key = self.vocabulary_key(fingerprint, self.current_collection(fingerprint))
        rows = self.call(self.client.query, self.tagsets, filter=f"fingerprint == {quote(key)}",
                         output_fields=["vocabulary"], limit=1, **self.read)
        return rows[0]["vocabulary"] if rows else None

    def set_tag_vocabulary(self, fingerprint: str, vocabulary: str, collection: str | None = None) -> None:
        """Remember the vocabulary (JSON text, at most `MAX_VOCABULARY` characters) of the space's rows in
        `collection` (default: the one the registry names), replacing the last."""
        if len(vocabulary.encode()) > MAX_VOCABULARY:
            raise ValueError(f"a Milvus library keeps a tag vocabulary of at most {MAX_VOCABULARY} characters; "
                             f"these labels take {len(vocabulary.encode())}: tag with fewer labels")
        if not self._has_tagsets():
            index = self.client.prepare_index_params()
            index.add_index(field_name="dummy", index_type="FLAT", metric_type="L2")
            self.create_collection(self.tagsets, tagsets_schema(), index)
            self.call(self.client.load_collection, self.tagsets)
        key = self.vocabulary_key(fingerprint, collection or self.current_collection(fingerprint))
        self.call(self.client.upsert, self.tagsets, [{"fingerprint": key, "vocabulary": vocabulary,
                                                      "dummy": [0.0, 0.0]}])
