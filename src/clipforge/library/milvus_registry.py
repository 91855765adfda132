"""A Milvus store's registry of model spaces (``C_spaces``): a part of `MilvusStore`.

One row per model space: its fingerprint (the key), model name, dimension, the collection of its rows and whether it
is the library's default model (the first space, the one that replaced an empty default, or the one `index set-default`
named: `set_default`). Every
collection clipforge finds already there under one of its names (the registry, a space's rows) is checked to be
clipforge's before it is used (`check_layout`, `milvus_layout`): another tool's collection under the name was
reused, and the first write failed on it for good after the registry had recorded the space.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from clipforge.library.milvus_expr import quote
from clipforge.library.milvus_layout import check_layout, registry_schema, space_schema
from clipforge.library.milvus_vocabulary import VocabularyRecords

__all__ = ["SpaceRegistry"]

_REGISTRY_FIELDS = ["fingerprint", "name", "dim", "collection", "is_default", "created"]


class _Space(Protocol):
    """What the registry uses of a `milvus_store.MilvusSpace` (not imported: that module imports this one)."""

    fingerprint: str
    name: str
    dim: int

    def __init__(self, store: Any, collection: str, fingerprint: str, name: str, dim: int) -> None: ...

    @property
    def collection(self) -> str: ...

    def create(self) -> None: ...


SpaceT = TypeVar("SpaceT", bound=_Space)  # `milvus_store.MilvusSpace`


class SpaceRegistry(VocabularyRecords, Generic[SpaceT]):
    """The model-space methods of `MilvusStore` (see the module docstring), which sets `space_class` (its
    `MilvusSpace`) and the attributes `VocabularyRecords` declares, and `_checked` (the collections found to be
    clipforge's)."""

    space_class: type[SpaceT]
    _checked: set[str]

    # -- layouts ----------------------------------------------------------------------------
    def check_layout(self, collection: str, schema: Callable[[], Any], what: str, show_dim: bool = False) -> None:
        """Refuse an existing `collection` whose fields are not those of `schema()` (another tool's collection under
        a name clipforge uses: `milvus_layout.check_layout`), before anything is written to or read from it; asked
        once per collection and object (a server asks `spaces` on every upload)."""
        if collection not in self._checked:
            check_layout(self.call, self.client, (self.spec.describe(), self.spec.collection), collection, schema(),
                         what, show_dim)
            self._checked.add(collection)

    def _check_space(self, space: SpaceT) -> None:
        self.check_layout(space.collection, lambda: space_schema(space.dim), f"space for {space.name or '(object)'}",
                          show_dim=True)

    def checked_collections(self, fingerprint: str, dim: int, name: str | None) -> list[str]:
        """`collections_of(fingerprint)` (found by name: the base one and ``_t<n>`` ones), each checked to be a
        clipforge space of `dim` first: the callers drop the ones the registry does not name
        (`milvus_retag.drop_leftovers`, `drop_space`), and another tool's collection under such a name was dropped,
        rows and all, without a word. A foreign one refuses the whole run before anything is dropped."""
        found = self.collections_of(fingerprint)
        for collection in found:
            self.check_layout(collection, lambda: space_schema(dim), f"space for {name or '(object)'}", show_dim=True)
        return found

    # -- spaces -----------------------------------------------------------------------------
    def _ensure_registry(self) -> None:
        if self._has_registry():
            return
        index = self.client.prepare_index_params()
        index.add_index(field_name="dummy", index_type="FLAT", metric_type="L2")
        self.create_collection(self.registry, registry_schema(), index)
        self._checked.add(self.registry)

    def _has_registry(self) -> bool:
        """Whether the registry exists (checked to be clipforge's and loaded when it does)."""
        if not self.call(self.client.has_collection, self.registry):
            return False
        self.check_layout(self.registry, registry_schema, "registry of model spaces")
        self.call(self.client.load_collection, self.registry)
        return True

    def spaces(self) -> list[SpaceT]:
        """The model spaces, the default (first) one first; [] for a new store."""
        return [space for space, _ in sorted(self.spaces_by_age(), key=lambda pair: not pair[1])]

    def spaces_by_age(self) -> list[tuple[SpaceT, bool]]:
        """Each model space and whether it is the default, oldest first: the order the embedded store lists its
        models in (`index stats`, `MilvusLibrary.spaces`). The default is the flagged one (the oldest flagged, or the
        oldest space when none is: a `set_default` killed between its two writes); [] for a new store."""
        if not self._has_registry():
            return []
        # A filter that every row passes: a 2.3 server refuses an empty one without a limit.
        rows = self.call(self.client.query, self.registry, filter='fingerprint != ""', output_fields=_REGISTRY_FIELDS,
                         **self.read)
        rows = sorted(rows, key=lambda r: (r["created"], r["fingerprint"]))
        default = min(range(len(rows)), key=lambda i: not rows[i]["is_default"], default=None)
        return [(self.space_class(self, r["collection"], r["fingerprint"], r["name"], int(r["dim"])), i == default)
                for i, r in enumerate(rows)]

    def space(self, fingerprint: str) -> SpaceT | None:
        space = next((s for s in self.spaces() if s.fingerprint == fingerprint), None)
        if space is not None and self.call(self.client.has_collection, space.collection):
            self._check_space(space)
            self.call(self.client.load_collection, space.collection)
        return space

    def add_space(self, fingerprint: str, name: str, dim: int) -> SpaceT:
        """Create (or reopen) the space of a model; the first space becomes the default.

        A collection already under the space's name is checked to be a clipforge space of this dimension before
        the registry is made or the space recorded in it: another tool's collection there was reused, the space
        recorded, and the first insert failed on it for good."""
        existing = self.space(fingerprint)
        if existing is not None:
            return existing
        space = self.space_class(self, self.base_collection(fingerprint), fingerprint, name, dim)
        there = self.call(self.client.has_collection, space.collection)
        if there:
            self._check_space(space)
        self._ensure_registry()
        if not there:
            space.create()
            self._checked.add(space.collection)
        self.call(self.client.load_collection, space.collection)
        first = not self.spaces()
        self.call(self.client.upsert, self.registry, [{"fingerprint": fingerprint, "name": name, "dim": int(dim),
                                                       "collection": space.collection, "is_default": first,
                                                       "created": time.time(), "dummy": [0.0, 0.0]}])
        return space

    def set_default(self, fingerprint: str) -> None:
        """Make the space of `fingerprint` the default one (the first `spaces` lists), the others not: what an add
        does whose model filled a store made for another model that holds none of its vectors (`MilvusLibrary.add`,
        as the embedded store's `record_model`), and `index set-default` (`MilvusLibrary.set_default`). The old default loses its flag first: killed between the two
        upserts, no space has it and the oldest is the default again, so the next add of the model switches it."""
        rows = self.call(self.client.query, self.registry, filter='fingerprint != ""', output_fields=_REGISTRY_FIELDS,
                         **self.read)
        others = [{**r, "is_default": False, "dummy": [0.0, 0.0]} for r in rows
                  if r["is_default"] and r["fingerprint"] != fingerprint]
        mine = [{**r, "is_default": True, "dummy": [0.0, 0.0]} for r in rows if r["fingerprint"] == fingerprint]
        if not mine:
            raise ValueError(f"{self.spec.describe()} has no model space {fingerprint[:12]}")
        if others:
            self.call(self.client.upsert, self.registry, others)
        self.call(self.client.upsert, self.registry, mine)

    def drop_space(self, fingerprint: str) -> SpaceT:
        space = self.space(fingerprint)
        if space is None:
            raise ValueError(f"{self.spec.describe()} has no model space {fingerprint[:12]}")
        with self.writes():  # not under a `tag` run of another object (`milvus_retag`)
            found = self.checked_collections(fingerprint, space.dim, space.name)  # before anything is dropped
            self.call(self.client.delete, self.registry, ids=[fingerprint])
            for collection in found:  # with what a killed `tag` run left
                self.forget_collection(fingerprint, collection)
            self.forget_moves(fingerprint)
            if self._has_tagsets():  # as the embedded store's drop forgets the space's vocabulary
                self.call(self.client.delete, self.tagsets, filter=f"fingerprint == {quote(fingerprint)}")
        return space
