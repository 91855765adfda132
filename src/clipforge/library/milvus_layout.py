"""The collections clipforge makes in a Milvus store, and the check that one already there is one of them.

A store named C uses three kinds of collection (see `clipforge.library.milvus_store`): ``C_spaces`` (the registry
of model spaces), ``C_tagsets`` (their tag vocabularies) and ``C_m<fingerprint[:16]>`` (one model space's rows).
Their schemas are built here, once, for both uses: creating a collection, and comparing one that exists with what
clipforge would have created (`check_layout`).

Why the comparison: a name is all that ties a collection to clipforge, and another tool (or another clipforge
collection name that happens to match) may have made a collection under it first. Reused blindly, the first insert
failed half-way ("vector field 'vector' expected dim 512, got 256") after the registry had recorded the space, so
every later command saw a healthy empty library whose searches failed in the engine's words
(``group_by_field 'sha256' not found in schema``). The check runs before anything is written and refuses in one
line naming the collection and how it differs; a re-run never helps there (`CollectionMismatchError`).

Compared: each field's name, type, element type (arrays), primary key and vector dimension, in order. Not
compared: string and array lengths (a server and milvus-lite report them differently), the dynamic field, and the
index (clipforge's own collections on a server and on milvus-lite differ there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from clipforge.library.milvus_engine import CollectionMismatchError

__all__ = ["MAX_ERROR_BYTES", "MAX_LABEL_BYTES", "MAX_TAGS", "MAX_VOCABULARY", "check_layout", "registry_schema",
           "space_schema", "tagsets_schema"]

MAX_TAGS = 16
MAX_LABEL_BYTES = 512  # one stored tag label, in UTF-8 bytes: what a Milvus server measures a VARCHAR in
MAX_ERROR_BYTES = 2048  # one failed file's reason, in UTF-8 bytes
MAX_VOCABULARY = 65535  # characters of one space's vocabulary JSON: Milvus's longest VARCHAR


def space_schema(dim: int) -> Any:
    """The schema of a model space's collection: one row per file, the path its primary key."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("path", DataType.VARCHAR, max_length=8192, is_primary=True)
    schema.add_field("id", DataType.INT64)
    schema.add_field("sha256", DataType.VARCHAR, max_length=64)
    schema.add_field("size", DataType.INT64)
    schema.add_field("mtime_ns", DataType.INT64)
    schema.add_field("width", DataType.INT32)
    schema.add_field("height", DataType.INT32)
    schema.add_field("status", DataType.VARCHAR, max_length=8)
    schema.add_field("error", DataType.VARCHAR, max_length=MAX_ERROR_BYTES)
    schema.add_field("added_at", DataType.DOUBLE)
    schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_TAGS,
                     max_length=MAX_LABEL_BYTES)
    schema.add_field("tag_scores", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=MAX_TAGS)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(dim))
    return schema


def registry_schema() -> Any:
    """The schema of ``C_spaces``: one row per model space."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("fingerprint", DataType.VARCHAR, max_length=128, is_primary=True)
    schema.add_field("name", DataType.VARCHAR, max_length=4096)
    schema.add_field("dim", DataType.INT64)
    schema.add_field("collection", DataType.VARCHAR, max_length=256)
    schema.add_field("is_default", DataType.BOOL)
    schema.add_field("created", DataType.DOUBLE)
    schema.add_field("dummy", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
    return schema


def tagsets_schema() -> Any:
    """The schema of ``C_tagsets``: one vocabulary (JSON) per space's collection of rows."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("fingerprint", DataType.VARCHAR, max_length=128, is_primary=True)
    schema.add_field("vocabulary", DataType.VARCHAR, max_length=MAX_VOCABULARY)
    schema.add_field("dummy", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
    return schema


class _Field(NamedTuple):
    name: str
    type: int
    element: int | None
    primary: bool
    dim: int | None

    def text(self) -> str:
        kind = _type_name(self.type) + (f"<{_type_name(self.element)}>" if self.element is not None else "")
        return f"{self.name} {kind}" + (f"({self.dim})" if self.dim is not None else "") + \
            (" primary key" if self.primary else "")


def _type_name(value: int) -> str:
    from pymilvus import DataType

    try:
        return DataType(value).name
    except ValueError:
        return str(value)


def _fields(fields: Iterable[Mapping[str, Any]]) -> list[_Field]:
    """The compared part of each field of a schema (`CollectionSchema.to_dict()` or `describe_collection`)."""
    from pymilvus import DataType

    out = []
    for field in fields:
        name = str(field.get("name", ""))
        if name.startswith("$") or field.get("is_dynamic") or field.get("is_function_output"):
            continue  # the engine's own: the dynamic-field column, a function's output
        kind = int(field.get("type", -1))
        params = field.get("params") or {}
        element = field.get("element_type") if kind == int(DataType.ARRAY) else None
        dim = params.get("dim")
        out.append(_Field(name, kind, int(element) if element is not None else None, bool(field.get("is_primary")),
                          int(dim) if dim is not None else None))
    return out


def _dim(fields: list[_Field]) -> int | None:
    return next((f.dim for f in fields if f.dim is not None), None)


def difference(found: list[_Field], wanted: list[_Field], show_dim: bool) -> tuple[str, str] | None:
    """(what the collection has, what clipforge needs), in words; None when they agree."""
    if found == wanted:
        return None
    names, want_names = [f.name for f in found], [f.name for f in wanted]
    if names != want_names or (show_dim and _dim(found) != _dim(wanted)):
        dims = (f"dim {_dim(found)} and " if _dim(found) is not None else "no vector field and ",
                f"dim {_dim(wanted)} and ") if show_dim else ("", "")
        return f"{dims[0]}fields [{', '.join(names)}]", f"{dims[1]}fields [{', '.join(want_names)}]"
    pairs = [(f, w) for f, w in zip(found, wanted, strict=True) if f != w]
    return (f"field{'s' * (len(pairs) > 1)} {', '.join(f.text() for f, _ in pairs)}",
            ", ".join(w.text() for _, w in pairs))


def check_layout(call: Callable[..., Any], client: Any, store: tuple[str, str], collection: str, schema: Any,
                 what: str, show_dim: bool = False) -> None:
    """Refuse `collection` (which exists) unless its fields are `schema`'s: a `CollectionMismatchError` naming it,
    what it holds and what clipforge's `what` ("registry of model spaces", "space for M") needs. `call`: the store's
    `MilvusStore.call`; `store`: (the store as shown to people, its collection name C); `show_dim`: say the vector
    dimension first (a space)."""
    described = call(client.describe_collection, collection)
    differs = difference(_fields(described.get("fields") or ()), _fields(schema.to_dict()["fields"]), show_dim)
    if differs is None:
        return
    where, name = store
    raise CollectionMismatchError(
        f"Milvus store {where}: collection {collection} exists with {differs[0]}; clipforge's {what} needs "
        f"{differs[1]}: drop it or use another collection name (a store named {name} uses the collections "
        f"{name}_spaces, {name}_tagsets, {name}_m<fingerprint> and {name}_m<fingerprint>_t<n>)"
    )
