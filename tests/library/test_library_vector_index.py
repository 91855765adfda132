"""FAISS indexes: exact search equals numpy brute force; approximate ones reach their recall."""

from __future__ import annotations

import numpy as np
import pytest

from clipforge.library.vector_index import IndexSpec, build_index, default_nlist, exact_knn, recall_at_k


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    """Gaussian clusters around random unit centres, renormalised onto the sphere."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((clusters, dim)))
    labels = rng.integers(0, clusters, n)
    return _unit(centres[labels] + spread / np.sqrt(dim) * rng.standard_normal((n, dim)))


def test_flat_index_equals_numpy_brute_force():
    rng = np.random.default_rng(0)
    vectors = _unit(rng.standard_normal((3000, 48)))
    ids = np.arange(3000, dtype=np.int64) * 7 + 100  # ids need not be positions
    queries = _unit(rng.standard_normal((25, 48)))
    index = build_index(vectors, ids, IndexSpec(kind="flat"))
    scores, found = index.search(queries, 10)
    brute = queries @ vectors.T
    order = np.argsort(-brute, axis=1)[:, :10]
    np.testing.assert_array_equal(found, ids[order])
    np.testing.assert_allclose(scores, np.take_along_axis(brute, order, axis=1), rtol=1e-5, atol=1e-5)
    assert index.kind == "flat" and index.info["recall_at_k"] == 1.0


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_reaches_target_recall_on_clustered_data(kind):
    vectors = clustered(10000, 32, clusters=100, spread=0.6, seed=1)
    ids = np.arange(len(vectors), dtype=np.int64)
    spec = IndexSpec(kind=kind, target_recall=0.95, recall_queries=200, ef_construction=40, hnsw_m=16)
    index = build_index(vectors, ids, spec)
    assert index.kind == kind
    # The build's own estimate (leave-one-out on stored vectors) reached the target...
    assert index.info["recall_at_k"] >= 0.95
    curve = index.info["tuning_curve"]
    assert curve[-1]["recall"] >= 0.95 and all(step["recall"] < 0.95 for step in curve[:-1])
    # ...and so does an independent measurement on fresh queries from the same distribution.
    rng = np.random.default_rng(5)
    queries = _unit(vectors[rng.choice(len(vectors), 300)] + 0.02 * rng.standard_normal((300, 32)))
    _, truth = exact_knn(queries, vectors, 10)
    _, found = index.search(queries, 10)
    assert recall_at_k(found, ids[truth], 10) >= 0.93
    if kind == "ivf":
        assert index.params["nlist"] == default_nlist(len(vectors))
        assert index.params["nprobe"] < index.params["nlist"]  # really approximate, not a full scan


def test_ivf_with_fixed_nprobe_reports_its_recall():
    vectors = clustered(5000, 16, clusters=50, spread=0.5, seed=2)
    index = build_index(vectors, np.arange(5000), IndexSpec(kind="ivf", nlist=64, nprobe=1, recall_queries=100))
    assert index.params == {**index.params, "nlist": 64, "nprobe": 1}
    assert 0.0 < index.info["recall_at_k"] <= 1.0
    assert len(index.info["tuning_curve"]) == 1


def test_auto_kind_and_tiny_inputs():
    small = clustered(500, 8, clusters=5, spread=0.5, seed=3)
    assert build_index(small, np.arange(500), IndexSpec(kind="auto")).kind == "flat"
    assert build_index(small, np.arange(500), IndexSpec(kind="auto", auto_threshold=100)).kind == "ivf"
    # Too few vectors to train IVF cells: falls back to exact.
    assert build_index(small[:50], np.arange(50), IndexSpec(kind="ivf")).kind == "flat"
    empty = build_index(np.zeros((0, 8), np.float32), np.zeros(0, np.int64), IndexSpec())
    assert empty.count == 0 and empty.search(small[:2], 5)[1].shape == (2, 0)


def test_default_nlist():
    assert default_nlist(100) == 1
    assert default_nlist(1_000_000) == 2048
    assert default_nlist(10_000) == 256 and 10_000 >= 39 * 256
    with pytest.raises(ValueError, match="unknown index kind"):
        IndexSpec(kind="lsh")


def test_recall_at_k_counts_overlap():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 1], [5, -1, -1, -1]])
    assert recall_at_k(found, truth, 4) == pytest.approx((3 + 1) / 8)
