"""From a query vector to ranked library images.

The FAISS index holds one vector per distinct content, so a photo stored under three paths
is one hit (its other paths listed in `duplicates`), never three copies of the same result. A path that is the
same file as the hit's (a symlinked folder's name and its real path, a hard link: one device and inode) is
listed in `same_file`, not among the copies: someone deleting "identical copies" deleted the only file.
Tag-filtered searches are exact: the candidate set is small by construction (the images
carrying a tag), so scoring their stored vectors directly is both faster than filtering an
approximate index and immune to its missed neighbours.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from clipforge.library.dbfile import path_text
from clipforge.library.index_manager import IndexManager
from clipforge.library.scan import file_identity
from clipforge.library.store import ImageRecord, Store

__all__ = ["SearchHit", "deleted_since_indexed", "representative", "search_vector", "second_names",
           "split_second_names"]

log = logging.getLogger(__name__)


def deleted_since_indexed(path: str) -> bool:
    """Whether a hit's file was deleted since it was indexed: it is not there, its folder is. The one rule of every
    "missing" mark (CLI text, `--json`, `--paths`, REST, the web page's captions): a file whose folder is not here
    either (an unplugged drive; a Milvus store's photos on the machine that indexed them) is not called deleted,
    which `index prune` would then forget."""
    return not os.path.lexists(path) and os.path.isdir(os.path.dirname(path))


@dataclass
class SearchHit:
    """One result: the image (lowest id holding these bytes whose file is still there, else the lowest id)
    and its cosine similarity."""

    id: int
    path: str
    score: float
    sha256: str
    width: int | None
    height: int | None
    duplicates: list[str] = field(default_factory=list)
    tags: list[tuple[str, float]] = field(default_factory=list)
    same_file: list[str] = field(default_factory=list)  # other names of this very file (links), not copies

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; a name that is not UTF-8 is ``b64:`` + base64 of its bytes (`dbfile.path_text`, as `embed`
        and `index export` write it): its backslash-escaped display form was also the name of another file."""
        data = asdict(self)
        data["path"] = path_text(self.path)
        data["duplicates"] = [path_text(p) for p in self.duplicates]
        data["same_file"] = [path_text(p) for p in self.same_file]
        data["tags"] = [{"label": label, "score": round(score, 6)} for label, score in self.tags]
        return data


def representative(records: Sequence[ImageRecord]) -> ImageRecord:
    """Which of the records of one content (identical photos, given oldest first: by id here, by `added_at` on a
    Milvus store) a hit shows: the oldest whose file is still on disk, else the oldest. The one rule of both stores.

    A copy still on disk stands for the bytes: the lowest id's file deleted, the hit was shown "missing" (and
    `--paths` piped a name that does not open) while the same photo sat under its other names. A link whose target
    is gone does not open either (`exists`, not `lexists`, as `prune` judges)."""
    return next((r for r in records if os.path.exists(r.path)), records[0])


def _hits(store: Store, model: str, ranked: Sequence[tuple[int, float]],
          allowed: set[int] | None) -> list[SearchHit]:
    images = store.images_for_embeddings(model, [eid for eid, _ in ranked])
    hits: list[SearchHit] = []
    for eid, score in ranked:
        records: list[ImageRecord] = images.get(eid, [])
        if allowed is not None:
            records = [r for r in records if r.id in allowed]
        if not records:  # removed by another writer since the index was built
            continue
        first = representative(records)
        hits.append(SearchHit(id=first.id, path=first.path, score=float(score), sha256=first.sha256 or "",
                              width=first.width, height=first.height,
                              duplicates=[r.path for r in records if r is not first]))
    tags = store.tags_for_images(model, [h.id for h in hits])
    for hit in hits:
        hit.tags = tags.get(hit.id, [])
    return hits


def split_second_names(hit: SearchHit) -> SearchHit:
    """`hit` with the names in `duplicates` that are the same file as its path (one device and inode, links
    followed) moved to `same_file`: they are not copies. A stat per listed name, for the hits shown only; a
    name that cannot be stat'ed (gone, another machine's) stays where it was."""
    if not hit.duplicates:
        return hit
    identity = file_identity(hit.path)
    if identity is None:
        return hit
    same = [path for path in hit.duplicates if file_identity(path) == identity]
    if not same:
        return hit
    return replace(hit, duplicates=[path for path in hit.duplicates if path not in same],
                   same_file=[*hit.same_file, *same])


def second_names(rows: Sequence[tuple[str, str]]) -> int:
    """How many of `rows` ((sha256, path) of images sharing their bytes, `Store.shared_content_paths`) are a
    further name of a file another row names: one file reached through a symlinked folder and its real path
    counted twice in `index stats` ("188 indexed" for 94 files on disk). Names that cannot be stat'ed count
    as files of their own."""
    seen: set[tuple[str, tuple[int, int]]] = set()
    count = 0
    for sha, path in rows:
        identity = file_identity(path)
        if identity is None:
            continue
        count += (sha, identity) in seen
        seen.add((sha, identity))
    return count


def search_vector(store: Store, manager: IndexManager, query: np.ndarray, top_k: int,
                  allowed_image_ids: Sequence[int] | None = None) -> list[SearchHit]:
    """Top-k images for a unit query vector, optionally restricted to `allowed_image_ids`."""
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    model = manager.fingerprint
    if top_k <= 0:
        return []
    if allowed_image_ids is not None:
        if not len(allowed_image_ids):
            return []
        ids, vectors = store.vectors_for_image_ids(model, allowed_image_ids)
        if not len(ids):
            return []
        scores = vectors @ query
        order = np.argsort(-scores, kind="stable")[:top_k]
        ranked = [(int(ids[i]), float(scores[i])) for i in order]
        return _hits(store, model, ranked, set(int(i) for i in allowed_image_ids))
    # Exactly top_k rows: an approximate index widens its search for a k past the one it was tuned for
    # (`VectorIndex.knob_for`; the default k of 20 already does), and spare rows would widen it further.
    scores, ids = manager.search(query[None, :], top_k)
    ranked = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
    # equal scores (one picture saved twice, its bytes differing) by id, as the exact paths order them: FAISS gave
    # them newest first, so `-k 1` was not the first row of `-k 4` (audit 66 determinism)
    ranked.sort(key=lambda pair: (-pair[1], pair[0]))
    hits = _hits(store, model, ranked, None)
    if len(hits) < top_k and len(ranked) < store.embedding_count(model):
        # Short while the library holds more: the index left slots empty (a graph region its search did not
        # reach), or rows it holds lost their photos to another writer meanwhile. Not passed on as a short list.
        log.info("the index answered %d of %d results; ranking them by exact search", len(hits), top_k)
        hits = _hits(store, model, _exact_ranked(store, manager, query, top_k + 8), None)
    return hits[:top_k]


def _exact_ranked(store: Store, manager: IndexManager, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The exact top-k (embedding id, score) over the stored vectors, a chunk at a time (as the index is built)."""
    best_ids = np.empty(0, dtype=np.int64)
    best_scores = np.empty(0, dtype=np.float32)
    for ids, vectors in store.iter_embeddings(manager.fingerprint, dim=manager.embed_dim):
        best_ids = np.concatenate([best_ids, ids])
        best_scores = np.concatenate([best_scores, vectors @ query])
        if len(best_ids) > k:  # a tie cut at k keeps the lowest ids (argpartition kept any of them)
            keep = np.lexsort((best_ids, -best_scores))[:k]
            best_ids, best_scores = best_ids[keep], best_scores[keep]
    order = np.lexsort((best_ids, -best_scores))[:k]  # by score, ties by id
    return [(int(best_ids[i]), float(best_scores[i])) for i in order]
