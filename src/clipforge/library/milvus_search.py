"""Nearest photos in one Milvus model space, answered as the embedded store answers them.

Milvus ranks rows by inner product of unit vectors under a filter expression (status, tags, folders);
a hit is then one distinct content: every stored path with the hit's sha256 (that passes the same
filter) is read back, oldest first (`added_at`, then path: the embedded store's id order, see `milvus_store`),
and the hit is the one the embedded store shows (`search.representative`: the oldest whose file is still there),
with its own row's tags; the others are its duplicates. It was the first by path, gone from disk or not: another
copy than the embedded store's (with that row's tags), or a hit "missing" while an identical copy was on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from clipforge.library.milvus_expr import quote, under_expr
from clipforge.library.milvus_store import MilvusSpace
from clipforge.library.milvus_writer import RECORD_FIELDS, record_from_row, tag_filter
from clipforge.library.scan import FolderFilter, folders_of, is_under
from clipforge.library.search import SearchHit, representative
from clipforge.library.store import ImageRecord
from clipforge.library.tagging import parse_labels

__all__ = ["search_space"]


def search_space(space: MilvusSpace, vector: np.ndarray, top_k: int, filter_tags: str | Sequence[str] | None = None,
                 tag_rank: int = 0, min_tag_score: float = 0.0, under: FolderFilter = None) -> list[SearchHit]:
    """The `top_k` best distinct contents for a query `vector`, filtered as `Library.search_vector` filters."""
    expr = 'status == "ok"'
    if filter_tags:
        expr += " and " + tag_filter(parse_labels(filter_tags), tag_rank, min_tag_score)
    folders: list[str] = []
    if under is not None:
        folders = folders_of(under)
        if not folders:
            return []
        expr += " and (" + " or ".join(under_expr(f) for f in folders) + ")"
    found = space.search(vector, int(top_k), expr)
    if not found:
        return []
    shas = sorted({row["sha256"] for row, _ in found})
    owners: dict[str, list[ImageRecord]] = {}
    tags: dict[str, dict[str, Any]] = {}
    condition = f"{expr} and sha256 in [{', '.join(quote(s) for s in shas)}]"
    for row in space.query(condition, RECORD_FIELDS, strong=False):
        owners.setdefault(row["sha256"], []).append(record_from_row(row))
        tags[row["path"]] = row
    hits: list[tuple[tuple[float, float, str], SearchHit]] = []
    for row, score in found:
        records = sorted(owners.get(row["sha256"], []), key=_oldest_first) or [record_from_row(row)]
        if under is not None:  # `under_expr` may match a few more paths: the exact test is here
            records = [r for r in records if is_under(r.path, folders)]
            if not records:
                continue
        first = representative(records)
        own = tags.get(first.path, row)
        hit = SearchHit(id=first.id, path=first.path, score=score, sha256=first.sha256 or "",
                        width=first.width, height=first.height, duplicates=[r.path for r in records if r is not first],
                        tags=list(zip(own.get("tags") or [], map(float, own.get("tag_scores") or []), strict=False)))
        hits.append(((-float(score), *_oldest_first(records[0])), hit))
    # equal scores (one picture saved twice, its bytes differing) oldest content first, as the embedded store's ids
    # order them (audit 66 determinism: its FAISS order was newest first)
    return [hit for _, hit in sorted(hits, key=lambda pair: pair[0])]


def _oldest_first(record: ImageRecord) -> tuple[float, str]:
    """The order of a content's records: first stored first, as the embedded store's ids give it."""
    return record.added_at, record.path
