"""Keep the FAISS index in step with the database it is derived from.

The index file is a cache. Its sidecar JSON records the model fingerprint, the index spec,
the row count, the largest embedding id, the database's `removals` counter and a hash over
every (embedding id, content hash) it holds. A saved index is trusted only if all of that
still matches the database's rows up to that id; rows added since are appended (embedding
ids only grow), anything else - missing or damaged file, rows removed, another kind
requested, another model - means rebuild.

Inside one process the cheap `generation` counter (bumped by every write) tells when to look
again, so a search costs no hashing. New rows (an upload, a running `index add`) are added to
the live index in place instead of rebuilding it; readers and that in-place add are kept
apart by a readers-writer lock, while a full rebuild happens beside the live index and is
swapped in.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from clipforge.atomic import atomic_path, write_json_atomic
from clipforge.library.paths import LibraryPaths
from clipforge.library.store import Store
from clipforge.library.vector_index import IndexSpec, VectorIndex, build_index

__all__ = ["SIDECAR_FORMAT", "IndexManager"]

log = logging.getLogger(__name__)

SIDECAR_FORMAT = 2
_SPEC_META_KEY = "index_spec"
_IVF_RETRAIN_GROWTH = 2.0  # retrain IVF cells once the library has doubled since training


class _ReadWriteLock:
    """Many concurrent searches, or one in-place modification of the index."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def read(self):
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class IndexManager:
    """Loads, validates, extends, rebuilds and saves the index of one model fingerprint."""

    def __init__(self, store: Store, paths: LibraryPaths, fingerprint: str, embed_dim: int) -> None:
        self.store = store
        self.paths = paths
        self.fingerprint = fingerprint
        self.embed_dim = int(embed_dim)
        self._lock = threading.Lock()  # one loader/builder at a time
        self._rw = _ReadWriteLock()
        self._current: VectorIndex | None = None
        self._state: dict[str, Any] = {}
        # "memory", "loaded", "extended" or "rebuilt": what the last get() did (for tests and stats)
        self.last_action: str | None = None

    # -- configuration ----------------------------------------------------------------------
    def spec(self) -> IndexSpec:
        raw = self.store.get_meta(_SPEC_META_KEY)
        return IndexSpec.from_dict(json.loads(raw)) if raw else IndexSpec()

    def set_spec(self, spec: IndexSpec) -> None:
        with self.store.transaction() as tx:
            Store.set_meta(tx, _SPEC_META_KEY, json.dumps(spec.to_dict(), sort_keys=True))
            Store.bump_generation(tx)

    @property
    def index_path(self) -> Path:
        return self.paths.index_file(self.fingerprint)

    @property
    def sidecar_path(self) -> Path:
        return self.paths.index_sidecar(self.fingerprint)

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
            self._rebuild(spec, removals, generation)
            return self._current

    def rebuild(self, spec: IndexSpec | None = None) -> VectorIndex:
        """Force a rebuild (optionally with a new spec, remembered for later rebuilds)."""
        if spec is not None:
            self.set_spec(spec)
        with self._lock:
            self._rebuild(self.spec(), self.store.removals(), self.store.generation())
            assert self._current is not None
            return self._current

    def status(self) -> dict[str, Any]:
        """What is on disk and in memory, cheaply (no hashing, no rebuilding)."""
        sidecar = self._read_sidecar()
        out: dict[str, Any] = {"path": str(self.index_path), "requested": self.spec().kind,
                               "vectors_in_db": self.store.embedding_count(self.fingerprint)}
        if sidecar is None or not self.index_path.exists():
            out.update({"exists": False, "fresh": False})
            return out
        info = sidecar.get("info") or {}
        fresh = (sidecar.get("count") == out["vectors_in_db"] and sidecar.get("removals") == self.store.removals()
                 and sidecar.get("spec") == self.spec().to_dict())
        out.update({"exists": True, "fresh": fresh, "kind": sidecar.get("kind"), "count": sidecar.get("count"),
                    "params": sidecar.get("params"), "recall_at_k": info.get("recall_at_k"),
                    "recall_k": info.get("recall_k"), "built_at": sidecar.get("built_at")})
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
        for ids, vectors in self.store.iter_embeddings(self.fingerprint, after_id=state["max_id"]):
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
        if unsaved and (unsaved >= 10_000 or unsaved >= 0.05 * max(1, self._state["count"])):
            count, max_id, digest = self.store.content_digest(self.fingerprint, upto_id=self._state["max_id"])
            if count == self._state["count"]:  # nothing removed meanwhile
                self._save(self._current, {**self._state, "content_hash": digest})

    def _read_sidecar(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.sidecar_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _load_if_valid(self, spec: IndexSpec, removals: int) -> tuple[VectorIndex, dict[str, Any]] | None:
        import faiss

        sidecar = self._read_sidecar()
        if sidecar is None or not self.index_path.exists():
            return None
        expected = {"format": SIDECAR_FORMAT, "model_fingerprint": self.fingerprint, "spec": spec.to_dict(),
                    "dim": self.embed_dim, "removals": removals}
        if any(sidecar.get(key) != value for key, value in expected.items()):
            log.info("index %s does not match the database (rows removed, other spec or model); rebuilding",
                     self.index_path)
            return None
        count, _, digest = self.store.content_digest(self.fingerprint, upto_id=sidecar.get("max_id", -1))
        if count != sidecar.get("count") or digest != sidecar.get("content_hash"):
            log.info("index %s was built from other rows than the database holds; rebuilding", self.index_path)
            return None
        try:
            index = faiss.read_index(str(self.index_path))
        except RuntimeError as exc:
            log.warning("index %s is unreadable (%s); rebuilding", self.index_path, exc)
            return None
        if int(index.ntotal) != count or int(index.d) != self.embed_dim:
            log.warning("index %s holds %d vectors of dim %d, sidecar says %d of dim %d; rebuilding",
                        self.index_path, index.ntotal, index.d, count, self.embed_dim)
            return None
        vindex = VectorIndex(index=index, kind=sidecar["kind"], dim=self.embed_dim,
                             params=dict(sidecar.get("params") or {}), info=dict(sidecar.get("info") or {}))
        vindex.apply_params()
        state = {key: sidecar.get(key) for key in ("count", "max_id", "removals", "spec", "trained_on")}
        return vindex, state

    def _rebuild(self, spec: IndexSpec, removals: int, generation: int) -> None:
        started = time.perf_counter()
        count, max_id, digest = self.store.content_digest(self.fingerprint)
        ids = np.empty(count, dtype=np.int64)
        vectors = np.empty((count, self.embed_dim), dtype=np.float32)
        filled = 0
        for chunk_ids, chunk_vectors in self.store.iter_embeddings(self.fingerprint, upto_id=max_id):
            n = min(len(chunk_ids), count - filled)  # rows deleted meanwhile shrink it, see below
            ids[filled:filled + n] = chunk_ids[:n]
            vectors[filled:filled + n] = chunk_vectors[:n]
            filled += n
        if filled != count:  # rows were removed while reading: the next get() sees `removals` moved on
            ids, vectors, digest = ids[:filled], vectors[:filled], None
        vindex = build_index(vectors, ids, spec)
        vindex.apply_params()
        state = {"count": filled, "max_id": max_id, "removals": removals, "spec": spec.to_dict(),
                 "generation": generation, "unsaved": 0,
                 "trained_on": filled if vindex.kind == "ivf" else None}
        with self._rw.write():
            self._current, self._state = vindex, state
        self.last_action = "rebuilt"
        if digest is not None:
            self._save(vindex, {**state, "content_hash": digest,
                                "total_seconds": round(time.perf_counter() - started, 3)})

    def _save(self, vindex: VectorIndex | None, state: dict[str, Any]) -> None:
        import faiss

        if vindex is None:
            return
        sidecar = {
            "format": SIDECAR_FORMAT, "model_fingerprint": self.fingerprint, "dim": self.embed_dim,
            "kind": vindex.kind, "params": vindex.params, "info": vindex.info, "built_at": time.time(),
            "faiss_version": getattr(faiss, "__version__", "unknown"),
            **{k: v for k, v in state.items() if k not in ("generation", "unsaved")},
        }
        try:
            with self._rw.read(), atomic_path(self.index_path) as tmp:
                faiss.write_index(vindex.index, str(tmp))
            write_json_atomic(self.sidecar_path, sidecar, sort_keys=True)
            self._state["unsaved"] = 0
        except OSError as exc:  # a read-only library can still be searched from memory
            log.warning("could not save index %s (%s); keeping it in memory only", self.index_path, exc)
