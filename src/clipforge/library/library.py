"""`Library`: a searchable, taggable photo collection in one folder.

This is the one object the CLI and a web server use. It ties the SQLite store (truth), the
FAISS index (derived, rebuilt when stale) and the model (fixed per library) together and
enforces the rule that keeps search meaningful: a library built with one model never takes
vectors from another. Reads (search, get_image, thumbnail, stats) are safe from many
threads at once; writes (add, remove, prune, classify) are serialised, and `add` runs in
other processes take turns through the library's lock file (see `clipforge.library.lock`).
A library whose database cannot be read is refused before anything else in it is touched.

`Library` is assembled from one module per idea: `library_base` (opening the folder, the store
and the model), `library_writes` (add, remove, prune, tag, rebuild the index) and
`library_reads` (search, images, thumbnails, tags); this module adds dropping a model space or making it
the default, the statistics and the lifetime, and keeps every name that was always imported from here.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from clipforge.data.base import BadImage
from clipforge.library.dbfile import damaged
from clipforge.library.index_manager import IndexManager
from clipforge.library.library_base import (
    META_DIM,
    META_DTYPE,
    META_FINGERPRINT,
    META_NAME,
    ModelMismatchError,
    pick_space,
    record_model,
    refuse_unsearchable_default,
)
from clipforge.library.library_reads import LibraryReads
from clipforge.library.library_writes import LibraryWrites
from clipforge.library.lock import library_lock
from clipforge.library.search import second_names
from clipforge.library.stats_schema import index_status, new_stats

__all__ = ["Library", "ModelMismatchError", "record_model", "same_file_names"]


def same_file_names(library: Any) -> int | None:
    """Of a library's 'ok' images, how many are one more name of a file counted already (a symlinked folder and its
    real path both indexed, a hard link): `stats()["images"]["ok"]` counts names, and `index stats` said "188
    indexed" for 94 files on disk. A stat per image whose bytes another image holds, none for the rest. None for a
    store that cannot tell (a Milvus store's photos may live on the machines that indexed them)."""
    rows = getattr(getattr(library, "store", None), "shared_content_paths", None)
    return second_names(rows()) if callable(rows) else None


class Library(LibraryWrites, LibraryReads):
    """A library folder. `model`: a name or checkpoint for `clipforge.load`, a CLIP module, a
    `(model, preprocess)` pair or an `Encoder`; None = the model the library was built with
    (or, for a new library, ViT-B/32 when cached, else the shipped offline model)."""

    # -- model spaces and statistics --------------------------------------------------------
    def _stored_dim(self) -> int:
        """The embedding width the library recorded; DamagedLibraryError naming the database and the key when it
        is not a number (`int()`'s "invalid literal for int() with base 10: 'abc'" named neither)."""
        value = self.store.get_meta(META_DIM) or "0"
        if not value.strip().isdigit():
            raise damaged(self.store.path, f"its meta key {META_DIM!r} holds {value[:40]!r}, not a number")
        return int(value)

    def drop_space(self, model: str) -> dict[str, Any]:
        """Forget one model space's vectors, tags and index (by model name or fingerprint prefix >= 6 chars)."""
        with self._write_lock, library_lock(self.paths.lock):
            # Looked up under the lock, as `set_default` looks up what it makes the default: checked before it, a
            # `set-default` of this space run at the same time made it the default and this dropped it after.
            return self._drop_space(model)

    def _drop_space(self, model: str) -> dict[str, Any]:
        """`drop_space` under the library's write lock."""
        space = pick_space(model, self.spaces(), f"library {self.paths.root}")
        if space["default"]:
            raise ValueError(
                f"{model!r} is the model library {self.paths.root} was built with (its default model space); it "
                f"cannot be dropped: make another space the default first (`clipforge index set-default --library "
                f"{shlex.quote(str(self.paths.root))} MODEL`), drop the other spaces, or start another --library"
            )
        fingerprint = space["fingerprint"]
        # The index file goes first: it is derived, so a kill -9 before the commit below only costs a
        # rebuild. Removed after the commit, a kill in between left it behind for good (the space was gone,
        # so no second drop-space could name it).
        self.paths.index_file(fingerprint).unlink(missing_ok=True)
        with self.store.transaction() as tx:
            # Every key `tag` wrote the space's tags under, its vocabulary and the key naming the current
            # rows: the rows of `<fingerprint>#<n>` and that key, left, answered again once the space was
            # copied or added back with a vocabulary (`transaction.current_tag_rows`).
            tx.drop_tags(fingerprint)
            for sql in (
                "DELETE FROM embeddings WHERE model = ?",
                "DELETE FROM models WHERE fingerprint = ?",
            ):
                tx.execute(sql, (fingerprint,))
            tx.execute("DELETE FROM meta WHERE key = ?", (f"index_state:{fingerprint}",))
            # Vectors were deleted: a process holding this space's index in memory must see it go.
            tx.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'removals'")
            tx.bump_generation()
        return space

    def set_default(self, model: str) -> dict[str, Any]:
        """Make one model space (by model name or fingerprint prefix >= 6 chars, as `drop_space` takes) the library's
        default: the one plain `search`, `tag` and `index stats` read and whose model a library opened without one
        loads. The way out of a library built with an older build of a model (`other_build_refusal`): its default
        space stayed the old build's for good, as the default cannot be dropped. The space as `spaces()` listed it,
        `default` still False when it was not the default before. Objects open on the library keep the model they
        loaded (a server must be restarted).

        Refused (`ModelMismatchError`, `unsearchable_default`) when the space's model name now loads another build:
        plain `search` and `tag` load the default's name and would read that build's space. Knowing it costs one
        load of the named model (`loaded_fingerprint`), made before the lock is taken; the space is looked up again
        under the lock, so a `drop-space` of it run at the same time either wins (then this names no space) or
        waits."""
        where, target = f"library {self.paths.root}", f"--library {shlex.quote(str(self.paths.root))}"
        seen: dict[str, str] = {}
        spaces = self.spaces()
        space = pick_space(model, spaces, where)
        if space["default"]:
            return space
        # the load, outside the lock (other writers need not wait for it); checked again under it, from `seen`
        refuse_unsearchable_default(space, spaces, self._encoder, self._device, seen, where, target)
        with self._write_lock, library_lock(self.paths.lock), self.store.transaction() as tx:
            spaces = self.spaces()
            space = pick_space(model, spaces, where)
            if space["default"]:
                return space
            refuse_unsearchable_default(space, spaces, self._encoder, self._device, seen, where, target)
            # The keys `Transaction.record_model` writes for the first model, but for a space that holds vectors:
            # the vector dtype is the library's, not a space's, and stays.
            tx.set_meta(META_FINGERPRINT, space["fingerprint"])
            tx.set_meta(META_NAME, space["name"] or "")
            tx.set_meta(META_DIM, str(int(space["embed_dim"])))
        return space

    def stats(self, verify: bool = False) -> dict[str, Any]:
        """Counts, model, index state, tags and recent failures, as plain JSON-able data: the keys of
        `stats_schema.new_stats`, those a Milvus store gives too (null where one does not apply).

        `verify`: also count 'ok' images without a vector (`missing_vectors`; a scan of every row; null without a
        model). Failed files are named as every --json report names them (`BadImage.to_dict`: ``b64:`` for a name
        that is not UTF-8)."""
        fingerprint = self.space_fingerprint
        db_bytes = sum(
            p.stat().st_size for p in self.paths.root.glob(self.paths.db.name + "*") if p.is_file()
        )
        schema = self.store.conn().execute("PRAGMA user_version").fetchone()[0]  # the file's
        out = new_stats(str(self.paths.root), "sqlite", schema, db_bytes)
        out["images"] = self.store.status_counts()
        out["failures"] = [BadImage(p, r).to_dict() for p, r in self.store.failures(20)]
        if verify:
            out["missing_vectors"] = None  # no model: nothing to count against
        if fingerprint is not None:
            spaces = self.spaces()
            space = next((s for s in spaces if s["fingerprint"] == fingerprint), None)
            default = fingerprint == self.model_fingerprint
            dim = self._stored_dim() if default else self.encoder.embed_dim
            out["model"] = {
                "name": (
                    self.store.get_meta(META_NAME)
                    if default
                    else (space or {}).get("name") or self.encoder.name
                )
                or None,
                "fingerprint": fingerprint,
                "embed_dim": dim,
                "vector_dtype": self.store.get_meta(META_DTYPE),
            }
            out["distinct_contents"] = self.store.distinct_contents()
            manager = self._manager
            if manager is None or manager.fingerprint != fingerprint:
                manager = IndexManager(self.store, self.paths, fingerprint, dim)
            out["index"] = index_status(manager.status())
            out["tags"] = self.store.tag_counts(fingerprint)
            if verify:
                out["missing_vectors"] = (
                    0
                    if self.store.vectors_checked(fingerprint)
                    else len(self.store.images_missing_vectors(fingerprint))
                )
            out["spaces"] = spaces
        return out

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Library({str(self.paths.root)!r})"


def open_library(path: str | Path | None = None, model: Any = None, **kwargs: Any) -> Library:
    """Same as `Library(...)`; a function for symmetry with `clipforge.load`."""
    return Library(path, model, **kwargs)
