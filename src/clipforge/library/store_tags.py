"""Reads of the `tags` table: the photos carrying labels, each photo's tags, the counts, the rows a run wrote.

Each query names `model`'s current tags by `current_tag_rows` (the rows `clipforge tag` switched to last): rows a
`tag` run is still writing, or was killed writing, under another key are never read. A part of `Store`
(`clipforge.library.store`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence

from clipforge.library.dbfile import damaged
from clipforge.library.store_connection import StoreConnection, reads
from clipforge.library.transaction import CHUNK, chunks, current_tag_rows
from clipforge.text.labels import stored_tag_forms

__all__ = ["TagReads"]


class TagReads(StoreConnection):
    """The tag reads of `Store` (see `clipforge.library.store`)."""

    @reads
    def image_ids_with_tags(
        self, model: str, labels: Sequence[str], max_rank: int = 0, min_score: float = 0.0
    ) -> list[int]:
        """The photos whose rank-`max_rank` (or better) tag is one of `labels`, compared in NFKC form
        (`text.labels.label_key`): `--tag` with NFD "café" found nothing on a library tagged with the NFC one, nor
        "cat" where "ｃａｔ" was stored. The stored tags keep the spelling typed (libraries tagged before included),
        so the stored labels of those forms are found first (`text.labels.stored_tag_forms`), then their photos, in one
        snapshot."""
        with self.snapshot() as conn:
            sql, params = current_tag_rows(model)
            key = conn.execute(f"SELECT {sql}", params).fetchone()[0]
            stored = stored_tag_forms(labels, self._stored_labels(conn, key))
            found: set[int] = set()
            for chunk in chunks(stored):
                marks = ",".join("?" * len(chunk))
                found.update(int(r[0]) for r in conn.execute(
                    f"SELECT DISTINCT image_id FROM tags WHERE model = ? AND label IN ({marks}) AND rank <= ?"
                    " AND score >= ?",
                    (key, *chunk, int(max_rank), float(min_score)),
                ))
        return sorted(found)

    @staticmethod
    def _stored_labels(conn: sqlite3.Connection, key: str) -> list[str]:
        """The distinct labels of the `tags.model` value `key`, one step of the (model, label, rank) index each (a
        vocabulary's labels, not a scan of every photo's tags)."""
        rows = conn.execute(
            "WITH RECURSIVE d(label) AS (SELECT (SELECT MIN(label) FROM tags WHERE model = ?1) UNION ALL"
            " SELECT (SELECT MIN(label) FROM tags WHERE model = ?1 AND label > d.label) FROM d"
            " WHERE d.label IS NOT NULL) SELECT label FROM d WHERE label IS NOT NULL",
            (key,),
        ).fetchall()
        return [r[0] for r in rows]

    @reads
    def tags_for_images(self, model: str, image_ids: Sequence[int]) -> dict[int, list[tuple[str, float]]]:
        """image id -> its current tags (label, score) in rank order. More than `CHUNK` ids are read in several
        statements, inside one read transaction (`snapshot`): a `tag` run switching the vocabulary between two
        of them answered the first photos with the old labels and the rest with the new ones."""
        out: dict[int, list[tuple[str, float]]] = {}
        key, params = current_tag_rows(model)
        ids = [int(i) for i in image_ids]
        with self.snapshot() if len(ids) > CHUNK else contextlib.nullcontext(self.conn()) as conn:
            for chunk in chunks(ids):
                marks = ",".join("?" * len(chunk))
                for image_id, label, score in conn.execute(
                    f"SELECT image_id, label, score FROM tags WHERE model = {key} AND image_id IN ({marks})"
                    " ORDER BY image_id, rank",
                    (*params, *chunk),
                ).fetchall():
                    if not isinstance(score, (int, float)):  # float('x') named neither the database nor the table
                        raise damaged(
                            self.path,
                            f"a tag of image {image_id} has the score {score!r:.40}, not a number",
                            fix='tag the library again with `clipforge tag --labels "cat, dog, car"` (your labels)',
                        )
                    out.setdefault(int(image_id), []).append((label, float(score)))
        return out

    @reads
    def untagged_images(self, model: str, key: str | None = None) -> list[tuple[int, str]]:
        """(image id, content hash) of the 'ok' images with no current tag of `model` (added since the last
        tagging), or none under the `tags.model` value `key` (what a `tag` run has not written yet)."""
        sql, params = ("?", (key,)) if key is not None else current_tag_rows(model)
        rows = (
            self.conn()
            .execute(
                "SELECT i.id, i.sha256 FROM images i WHERE i.status = 'ok' AND NOT EXISTS"
                f" (SELECT 1 FROM tags t WHERE t.image_id = i.id AND t.model = {sql}) ORDER BY i.id",
                params,
            )
            .fetchall()
        )
        return [(int(r[0]), r[1]) for r in rows]

    @reads
    def tag_counts(self, model: str) -> dict[str, int]:
        key, params = current_tag_rows(model)
        rows = (
            self.conn()
            .execute(
                f"SELECT label, COUNT(*) FROM tags WHERE model = {key} AND rank = 0 GROUP BY label"
                " ORDER BY COUNT(*) DESC, label",
                params,
            )
            .fetchall()
        )
        return {r[0]: int(r[1]) for r in rows}

    @reads
    def tag_rows(self, model: str) -> str:
        """The `tags.model` value holding `model`'s current tags (see `transaction.TAG_ROWS_KEY`)."""
        sql, params = current_tag_rows(model)
        return str(self.conn().execute(f"SELECT {sql}", params).fetchone()[0])

    @reads
    def tag_row_keys(self, model: str) -> list[str]:
        """Every `tags.model` value `model`'s tags were ever written under and still hold rows: the current one,
        and those a killed `tag` run left (one index range step each, not a scan of the rows)."""
        conn = self.conn()
        keys = (
            [model] if conn.execute("SELECT 1 FROM tags WHERE model = ? LIMIT 1", (model,)).fetchone() else []
        )
        after, end = model + "#", model + "$"
        while row := conn.execute(
            "SELECT model FROM tags WHERE model > ? AND model < ? ORDER BY model LIMIT 1", (after, end)
        ).fetchone():
            keys.append(after := row[0])
        return keys

    @reads
    def image_ids_for_embeddings(self, model: str, first: int, last: int) -> dict[int, list[int]]:
        """embedding id -> ids of the 'ok' images holding those bytes, for the embeddings of `model` with ids in
        [`first`, `last`] (one chunk of a `tag` run, read inside the transaction that writes its tags)."""
        out: dict[int, list[int]] = {}
        for eid, image_id in (
            self.conn()
            .execute(
                "SELECT e.id, i.id FROM embeddings e JOIN images i ON i.sha256 = e.sha256"
                " WHERE e.model = ? AND e.id >= ? AND e.id <= ? AND i.status = 'ok' ORDER BY i.id",
                (model, int(first), int(last)),
            )
            .fetchall()
        ):
            out.setdefault(int(eid), []).append(int(image_id))
        return out
