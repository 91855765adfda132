"""FAISS indexes over unit vectors: exact by default, approximate when the library is large.

Inner product on L2-normalised vectors is cosine similarity, so every index here uses
METRIC_INNER_PRODUCT. An exact flat scan of 1M x 512 float32 reads 2 GB per query (about
150 ms on a 2-core machine: memory bound), so large libraries want IVF (scan only the
`nprobe` nearest of `nlist` k-means cells) or HNSW (a proximity graph). Approximate indexes
are only worth having if their recall is known, so building one measures recall@k against
exact search on held-out stored vectors and, unless told otherwise, picks the smallest
`nprobe` / `efSearch` that reaches the target recall.

That knob is measured for recall@`recall_k` (10), so a search for more results widens it for that call: a fixed
efSearch of 16 returned 156 of `search -k 200` over 2,000 photos (HNSW's candidate list is the result list), a fixed
nprobe of 8 scanned 599 vectors for `-k 1500`, and the true top 100 were ~30% missed. The widened knob is passed as
faiss's per-call SearchParameters, never written on the index, which several server threads search at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MIN_IVF_VECTORS",
    "IndexSpec",
    "VectorIndex",
    "build_index",
    "default_nlist",
    "exact_knn",
    "recall_at_k",
    "resolve_kind",
]

KINDS = ("flat", "ivf", "hnsw", "auto")
_IVF_PROBES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024)
_HNSW_EFS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)


_INT_FIELDS = (  # (name, lowest, highest, may be None): what FAISS can build in bounded memory and time
    ("nlist", 1, 1 << 18, True),
    ("nprobe", 1, 1 << 18, True),
    ("hnsw_m", 2, 512, False),
    ("ef_construction", 1, 1 << 16, False),
    ("ef_search", 1, 1 << 16, True),
    ("recall_k", 1, 10_000, False),
    ("recall_queries", 0, 1 << 20, False),
    ("train_size", 1, 1 << 40, True),
    ("train_iterations", 1, 10_000, False),
    ("auto_threshold", 0, 1 << 62, False),
    ("seed", 0, (1 << 31) - 1, False),
)


@dataclass
class IndexSpec:
    """How to index. `kind="auto"` means flat below `auto_threshold` vectors, IVF above.

    nprobe / ef_search None = tune on the data to reach `target_recall` (recall@`recall_k`).
    IVF trains on a random sample of `train_size` vectors (default 64 per cell), which
    bounds build time however large the library grows.
    """

    kind: str = "flat"
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int | None = None
    target_recall: float = 0.95
    recall_k: int = 10
    recall_queries: int = 500
    train_size: int | None = None
    train_iterations: int = 12
    auto_threshold: int = 100_000
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        # A spec is read back from the database (`IndexManager.spec`), so a hand-edited one must not reach
        # FAISS: nlist 10**12 was std::bad_alloc (a traceback) on every search.
        for name, low, high, optional in _INT_FIELDS:
            value = getattr(self, name)
            if value is None and optional:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not low <= value <= high
            ):
                raise ValueError(
                    f"index setting {name} must be a whole number from {low} to {high}"
                    f"{' (or unset)' if optional else ''}, got {value!r:.40}"
                )
        recall = self.target_recall
        if isinstance(recall, bool) or not isinstance(recall, (int, float)) or not 0.0 < recall <= 1.0:
            raise ValueError(
                f"index setting target_recall must be a number above 0 and at most 1, got {recall!r:.40}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def resolve_kind(spec: IndexSpec, count: int) -> str:
    if spec.kind != "auto":
        return spec.kind
    return "ivf" if count >= spec.auto_threshold else "flat"


MIN_IVF_VECTORS = 39 * 4  # FAISS wants 39 training points per cell; fewer than 4 cells is not worth it


def default_nlist(count: int) -> int:
    """A power of two near 2*sqrt(n), with at least 39 training points per cell (FAISS's minimum)."""
    if count < MIN_IVF_VECTORS:
        return 1
    nlist = 2 ** round(math.log2(max(4.0, 2.0 * math.sqrt(count))))
    while nlist > 1 and count < 39 * nlist:
        nlist //= 2
    return int(min(nlist, 65536))


def exact_knn(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k (positions into `vectors`), the ground truth for recall."""
    import faiss

    k = min(k, len(vectors))
    scores, positions = faiss.knn(
        np.ascontiguousarray(queries, dtype=np.float32),
        np.ascontiguousarray(vectors, dtype=np.float32),
        k,
        metric=faiss.METRIC_INNER_PRODUCT,
    )
    return scores, positions


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of the true top-k ids that appear in the found top-k ids."""
    k = min(k, truth.shape[1])
    hits = 0
    for row_found, row_truth in zip(found[:, :k], truth[:, :k], strict=True):
        hits += len(set(row_found.tolist()) & set(row_truth.tolist()))
    return hits / float(len(truth) * k) if len(truth) else 1.0


@dataclass
class VectorIndex:
    """A FAISS index whose ids are the library's embedding ids, plus how it was built."""

    index: Any
    kind: str
    dim: int
    params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def apply_params(self) -> None:
        """Search-time knobs live on the index object (written before any concurrent reader)."""
        import faiss

        if self.kind == "ivf" and "nprobe" in self.params:
            faiss.extract_index_ivf(self.index).nprobe = int(self.params["nprobe"])
        if self.kind == "hnsw" and "ef_search" in self.params:
            faiss.downcast_index(self.index.index).hnsw.efSearch = int(self.params["ef_search"])

    def knob_for(self, k: int) -> tuple[str, int] | None:
        """The search knob a search for `k` results uses ("nprobe" / "ef_search", value); None for an exact index.

        Up to the tuning's `recall_k` the tuned value (recall and speed as measured at build time). Beyond it, the
        tuned value scaled by k / recall_k (the same effort per result that reached the target recall; harder data
        tuned a larger knob and so widens more), capped at the whole index: IVF's nprobe at nlist (an exact scan),
        HNSW's efSearch at the vector count and at least 2k, as the candidate list is also the result list (on a
        2,000-photo library efSearch k gave recall@k 0.98-0.999, 2k 0.999-1.0), and at most 4k above the tuned
        value: a large tuned efSearch scaled by k / recall_k reached 20,480 for an anonymous `top_k=200` at 100k
        vectors (142-310 ms a query, an exact scan 23 ms; review 62)."""
        name = {"ivf": "nprobe", "hnsw": "ef_search"}.get(self.kind)
        if name is None or name not in self.params:
            return None
        tuned, covered = int(self.params[name]), max(1, int(self.info.get("recall_k") or 10))
        k = min(int(k), self.count)
        if k <= covered:
            return name, max(tuned, k) if name == "ef_search" else tuned
        scaled = max(tuned, math.ceil(tuned * k / covered))
        if name == "nprobe":
            return name, min(scaled, int(self.params.get("nlist") or scaled))
        return name, max(k, min(max(tuned, 2 * k, min(scaled, 4 * k)), self.count))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [q, k], embedding ids [q, k]); missing slots have id -1. Safe from many threads: a knob widened
        for a large k (`knob_for`) is this call's SearchParameters, the index object is not changed."""
        import faiss

        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.count == 0 or k <= 0:
            return (
                np.zeros((len(queries), 0), dtype=np.float32),
                np.zeros((len(queries), 0), dtype=np.int64),
            )
        k = min(int(k), self.count)
        knob = self.knob_for(k)
        if knob is None or knob[1] == int(self.params[knob[0]]):  # the knob already on the index (apply_params)
            return self.index.search(queries, k)
        if knob[0] == "nprobe":
            params: Any = faiss.SearchParametersIVF()
            params.nprobe = knob[1]
        else:
            params = faiss.SearchParametersHNSW()
            params.efSearch = knob[1]
        return self.index.search(queries, k, params=params)


def _flat(dim: int) -> Any:
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _train_sample(vectors: np.ndarray, size: int, seed: int) -> np.ndarray:
    if size >= len(vectors):
        return vectors
    rng = np.random.default_rng(seed)
    return vectors[np.sort(rng.choice(len(vectors), size=size, replace=False))]


def _build_ivf(vectors: np.ndarray, ids: np.ndarray, spec: IndexSpec) -> tuple[Any, dict[str, Any]]:
    import faiss

    nlist = int(spec.nlist or default_nlist(len(vectors)))
    quantizer = faiss.IndexFlatIP(vectors.shape[1])
    index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = int(spec.train_iterations)
    index.cp.seed = int(spec.seed)
    train_size = int(spec.train_size or min(len(vectors), 64 * nlist))
    sample = _train_sample(vectors, max(train_size, min(len(vectors), 39 * nlist)), spec.seed)
    started = time.perf_counter()
    index.train(sample)
    trained = time.perf_counter() - started
    index.add_with_ids(vectors, ids)
    return index, {"nlist": nlist, "train_size": len(sample), "train_seconds": round(trained, 3)}


def _build_hnsw(vectors: np.ndarray, ids: np.ndarray, spec: IndexSpec) -> tuple[Any, dict[str, Any]]:
    import faiss

    inner = faiss.IndexHNSWFlat(vectors.shape[1], int(spec.hnsw_m), faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = int(spec.ef_construction)
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(vectors, ids)
    return index, {"hnsw_m": int(spec.hnsw_m), "ef_construction": int(spec.ef_construction)}


def _tune(vindex: VectorIndex, vectors: np.ndarray, ids: np.ndarray, spec: IndexSpec) -> dict[str, Any]:
    """Measure recall@k against exact search (leave-one-out on stored vectors) and pick the knob."""
    k = int(spec.recall_k)
    if len(vectors) <= k + 1:  # too few to measure: search everything, which is exact
        if vindex.kind == "ivf":
            vindex.params["nprobe"] = int(spec.nprobe or vindex.params["nlist"])
        else:
            vindex.params["ef_search"] = int(spec.ef_search or max(_HNSW_EFS[0], k + 1))
        vindex.apply_params()
        return {"recall_at_k": 1.0, "recall_k": k, "recall_queries": 0}
    rng = np.random.default_rng(spec.seed + 1)
    n_queries = min(int(spec.recall_queries), len(vectors))
    pick = np.sort(rng.choice(len(vectors), size=n_queries, replace=False))
    queries = vectors[pick]
    _, truth_pos = exact_knn(queries, vectors, k + 1)
    truth = _drop_self(ids[truth_pos], ids[pick], k)

    def measure() -> float:  # the knob as set, never widened for k + 1 (`VectorIndex.search` would)
        _, found = vindex.index.search(queries, k + 1)
        return recall_at_k(_drop_self(found, ids[pick], k), truth, k)

    name, fixed, candidates = (
        ("nprobe", spec.nprobe, [p for p in _IVF_PROBES if p <= vindex.params["nlist"]])
        if vindex.kind == "ivf"
        else ("ef_search", spec.ef_search, list(_HNSW_EFS))
    )
    curve: list[tuple[int, float]] = []
    if fixed is not None:
        vindex.params[name] = int(fixed)
        vindex.apply_params()
        curve.append((int(fixed), measure()))
    else:
        for value in candidates or [1]:
            vindex.params[name] = int(value)
            vindex.apply_params()
            curve.append((int(value), measure()))
            if curve[-1][1] >= spec.target_recall:
                break
    return {
        "recall_at_k": round(curve[-1][1], 4),
        "recall_k": k,
        "recall_queries": n_queries,
        "tuning_curve": [{name: v, "recall": round(r, 4)} for v, r in curve],
    }


def _drop_self(found: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    """Remove each query's own id (a stored vector finds itself) and keep k columns."""
    out = np.full((len(found), k), -1, dtype=np.int64)
    for row, (ids_row, own) in enumerate(zip(found, self_ids, strict=True)):
        kept = [int(i) for i in ids_row if i != own][:k]
        out[row, : len(kept)] = kept
    return out


def build_index(vectors: np.ndarray, ids: np.ndarray, spec: IndexSpec | None = None) -> VectorIndex:
    """Build the index `spec` asks for over unit `vectors` labelled by int64 `ids`."""
    spec = spec or IndexSpec()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"expected vectors [n, d] and n ids, got {vectors.shape} and {ids.shape}")
    kind = resolve_kind(spec, len(vectors))
    fallback = None
    if kind == "ivf" and default_nlist(len(vectors)) < 2 and not spec.nlist:
        kind = "flat"  # too few vectors to train even two cells: exact is also the fastest here
        fallback = (
            f"{len(vectors)} vectors are too few to train IVF cells (it needs at least {MIN_IVF_VECTORS}), "
            "and exact search is as fast at this size"
        )
    started = time.perf_counter()
    if kind == "flat":
        index, params = _flat(vectors.shape[1]), {}
        index.add_with_ids(vectors, ids)
    elif kind == "ivf":
        index, params = _build_ivf(vectors, ids, spec)
    else:
        index, params = _build_hnsw(vectors, ids, spec)
    vindex = VectorIndex(index=index, kind=kind, dim=int(vectors.shape[1]), params=params)
    built = time.perf_counter() - started
    info: dict[str, Any] = {"build_seconds": round(built, 3), "requested_kind": spec.kind}
    if fallback:
        info["kept_flat_because"] = fallback
    if kind != "flat":
        info.update(_tune(vindex, vectors, ids, spec))
    else:
        info.update({"recall_at_k": 1.0, "recall_k": spec.recall_k})
    vindex.info = info
    return vindex
