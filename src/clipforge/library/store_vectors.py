"""Reads of the `embeddings` table: one model's vectors, by id range, by content or by image.

The vectors are the bulk of a library and what a FAISS index is built from, so these reads
stream (`iter_embeddings` in id order, `chunk` rows at a time) or take their keys in chunks
(`clipforge.library.transaction.chunks`: SQLite caps the `?` marks of one statement). A vector
blob that is not whole values of the model's width is `DamagedLibraryError` naming it and the
photos that hold it, never a numpy error from deep inside a search. So is a vector holding NaN or
infinity (a unit vector never does): it was accepted, its photo could no longer be found (not even by
itself), and `index stats` counted it. The check is one pass over the chunk (`np.isfinite`), paid for by
decoding a chunk of whole rows of one dtype as one buffer (`_whole_rows`): measured in the issue note.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np

from clipforge.library.dbfile import DamagedLibraryError, display_path
from clipforge.library.records import IMAGE_COLUMNS, ImageRecord, image_record
from clipforge.library.store_connection import StoreConnection, reads
from clipforge.library.transaction import chunks

__all__ = ["VectorReads"]


class VectorReads(StoreConnection):
    """The vector reads of `Store` (see `clipforge.library.store`)."""

    @reads
    def embedded_shas(self, model: str) -> set[str]:
        rows = self.conn().execute("SELECT sha256 FROM embeddings WHERE model = ?", (model,)).fetchall()
        return {r[0] for r in rows}

    @reads
    def embedding_count(self, model: str) -> int:
        return int(
            self.conn().execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", (model,)).fetchone()[0]
        )

    @reads
    def distinct_contents(self) -> int:
        """Distinct contents among the library's 'ok' images (files of the same bytes count once), whichever model
        spaces hold their vectors: what `index stats` puts beside its count of indexed files. A space's vector count
        (`embedding_count`) is fewer when photos were added with another model only."""
        row = self.conn().execute("SELECT COUNT(DISTINCT sha256) FROM images WHERE status = 'ok'").fetchone()
        return int(row[0])

    @reads
    def shas_in_other_spaces(self, model: str, shas: Sequence[str]) -> set[str]:
        """Those of `shas` that some model other than `model` has a vector of: contents indexed with another model,
        which `model`'s space has not been given yet (as opposed to a vector lost)."""
        found: set[str] = set()
        unique = sorted(set(shas))
        for part in chunks(unique):
            marks = ",".join("?" * len(part))
            rows = self.conn().execute(
                f"SELECT DISTINCT sha256 FROM embeddings WHERE model != ? AND sha256 IN ({marks})", (model, *part)
            )
            found.update(r[0] for r in rows)
        return found

    def iter_embeddings(
        self,
        model: str,
        chunk: int = 65536,
        after_id: int = -1,
        upto_id: int | None = None,
        dim: int | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64 [n], vectors float32 [n, d]) in id order, `chunk` rows at a time,
        for ids in (`after_id`, `upto_id`]. A vector that is not `dim` values long (or not as long as the
        others) is `DamagedLibraryError` naming it and the photos that hold it (a blob cut short made every
        search a 500 with a 110-line traceback)."""
        last = int(after_id)
        upper = (1 << 62) if upto_id is None else int(upto_id)
        while True:
            # Counted as a read (`StoreConnection.reading`) so that `close` waits for the chunk being stepped: an
            # index built in a server's worker thread read this way while the library closed under it.
            with self.reading(), self.guard():
                rows = (
                    self.conn()
                    .execute(
                        "SELECT id, dtype, vector FROM embeddings WHERE model = ? AND id > ? AND id <= ?"
                        " ORDER BY id LIMIT ?",
                        (model, last, upper, chunk),
                    )
                    .fetchall()
                )
                if not rows:
                    return
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vectors = self._checked_vectors(model, rows, dim)  # may read the model's width
            yield ids, vectors
            last = int(ids[-1])

    def model_dim(self, model: str) -> int | None:
        """The embedding width recorded for `model` in the `models` table (None when absent or not a number)."""
        with self.guard():
            row = (
                self.conn().execute("SELECT embed_dim FROM models WHERE fingerprint = ?", (model,)).fetchone()
            )
        # A width no model has (0, 10**12: a hand-edited row) is not trusted: the vectors' own width is used.
        return int(row[0]) if row is not None and isinstance(row[0], int) and 0 < row[0] <= 1 << 16 else None

    def _checked_vectors(self, model: str, rows: Sequence[tuple], dim: int | None) -> np.ndarray:
        """Rows of (embedding id, dtype, blob) as float32 [n, d]: every blob must hold whole values of the width
        `dim` (default: the model's recorded width, else the commonest). A row edited to another dtype or cut
        short is `DamagedLibraryError` naming it, not a numpy error ("matmul: ... size 32 is different from
        64") from a filtered search or a TypeError from a vector stored as text."""
        width = dim if dim is not None else self.model_dim(model)
        out = _whole_rows(rows, width) if width is not None else None
        if out is None:
            vectors = [_decoded_or_none(r[1], r[2]) for r in rows]
            lengths = [-1 if v is None else len(v) for v in vectors]
            if width is None:
                width = max(set(lengths), key=lengths.count)
            wrong = next((i for i, n in enumerate(lengths) if n != width), None)
            if wrong is not None:
                blob = rows[wrong][2]
                size = len(blob) if isinstance(blob, (bytes, str)) else 0
                raise self._damaged_vector(int(rows[wrong][0]), f"is {size} bytes, not {width} values")
            out = np.stack(vectors)
        if not np.isfinite(out).all():
            wrong = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            raise self._damaged_vector(int(rows[wrong][0]), "holds NaN or infinite values, not a unit vector")
        return out

    def _damaged_vector(self, embedding_id: int, what: str) -> DamagedLibraryError:
        owners = [
            row[0]
            for row in self.conn().execute(
                "SELECT id FROM images WHERE sha256 = (SELECT sha256 FROM embeddings WHERE id = ?) ORDER BY id LIMIT 20",
                (embedding_id,),
            )
        ]
        fix = (
            f"`clipforge index remove {' '.join(map(str, owners))}`, then add those photos again"
            if owners
            else "`clipforge index drop-space` for this model, then `clipforge index add` again"
        )
        return DamagedLibraryError(
            f"library database {display_path(str(self.path))} is damaged: vector {embedding_id} {what}; nothing was "
            f"changed. To embed its photos again: {fix}"
        )

    @reads
    def vectors_for_shas(self, model: str, shas: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for chunk in chunks(list(shas)):
            marks = ",".join("?" * len(chunk))
            rows = (
                self.conn()
                .execute(
                    f"SELECT sha256, id, dtype, vector FROM embeddings WHERE model = ? AND sha256 IN ({marks})",
                    (model, *chunk),
                )
                .fetchall()
            )
            if rows:
                out.update(
                    zip(
                        (r[0] for r in rows),
                        self._checked_vectors(model, [r[1:] for r in rows], None),
                        strict=True,
                    )
                )
        return out

    @reads
    def vectors_for_image_ids(self, model: str, image_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(embedding ids, vectors) of the given images' contents, for exact filtered search: each content once.

        The images are read first (by id), then each one's vector by (sha256, model): SQLite's own plan
        walked every vector of the model once per chunk of 900 ids, so `search --in` a 10,000-photo folder
        took 34 s. Duplicates split across chunks are dropped here (`DISTINCT` saw one chunk at a time:
        such a photo was listed twice)."""
        ids: list[int] = []
        vecs: list[np.ndarray] = []
        seen: set[int] = set()
        for chunk in chunks([int(i) for i in image_ids]):
            marks = ",".join("?" * len(chunk))
            rows = []
            for row in self.conn().execute(
                "SELECT e.id, e.dtype, e.vector FROM images i CROSS JOIN embeddings e"
                f" ON e.sha256 = i.sha256 AND e.model = ? WHERE i.status = 'ok' AND i.id IN ({marks})",
                (model, *chunk),
            ):
                if row[0] not in seen:
                    seen.add(row[0])
                    rows.append(row)
            if rows:
                ids.extend(int(r[0]) for r in rows)
                vecs.append(self._checked_vectors(model, rows, None))
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        return np.asarray(ids, dtype=np.int64), np.concatenate(vecs)

    @reads
    def content_digest(self, model: str, upto_id: int | None = None) -> tuple[int, int, str]:
        """(row count, max id, sha256 over every (id, content hash)) of the rows with id <= `upto_id`:
        exactly what an index built from them holds."""
        digest = hashlib.sha256()
        count, max_id = 0, -1
        upper = (1 << 62) if upto_id is None else int(upto_id)
        for eid, sha in self.conn().execute(
            "SELECT id, sha256 FROM embeddings WHERE model = ? AND id <= ? ORDER BY id", (model, upper)
        ):
            digest.update(f"{eid}:{sha}\n".encode())
            count += 1
            max_id = eid
        return count, max_id, digest.hexdigest()

    @reads
    def images_for_embeddings(self, model: str, embedding_ids: Sequence[int]) -> dict[int, list[ImageRecord]]:
        """embedding id -> the 'ok' images holding those bytes (several when duplicated)."""
        out: dict[int, list[ImageRecord]] = {}
        cols = ", ".join(f"i.{c.strip()}" for c in IMAGE_COLUMNS.split(","))
        for chunk in chunks([int(i) for i in embedding_ids]):
            marks = ",".join("?" * len(chunk))
            for row in (
                self.conn()
                .execute(
                    f"SELECT e.id, {cols} FROM embeddings e JOIN images i ON i.sha256 = e.sha256"
                    f" WHERE e.model = ? AND i.status = 'ok' AND e.id IN ({marks}) ORDER BY i.id",
                    (model, *chunk),
                )
                .fetchall()
            ):
                out.setdefault(int(row[0]), []).append(image_record(row[1:]))
        return out

    @reads
    def image_ids_by_embedding(self, model: str) -> dict[int, list[int]]:
        """embedding id -> ids of the 'ok' images holding those bytes."""
        out: dict[int, list[int]] = {}
        for eid, image_id in (
            self.conn()
            .execute(
                "SELECT e.id, i.id FROM embeddings e JOIN images i ON i.sha256 = e.sha256"
                " WHERE e.model = ? AND i.status = 'ok' ORDER BY i.id",
                (model,),
            )
            .fetchall()
        ):
            out.setdefault(int(eid), []).append(int(image_id))
        return out


def _whole_rows(rows: Sequence[tuple], width: int) -> np.ndarray | None:
    """Rows of (id, dtype, blob) as float32 [n, width] from one buffer, when every blob is bytes of one dtype and
    exactly `width` values (every row of a sound library); None otherwise, for the row-by-row path that names the
    odd one. One join and one conversion instead of a `frombuffer`, `astype` and a stack per row."""
    if not rows:
        return None
    dtype = rows[0][1]
    size = width * (2 if dtype == "float16" else 4)
    if not all(r[1] == dtype and type(r[2]) is bytes and len(r[2]) == size for r in rows):
        return None
    data = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float16 if dtype == "float16" else np.float32)
    return data.reshape(len(rows), width).astype(np.float32)


def _decoded_or_none(dtype: str, blob: bytes) -> np.ndarray | None:
    """The vector, or None for a blob that is not whole values (a row cut short mid-value)."""
    try:
        return _decode_vector(dtype, blob)
    except (ValueError, TypeError):  # TypeError: a vector stored as text (or a number) by a hostile hand
        return None


def _decode_vector(dtype: str, blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float16 if dtype == "float16" else np.float32).astype(np.float32)
