"""Keep the FAISS index in step with the database it is derived from.

The index file is a cache; what it must contain is recorded in the database, not beside the
file. That record (one `meta` row per model fingerprint) holds the index spec, the row
count, the largest embedding id, the database's `removals` counter, a hash over every
(embedding id, content hash) the index holds, and a checksum of the index file's bytes. A
saved index is trusted only if all of that still matches: the rows up to that id, and the
file byte for byte - overwritten bytes in a vector (scores of 4e37, wrong hits) mean a
rebuild, never a wrong answer. Rows added since are appended (embedding ids only grow);
anything else - missing or damaged file, rows removed, another kind requested, another
model - means rebuild.

Inside one process the cheap `generation` counter (bumped by every write) tells when to look
again, so a search costs no hashing. New rows (an upload, a running `index add`) are added to
the live index in place instead of rebuilding it; readers and that in-place add are kept
apart by a readers-writer lock, while a full rebuild happens beside the live index and is
swapped in.

A save that fails (a full disk, a read-only library) leaves the index searchable from memory: a search or an add
warns and goes on, `rebuild` (the `index rebuild` command, whose only job is the file) raises
(`clipforge.library.index_file`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from clipforge.atomic import atomic_path, remove_stale_temps
from clipforge.library.dbfile import DamagedLibraryError, display_path
from clipforge.library.index_file import file_checksum, save_failure, unsaved_warning
from clipforge.library.paths import LibraryPaths
from clipforge.library.rwlock import ReadWriteLock
from clipforge.library.store import Store
from clipforge.library.vector_index import IndexSpec, VectorIndex, build_index

__all__ = ["STATE_FORMAT", "IndexManager"]

log = logging.getLogger(__name__)

STATE_FORMAT = 3
_SPEC_META_KEY = "index_spec"
_STATE_META_PREFIX = "index_state:"
_IVF_RETRAIN_GROWTH = 2.0  # retrain IVF cells once the library has doubled since training


def _worth_saving(unsaved: int, count: int) -> bool:
    """Whether an index grown in place by `unsaved` of its `count` vectors is saved (a file short of a few is still
    correct, and each search appends them in memory: saving a large index for every photo added would not be)."""
    return bool(unsaved) and (unsaved >= 10_000 or unsaved >= 0.05 * max(1, count))


class IndexManager:
    """Loads, validates, extends, rebuilds and saves the index of one model fingerprint."""

    def __init__(self, store: Store, paths: LibraryPaths, fingerprint: str, embed_dim: int) -> None:
        self.store = store
        self.paths = paths
        self.fingerprint = fingerprint
        self.embed_dim = int(embed_dim)
        self._lock = threading.Lock()  # one loader/builder at a time
        self._rw = ReadWriteLock()
        self._current: VectorIndex | None = None
        self._state: dict[str, Any] = {}
        # "memory", "loaded", "extended" or "rebuilt": what the last get() did (for tests and stats)
        self.last_action: str | None = None
        self.rebuild_reason: str | None = None  # why the last rebuild happened

    # -- configuration ----------------------------------------------------------------------
    def spec(self) -> IndexSpec:
        """The index kind asked for (flat by default). A spec edited into something else - not JSON, nested
        past the decoder's depth, an unknown kind, a cell count that would allocate terabytes - is one
        DamagedLibraryError naming the database, the key and the command that records a good one (which works
        on such a library: `Library.rebuild_index` with a kind does not read the old spec)."""
        data, why = self.store.meta_json(_SPEC_META_KEY)
        if why is None and data is None:
            return IndexSpec()
        if why is None:
            try:
                if not isinstance(data, dict):
                    raise ValueError(f"a JSON {type(data).__name__}, not an object")
                return IndexSpec.from_dict(data)
            except (ValueError, TypeError) as exc:
                why = f"its meta key {_SPEC_META_KEY!r} is not an index spec: {exc}"
        raise DamagedLibraryError(
            f"library database {display_path(str(self.store.path))} is damaged ({why}); choose the index again "
            "with `clipforge index rebuild --index flat` (or ivf, hnsw, auto)"
        )

    def set_spec(self, spec: IndexSpec) -> None:
        with self.store.transaction() as tx:
            tx.set_meta(_SPEC_META_KEY, json.dumps(spec.to_dict(), sort_keys=True))
            tx.bump_generation()

    @property
    def index_path(self) -> Path:
        return self.paths.index_file(self.fingerprint)

    @property
    def state_key(self) -> str:
        """The `meta` row recording what the saved index file holds."""
        return _STATE_META_PREFIX + self.fingerprint

    # -- access -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search the up-to-date index (safe to call from many threads)."""
        self.get()
        with self._rw.read():
            assert self._current is not None
            return self._current.search(queries, k)

    def get(self) -> VectorIndex:
        """The current index, after catching up with the database when it changed."""
        generation = self.store.generation()
        if self._current is not None and self._state.get("generation") == generation:
            self.last_action = "memory"
            return self._current
        with self._lock:
            generation = self.store.generation()
            if self._current is not None and self._state.get("generation") == generation:
                return self._current
            spec, removals = self.spec(), self.store.removals()
            if self._current is not None and self._can_extend(self._state, spec, removals):
                self._extend(self._current, self._state, generation)
                self.last_action = "extended"
                self._maybe_save()
                return self._current
            loaded = self._load_if_valid(spec, removals)
            if loaded is not None:
                vindex, state = loaded
                added = self._extend(vindex, state, generation)
                self.last_action = "loaded"
                self._current, self._state = vindex, state
                if added:
                    self._maybe_save()
                return vindex
            self._warn_unsaved(self._rebuild(spec, removals, generation))
            return self._current

    def rebuild(self, spec: IndexSpec | None = None) -> VectorIndex:
        """Force a rebuild (optionally with a new spec, remembered for later rebuilds) and save it.

        Saving is the point of a rebuild asked for (`index rebuild`), so a save the disk or the database refused
        raises (`index_file.save_failure`: one line naming the file and the cause), the index built staying in
        memory for this process's searches; a rebuild on the way to a search only warns (`get`)."""
        if spec is not None:
            self.set_spec(spec)
        with self._lock:
            self.rebuild_reason = "asked for"
            unsaved = self._rebuild(self.spec(), self.store.removals(), self.store.generation())
            if unsaved is not None:
                raise save_failure(self.index_path, unsaved) from unsaved
            assert self._current is not None
            return self._current

    def status(self) -> dict[str, Any]:
        """What is on disk and in memory, cheaply: no rebuilding, and no hashing - a file whose size or
        mtime differs from the recorded ones is reported as changed (its bytes are checked on load).

        `next_search` says what a process's next search does with the saved file: "none" (fresh), "build" (none
        saved), "check_file" (changed on disk), "rebuild" (rows removed, another kind asked for), or appends the
        `newer_vectors` added since it was saved, "extend_and_save" when they are enough to save (`_worth_saving`)
        else "extend_in_memory": then every process's searches append them again and the file never becomes
        fresh until `index rebuild` (it said "stale (rebuilt on next search)" however many searches ran)."""
        saved = self._read_saved()
        out: dict[str, Any] = {
            "path": str(self.index_path),
            "requested": self.spec().kind,
            "vectors_in_db": self.store.embedding_count(self.fingerprint),
            "last_action": self.last_action,
            "rebuild_reason": self.rebuild_reason,
            "newer_vectors": 0,
        }
        try:
            on_disk = os.stat(self.index_path)
        except OSError:
            on_disk = None
        if saved is None or on_disk is None:
            out.update({"exists": False, "fresh": False, "next_search": "build"})
            return out
        info = saved.get("info") or {}
        file_unchanged = (on_disk.st_size, on_disk.st_mtime_ns) == (
            saved.get("file_bytes"),
            saved.get("file_mtime_ns"),
        )
        same_rows = saved.get("removals") == self.store.removals() and saved.get("spec") == self.spec().to_dict()
        count = saved.get("count")
        fresh = same_rows and count == out["vectors_in_db"] and file_unchanged
        if fresh:
            next_search = "none"
        elif not file_unchanged:
            next_search = "check_file"
        elif same_rows and type(count) is int and count < out["vectors_in_db"]:
            out["newer_vectors"] = newer = out["vectors_in_db"] - count
            next_search = "extend_and_save" if _worth_saving(newer, out["vectors_in_db"]) else "extend_in_memory"
        else:
            next_search = "rebuild"
        out.update(
            {
                "exists": True,
                "fresh": fresh,
                "next_search": next_search,
                "file_unchanged": file_unchanged,
                "kind": saved.get("kind"),
                "count": saved.get("count"),
                "params": saved.get("params"),
                "recall_at_k": info.get("recall_at_k"),
                "recall_k": info.get("recall_k"),
                "built_at": saved.get("built_at"),
            }
        )
        return out

    # -- internals --------------------------------------------------------------------------
    @staticmethod
    def _can_extend(state: dict[str, Any], spec: IndexSpec, removals: int) -> bool:
        if state.get("removals") != removals or state.get("spec") != spec.to_dict():
            return False
        trained_on = state.get("trained_on")
        return not trained_on or state["count"] <= _IVF_RETRAIN_GROWTH * trained_on

    def _extend(self, vindex: VectorIndex, state: dict[str, Any], generation: int) -> int:
        """Append rows added since the index was built; returns how many."""
        added = 0
        for ids, vectors in self.store.iter_embeddings(
            self.fingerprint, after_id=state["max_id"], dim=self.embed_dim
        ):
            with self._rw.write():
                vindex.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
            state["max_id"] = int(ids[-1])
            state["count"] += len(ids)
            added += len(ids)
        state["generation"] = generation
        state.setdefault("unsaved", 0)
        state["unsaved"] += added
        return added

    def _maybe_save(self) -> None:
        """Persist after a sizeable in-place growth (a stale file is still correct: it gets extended)."""
        unsaved = self._state.get("unsaved", 0)
        if _worth_saving(unsaved, self._state["count"]):
            count, max_id, digest = self.store.content_digest(self.fingerprint, upto_id=self._state["max_id"])
            if count == self._state["count"]:  # nothing removed meanwhile
                self._warn_unsaved(self._save(self._current, {**self._state, "content_hash": digest}))

    def _read_saved(self) -> dict[str, Any] | None:
        """The record of the saved index, or None when there is none or it is not a record (then the index is
        rebuilt from the database, and the record written anew: it is derived, like the file)."""
        data, _ = self.store.meta_json(self.state_key)
        return data if isinstance(data, dict) else None

    def _refuse(self, reason: str) -> None:
        """Note why the saved index cannot be used (it is rebuilt next)."""
        self.rebuild_reason = reason
        log.info("index %s: %s; rebuilding", self.index_path, reason)

    def _load_if_valid(self, spec: IndexSpec, removals: int) -> tuple[VectorIndex, dict[str, Any]] | None:
        import faiss

        saved = self._read_saved()
        if saved is None or not self.index_path.exists():
            self._refuse("no saved index" if saved is None else "the index file is missing")
            return None
        expected = {
            "format": STATE_FORMAT,
            "model_fingerprint": self.fingerprint,
            "spec": spec.to_dict(),
            "dim": self.embed_dim,
            "removals": removals,
        }
        if any(saved.get(key) != value for key, value in expected.items()):
            self._refuse("rows were removed, or another index kind or model was asked for")
            return None
        if not (
            type(saved.get("max_id")) is int
            and saved.get("kind") in ("flat", "ivf", "hnsw")
            and isinstance(saved.get("params") or {}, dict)
        ):
            self._refuse("the record of the saved index is not one this version writes")
            return None
        count, _, digest = self.store.content_digest(self.fingerprint, upto_id=saved.get("max_id", -1))
        if count != saved.get("count") or digest != saved.get("content_hash"):
            self._refuse("the index was built from other rows than the database holds")
            return None
        try:
            checksum, before = file_checksum(self.index_path)
            if checksum != saved.get("file_crc32"):
                self._refuse(
                    "the index file does not match the checksum kept in the database (damaged or replaced)"
                )
                return None
            index = faiss.read_index(str(self.index_path))
            after = os.stat(self.index_path)
        except (OSError, RuntimeError) as exc:
            self._refuse(f"the index file is unreadable ({exc})")
            return None
        if (after.st_ino, after.st_size, after.st_mtime_ns) != (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        ):
            self._refuse("the index file was replaced while it was being read")
            return None
        if int(index.ntotal) != count or int(index.d) != self.embed_dim:
            self._refuse(
                f"the index file holds {index.ntotal} vectors of dim {index.d}, expected {count} of dim "
                f"{self.embed_dim}"
            )
            return None
        vindex = VectorIndex(
            index=index,
            kind=saved["kind"],
            dim=self.embed_dim,
            params=dict(saved.get("params") or {}),
            info=dict(saved.get("info") or {}),
        )
        vindex.apply_params()
        state = {key: saved.get(key) for key in ("count", "max_id", "removals", "spec", "trained_on")}
        return vindex, state

    def _rebuild(self, spec: IndexSpec, removals: int, generation: int) -> BaseException | None:
        """Build the index from the database and swap it in, then save it; the error that stopped the save, if any."""
        started = time.perf_counter()
        count, max_id, digest = self.store.content_digest(self.fingerprint)
        ids = np.empty(count, dtype=np.int64)
        vectors = np.empty((count, self.embed_dim), dtype=np.float32)
        filled = 0
        for chunk_ids, chunk_vectors in self.store.iter_embeddings(
            self.fingerprint, upto_id=max_id, dim=self.embed_dim
        ):
            n = min(len(chunk_ids), count - filled)  # rows deleted meanwhile shrink it, see below
            ids[filled : filled + n] = chunk_ids[:n]
            vectors[filled : filled + n] = chunk_vectors[:n]
            filled += n
        if filled != count:  # rows were removed while reading: the next get() sees `removals` moved on
            ids, vectors, digest = ids[:filled], vectors[:filled], None
        vindex = build_index(vectors, ids, spec)
        vindex.apply_params()
        state = {
            "count": filled,
            "max_id": max_id,
            "removals": removals,
            "spec": spec.to_dict(),
            "generation": generation,
            "unsaved": 0,
            "trained_on": filled if vindex.kind == "ivf" else None,
        }
        with self._rw.write():
            self._current, self._state = vindex, state
        self.last_action = "rebuilt"
        if digest is None:
            return None
        return self._save(
            vindex, {**state, "content_hash": digest, "total_seconds": round(time.perf_counter() - started, 3)}
        )

    def _warn_unsaved(self, exc: BaseException | None) -> None:
        """One warning for a save that failed on the way to a search or an add: their own work is done, and the
        index, a cache of the database, stays searchable from memory and is saved by a later run (`index_file`)."""
        if exc is not None:
            log.warning("could not save index %s (%s); keeping it in memory only", self.index_path,
                        unsaved_warning(exc))

    def _save(self, vindex: VectorIndex | None, state: dict[str, Any]) -> BaseException | None:
        """Write the index file, then record its checksum and contents in the database; the error that stopped it
        (a read-only library, a full disk: faiss reports write errors as RuntimeError), else None. The caller says
        it: `rebuild` raises it, a search or an add warns."""
        import faiss

        if vindex is None:
            return None
        with contextlib.suppress(OSError):  # what a writer stopped by a full disk or kill -9 left
            remove_stale_temps(self.index_path.parent)
        try:
            with self._rw.read(), atomic_path(self.index_path) as tmp:
                faiss.write_index(vindex.index, str(tmp))
                checksum, written = file_checksum(tmp)
            saved = {
                "format": STATE_FORMAT,
                "model_fingerprint": self.fingerprint,
                "dim": self.embed_dim,
                "kind": vindex.kind,
                "params": vindex.params,
                "info": vindex.info,
                "built_at": time.time(),
                "faiss_version": getattr(faiss, "__version__", "unknown"),
                "file_crc32": checksum,
                "file_bytes": written.st_size,
                "file_mtime_ns": written.st_mtime_ns,
                **{k: v for k, v in state.items() if k not in ("generation", "unsaved")},
            }
            with self.store.transaction() as tx:
                tx.set_meta(self.state_key, json.dumps(saved, sort_keys=True, default=str))
            self._state["unsaved"] = 0
        except (OSError, RuntimeError, sqlite3.Error) as exc:  # still searchable from memory; a later run saves it
            return exc
        with contextlib.suppress(
            OSError
        ):  # an older clipforge's JSON sidecar: the record now lives in the db
            self.index_path.with_suffix(".json").unlink()
        return None
