"""A library's records and vectors in Milvus collections (`pymilvus`; milvus-lite in tests).

Layout, for a store named C (``milvus://HOST:PORT/C`` or ``milvus-lite:PATH#C``):

- ``C_spaces``: the registry, one row per model space (fingerprint, model name, dimension, the
  space's collection, whether it is the library's default model).
- ``C_m<fingerprint[:16]>``: one collection per model space. One row per file, **the file's path
  is the primary key**: path (as text; names that are not UTF-8 as ``b64:`` + base64 of the raw
  bytes), sha256, size, mtime_ns, width, height, status ("ok"/"failed"), error, tags and
  tag_scores (zero-shot labels in rank order), and the unit vector (zeros for a failed file,
  which searches exclude with ``status == "ok"``). `id` is a 53-bit hash of the path: the
  image id the API and web UI use (exact in JavaScript).
- ``C_tagsets``: each model space's tag vocabulary (the labels, templates and top_k of its last
  `tag` run, as JSON), keyed by the space's fingerprint, so that every process adding photos
  tags them with the same labels. Created by the first `tag`; a store without it (made before
  it existed, or never tagged) has no vocabulary. On milvus-lite `tag` moves a space's rows to a
  new collection ``C_m<fingerprint[:16]>_t<n>`` (vocabulary key ``<fingerprint>#t<n>``), and the
  registry row switches rows and vocabulary together (`milvus_vocabulary`, `milvus_retag`).

Source of truth: the collections. Every write is an `upsert` keyed by path, so writing a batch
twice (a re-run after ``kill -9``, a rank restarted by torchrun) leaves each file stored once;
a file is skipped on the next run only when its row is there with the same size and mtime.
A server that goes away mid-run raises `StoreConnectionError` (a `StoreUnavailableError`, an OSError: one
line at the CLI); what was upserted stays, and the next run finishes the rest. A request the engine refuses
(`StoreUnavailableError`), a milvus-lite folder that another process holds (`StoreLockedError`), one whose files
are damaged (`StoreDamagedError`) or a collection under one of the names above that clipforge did not make
(`CollectionMismatchError`, checked before anything is written: `milvus_registry`) is one line naming the cause
instead: re-running never helps there. A collection found released (an admin freeing memory, a milvus-lite server
restarted) is loaded again and the request made once more (`MilvusStore.call`).

A row's `added_at` is when its file was first stored in the store, and it stands for the embedded store's image
id: rows oldest first (`added_at`, then path) is the order the embedded store lists and groups its records in
(`index list`, the copy a search hit shows: `milvus_search`). So every rewrite keeps it (a changed file, a failed
one rewritten by `--retry-failed`, a moved one: `move_row`), a file new to a model space takes its time in another
space (the embedded store's id is per file, shared by every model: `MilvusWriter`), a batch's failed rows are
stamped before its photos (the embedded writer's order), and rows copied in by `index copy` keep the source's time.
One process stamps every row later than the one before (`MilvusStore.stamp`): a batch's rows fell within one step
of the clock and were ordered by path, not as written.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipforge.cores import fork_unsafe
from clipforge.library.backend import StoreSpec, read_token
from clipforge.library.dbfile import path_text, text_path
from clipforge.library.milvus_engine import (
    CollectionMismatchError,
    StoreConnectionError,
    StoreDamagedError,
    StoreLockedError,
    StoreUnavailableError,
    call_rebuilding_index,
    check_lite_folder,
    damage,
    engine_reason,
    index_unreadable,
    interrupted,
    is_engine_error,
    lite_open_failure,
    no_library,
    not_loaded,
    quiet_engine_logs,
)
from clipforge.library.milvus_expr import like_prefix, quote  # where callers found them first
from clipforge.library.milvus_layout import (  # the constants where callers found them first
    MAX_ERROR_BYTES,
    MAX_LABEL_BYTES,
    MAX_TAGS,
    space_schema,
)
from clipforge.library.milvus_registry import SpaceRegistry

__all__ = ["MAX_ERROR_BYTES", "MAX_LABEL_BYTES", "MAX_TAGS", "CollectionMismatchError", "MilvusSpace", "MilvusStore",
           "StoreConnectionError", "StoreDamagedError", "StoreLockedError", "StoreUnavailableError", "image_id",
           "key_path", "like_prefix", "no_library", "path_key", "quote"]

log = logging.getLogger(__name__)

_PAGE = 4096
_MAX_TOPK = 16384  # Milvus's largest search limit


# how long a failed create waits for another writer's create of the same collection to appear
CREATE_RACE_SECONDS = 30.0
# what a create that lost that race is answered: "already exist(s)" (a server), "[Errno 17] File exists" (milvus-lite)
_RACE = re.compile(r"exist", re.IGNORECASE)


path_key, key_path = path_text, text_path  # a file's primary key: the one lossless text of a name (`dbfile`)


def image_id(path: str) -> int:
    """A stable id for a path, < 2**53 so JavaScript reads it exactly."""
    return int.from_bytes(hashlib.blake2b(os.fsencode(path), digest_size=8).digest(), "big") >> 11


_FIELDS = ["path", "id", "sha256", "size", "mtime_ns", "width", "height", "status", "error", "added_at",
           "tags", "tag_scores"]


class MilvusSpace:
    """One model space: the collection of one model's vectors and the files' records."""

    def __init__(self, store: MilvusStore, collection: str, fingerprint: str, name: str, dim: int) -> None:
        self.store, self._collection, self.fingerprint, self.name, self.dim = store, collection, fingerprint, name, dim

    @property
    def collection(self) -> str:
        """The collection of the space's rows: the one it was opened with, or the one a milvus-lite `tag` run of
        this process moved them to since (`MilvusStore.moved`), whichever library object ran it."""
        return self.store.moved(self._collection)

    @property
    def client(self) -> Any:
        return self.store.client

    def create(self) -> None:
        schema, index = self.layout()
        self.store.create_collection(self.collection, schema, index)

    def layout(self) -> tuple[Any, Any]:
        """(schema, index parameters) of a space's collection (the schema: `milvus_layout.space_schema`)."""
        schema = space_schema(self.dim)
        index = self.client.prepare_index_params()
        # Exact inner product (unit vectors: cosine) on the embedded engine, the same ranking as the
        # embedded store; a server picks its own approximate index (AUTOINDEX: HNSW on Milvus).
        kind = "FLAT" if self.store.spec.kind == "milvus-lite" else "AUTOINDEX"
        index.add_index(field_name="vector", index_type=kind, metric_type="IP")
        return schema, index

    # -- reads ------------------------------------------------------------------------------
    def iter_rows(self, filter: str = "", fields: Sequence[str] = _FIELDS) -> Iterator[dict[str, Any]]:
        """Every row matching `filter`, paths decoded: one query on the embedded engine, pages on a server.

        A server's pages are keyset pages (``path > last``, `_PAGE` rows each): Milvus returns a query
        with a limit in primary-key order. Not `query_iterator`: pymilvus writes the last key into the
        next expression unescaped (a file named ``potter's "wheel".jpg`` broke the scan), and on a 2.3
        server its ``iterator`` option skips the consistency wait (rows just written were missing).
        A page that comes back out of key order ends the paging: the rest is read in one query.
        """
        if self.store.spec.kind == "milvus-lite":  # one query: the embedded engine has no iterator timestamps
            yield from self.query(filter or 'path != ""', fields)
            return
        fields = list(dict.fromkeys(["path", *fields]))
        last: str | None = None
        while True:
            expr = filter or 'path != ""'
            if last is not None:
                expr = f"path > {quote(last)} and ({expr})"
            page = self.store.call(self.client.query, self.collection, filter=expr, output_fields=fields,
                                   limit=_PAGE, **self.store.read)
            keys = [row["path"] for row in page]
            if any(a >= b for a, b in zip(keys, keys[1:], strict=False)):  # not key-ordered: no paging
                page = self.store.call(self.client.query, self.collection, filter=expr, output_fields=fields,
                                       **self.store.read)
                keys = []
            for row in page:
                row["path"] = key_path(row["path"])
                yield row
            if len(keys) < _PAGE:
                return
            last = keys[-1]

    def query(self, filter: str, fields: Sequence[str] = _FIELDS, limit: int | None = None,
              strong: bool = True) -> list[dict[str, Any]]:
        """Rows matching `filter`; `strong=False` (the search path) reads without waiting for the
        server's latest writes from other processes (see `MilvusStore.read`)."""
        kwargs = {"limit": int(limit)} if limit else {}
        rows = self.store.call(self.client.query, self.collection, filter=filter, output_fields=list(fields),
                               **kwargs, **(self.store.read if strong else self.store.fast))
        for row in rows:
            if "path" in row:
                row["path"] = key_path(row["path"])
        return list(rows)

    def rows_for_paths(self, paths: Sequence[str], fields: Sequence[str] = _FIELDS) -> dict[str, dict[str, Any]]:
        # Our own quoting: pymilvus's get(ids=...) puts names in single quotes unescaped ("potter's_wheel.jpg").
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(paths), 512):
            keys = ", ".join(quote(path_key(p)) for p in paths[start:start + 512])
            for row in self.query(f"path in [{keys}]", fields):
                out[row["path"]] = row
        return out

    def vectors_for_shas(self, shas: Sequence[str]) -> dict[str, np.ndarray]:
        return {sha: held["vector"] for sha, held in self.contents_for_shas(shas).items()}

    def contents_for_shas(self, shas: Sequence[str]) -> dict[str, dict[str, Any]]:
        """sha256 -> {vector, width, height} of a stored "ok" row holding those bytes (one with a known
        width preferred): what a new path of held bytes reuses without decoding them again."""
        out: dict[str, dict[str, Any]] = {}
        shas = sorted(set(shas))
        for start in range(0, len(shas), 256):
            chunk = shas[start:start + 256]
            expr = f'status == "ok" and sha256 in [{", ".join(quote(s) for s in chunk)}]'
            for row in self.query(expr, ["sha256", "vector", "width", "height"]):
                known = out.get(row["sha256"])
                if known is None or (not known["width"] and row["width"]):
                    out[row["sha256"]] = {"vector": np.asarray(row["vector"], dtype=np.float32),
                                          "width": int(row["width"] or 0), "height": int(row["height"] or 0)}
        return out

    def count(self, filter: str = "") -> int:
        rows = self.store.call(self.client.query, self.collection, filter=filter or 'path != ""',
                               output_fields=["count(*)"], **self.store.read)
        return int(rows[0]["count(*)"]) if rows else 0

    def search(self, vector: np.ndarray, limit: int, filter: str) -> list[tuple[dict[str, Any], float]]:
        """Top `limit` rows by inner product, one per distinct content (sha256).

        Grouping is asked of the server (`group_by_field`, Milvus >= 2.4) and also done here: a 2.3
        server ignores the option and returns every copy of the same bytes, so the search is widened
        until `limit` distinct contents are found or the collection has no more matches.
        """
        limit = int(limit)
        data = [np.asarray(vector, np.float32).tolist()]
        ask = limit
        while True:
            result = self.store.call(self.client.search, self.collection, data=data, limit=ask, filter=filter,
                                     output_fields=_FIELDS, group_by_field="sha256",
                                     search_params={"metric_type": "IP"}, **self.store.fast)
            out: list[tuple[dict[str, Any], float]] = []
            seen: set[str] = set()
            for hit in result[0]:
                entity = dict(hit["entity"])
                if entity.get("sha256") in seen:
                    continue
                seen.add(entity.get("sha256", ""))
                entity["path"] = key_path(entity.get("path", hit.get("id", "")) or hit["id"])
                out.append((entity, float(hit["distance"])))
            if len(out) >= limit or len(result[0]) < ask or ask >= _MAX_TOPK:
                return out[:limit]
            ask = min(_MAX_TOPK, ask * 2 + limit - len(out))

    # -- writes -----------------------------------------------------------------------------
    def upsert(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        for row in rows:
            row["path"] = path_key(row["path"])
            if "added_at" not in row:
                row["added_at"] = self.store.stamp()
        with self.store.writes():  # not into rows a `tag` run is moving (`MilvusStore.writes`)
            self.store.call(self.client.upsert, self.collection, rows)

    def move_row(self, old: str, new: str, size: int, mtime_ns: int) -> bool:
        """Re-key the row of `old` (a moved file) to `new`, keeping everything else: id, vector, tags,
        width/height, added_at - what the embedded store's relink keeps. Primary keys cannot change, so
        the new key is written first and the old one deleted after: a crash between the two leaves a
        duplicate (`index prune` or the next add's relink clears it), never a lost row. False (nothing
        written) when this space has no row for `old`, or already one for `new`."""
        rows = self.rows_for_paths([old, new], [*_FIELDS, "vector"])
        if old not in rows or new in rows:
            return False
        row = rows[old]
        row.update(path=new, size=int(size), mtime_ns=int(mtime_ns),
                   vector=np.asarray(row["vector"], np.float32).tolist())
        self.upsert([row])
        self.delete_paths([old])
        return True

    def delete_paths(self, paths: Sequence[str]) -> int:
        keys = [quote(path_key(p)) for p in paths]
        for start in range(0, len(keys), 512):
            with self.store.writes():
                self.store.call(self.client.delete, self.collection,
                                filter=f"path in [{', '.join(keys[start:start + 512])}]")
        return len(keys)


class MilvusStore(SpaceRegistry[MilvusSpace]):
    """A connection to a Milvus server (or milvus-lite file); from `SpaceRegistry`, the registry of its model spaces
    (and, from `VocabularyRecords`, their tag vocabularies and the collection each one's rows are in)."""

    space_class = MilvusSpace

    def __init__(self, spec: StoreSpec, create: bool = True) -> None:
        """Connect; `create=False` (read-only commands, `serve` without --create) refuses a milvus-lite
        path that holds no store before the engine would create one there (a mistyped --store left an
        empty store folder behind)."""
        self.spec = spec
        # gRPC core logs at INFO on every fork while its threads run ("Other threads are currently calling into
        # gRPC, skipping fork() handlers" on stderr, once per decoding worker), and at ERROR when a milvus-lite
        # engine answers the client's keepalive pings with GOAWAY "too_many_pings" (two lines in the middle of a
        # command's one-line error, seen in the tests); pymilvus raises what matters. Read when grpc is imported.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        try:
            from pymilvus import MilvusClient
        except ImportError:
            # the form every extra's message takes: it works from an installed package (a checkout's
            # constraints.txt is not beside it: `pip install -c constraints.txt -e '.[milvus]'` failed there)
            raise ValueError("a Milvus store needs pymilvus and milvus-lite: pip install 'clipforge[milvus]'") from None
        quiet_engine_logs()
        if spec.kind == "milvus-lite":
            try:  # pymilvus 3 installs it only as its `milvus-lite` extra: its own advice named pymilvus's extra
                import milvus_lite  # noqa: F401
            except ImportError:
                raise ValueError("a milvus-lite store needs milvus-lite (pymilvus is installed without it): "
                                 "pip install 'clipforge[milvus]'") from None
            folder = Path(spec.uri)
            check_lite_folder(spec, folder, create)
            folder.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.client = MilvusClient(spec.uri)
            except Exception as exc:
                if not is_engine_error(exc):
                    raise
                raise lite_open_failure(folder, exc) from None
        else:
            self.client = self.call(MilvusClient, uri=spec.uri, token=read_token(), timeout=30)
        fork_unsafe(self)  # gRPC's threads: decoding workers start from a forkserver while this store lives
        self.registry = f"{spec.collection}_spaces"
        self.tagsets = f"{spec.collection}_tagsets"
        self._checked: set[str] = set()  # collections found to be clipforge's (`check_layout`), not asked again
        # Consistency on a server. `read` (Strong) sees every write acknowledged before it, whoever made
        # it: what planning a run, remove/prune and stats use (a re-run after kill -9 must see the rows
        # the killed run wrote; pymilvus's default, Bounded, returned none of rows written 0.1 s before).
        # It waits for the server's next time tick (~0.2 s on Milvus 2.3). `fast` (Session): searches,
        # which see this process's own writes at once and other processes' after that tick.
        lite = spec.kind == "milvus-lite"
        self.read: dict[str, Any] = {} if lite else {"consistency_level": "Strong"}
        self.fast: dict[str, Any] = {} if lite else {"consistency_level": "Session"}
        self._stamped, self._stamp_lock = 0.0, threading.Lock()

    def stamp(self) -> float:
        """Now, as a new row's `added_at`: later than every stamp this store gave before, so rows keep the order
        they were written in (see the module docstring)."""
        with self._stamp_lock:
            self._stamped = max(time.time(), math.nextafter(self._stamped, math.inf))
            return self._stamped

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`fn(*args)`, with an engine failure as one StoreUnavailableError sentence.

        A collection found released (`milvus_engine.not_loaded`: an admin's `release_collection`, a milvus-lite
        server restarted) is loaded and the call made once more: only opening a space loaded it, so a running
        `serve` answered every search and page with a 503 until another process opened the store. Still released
        after that, it is the one-line failure; a server that does not answer the load is a StoreConnectionError.
        On milvus-lite an unreadable index file is repaired and the call made once more
        (`milvus_engine.call_rebuilding_index`); another unreadable file (or a collection that lost its files) is
        a StoreDamagedError naming it. A failure of the connection (`milvus_engine.interrupted`) is a
        StoreConnectionError, the one kind that a re-run gets past; the advice that a re-run finishes the rest is
        added to it by the writer (`MilvusLibrary.add`), the one place where it is true."""
        collection = args[0] if args and isinstance(args[0], str) else None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_engine_error(exc):
                raise
            if collection is None or not not_loaded(exc) or fn == getattr(self.client, "load_collection", None):
                return self._failed(exc, collection, fn, args, kwargs)
        log.info("Milvus store %s: collection %s was released; loading it again", self.spec.describe(), collection)
        self._once(self.client.load_collection, collection, (collection,), {})
        return self._once(fn, collection, args, kwargs)

    def _once(self, fn: Any, collection: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """`fn(*args)` with a failure said as `call` says it, and no further load."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_engine_error(exc):
                raise
            return self._failed(exc, collection, fn, args, kwargs)

    def _failed(self, exc: Exception, collection: str | None, fn: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        """Raise the one-line error for an engine failure of `fn(*args)` on `collection` (see `call`), or return what
        the call answers once a milvus-lite index file it could not read is rebuilt."""
        reason = engine_reason(exc)
        failed = StoreConnectionError if interrupted(exc) else StoreUnavailableError
        if self.spec.kind != "milvus-lite":
            raise failed(f"Milvus store {self.spec.describe()} failed ({reason})") from None
        if index_unreadable(reason):  # derived files: rebuilt, and the call made once more
            return call_rebuilding_index(Path(self.spec.uri), collection, reason, fn, *args, **kwargs)
        broken = damage(Path(self.spec.uri), reason, collection)
        if broken is not None:
            raise StoreDamagedError(broken) from None
        raise failed(f"Milvus store {self.spec.describe()} failed ({reason})") from None

    def create_collection(self, name: str, schema: Any, index: Any) -> None:
        """Create `name`; another writer (a torchrun rank) creating it first is fine.

        The other writer's create may still be under way when ours fails ("[Errno 17] File exists" from a
        milvus-lite server while it lays out the collection's files, before `has_collection` says so): the
        failure is ours only if the collection has not appeared within `CREATE_RACE_SECONDS`. Any other refusal (a
        quota, a permission) is raised at once."""
        try:
            self.call(self.client.create_collection, name, schema=schema, index_params=index)
        except StoreUnavailableError as exc:
            if not _RACE.search(str(exc)):  # a quota, a permission, a schema: said at once
                raise
            deadline = time.monotonic() + CREATE_RACE_SECONDS
            while not self.call(self.client.has_collection, name):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        try:
            self.call(self.client.close)
        finally:
            fork_unsafe(self, False)
