"""Vector search at library scale: exact FAISS flat scan vs the library's approximate IVF index.

    python benchmarks/bench_search.py                       # 1,000,000 x 512, ~3-5 minutes on 2 cores
    python benchmarks/bench_search.py --n 100000 --quick    # a smoke run

Data: `--clusters` Gaussian clusters on the unit sphere with uneven sizes (Dirichlet weights) and
uneven spreads, renormalised - neighbourhoods that resemble real image embeddings far more than
uniform noise (which has no neighbours worth finding). Queries are fresh draws from the same
distribution, not stored vectors. Text encoding is excluded: a query is a ready unit vector.

The approximate index is built by the library's own `build_index` (IVF, nlist ~ 2*sqrt(n),
k-means trained on a 64-per-cell sample, nprobe tuned to recall@10 >= target on stored
vectors); the benchmark then sweeps nprobe on held-out queries and reports median single-query
latency, recall@10 against exact, and the ratio to exact search. Writes JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def clustered_vectors(n: int, dim: int, clusters: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """Unit vectors in `clusters` Gaussian clusters with a CLIP-like structure.

    Real image embeddings share a common direction (pairs of unrelated images still have cosine
    ~0.3-0.5) and their clusters group into related families, so near neighbours of a query often
    sit in sibling clusters. Here: centres = global direction + one of clusters/64 "family"
    directions + their own offset; cluster sizes are uneven (Dirichlet weights) and so are their
    spreads. This is harder for IVF than isolated clusters, which any index solves at nprobe 1.
    """
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    common = unit(rng.standard_normal(dim, dtype=np.float32))
    families = unit(rng.standard_normal((max(8, clusters // 64), dim), dtype=np.float32))
    parent = rng.integers(0, len(families), clusters)
    own = unit(rng.standard_normal((clusters, dim), dtype=np.float32))
    centres = unit(0.6 * common + 0.6 * families[parent] + 0.55 * own).astype(np.float32)
    weights = rng.dirichlet(np.full(clusters, 0.7))
    spreads = rng.uniform(0.6, 1.1, clusters).astype(np.float32) / np.sqrt(dim)
    out = np.empty((n, dim), dtype=np.float32)
    labels = rng.choice(clusters, size=n, p=weights)
    for start in range(0, n, chunk):
        lab = labels[start:start + chunk]
        block = rng.standard_normal((len(lab), dim), dtype=np.float32)
        block *= spreads[lab, None]
        block += centres[lab]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + len(lab)] = block
    return out


def neighbourhood_contrast(vectors: np.ndarray, queries: np.ndarray, truth_scores: np.ndarray,
                           seed: int) -> dict[str, float]:
    """How distinct neighbours are from the crowd: cosine of the 1st and k-th neighbour vs random pairs."""
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(len(vectors), 2000, replace=False)]
    random_cos = float(np.median(np.sum(sample[:1000] * sample[1000:], axis=1)))
    return {"median_cos_1st_neighbour": round(float(np.median(truth_scores[:, 0])), 4),
            "median_cos_kth_neighbour": round(float(np.median(truth_scores[:, -1])), 4),
            "median_cos_random_pair": round(random_cos, 4)}


def single_query_latencies(search, queries: np.ndarray) -> list[float]:
    """Seconds per query, one query at a time (what an interactive search pays)."""
    times = []
    for q in queries:
        q = q[None, :]
        started = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - started)
    return times


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (len(truth) * k)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=4000)
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries for recall")
    parser.add_argument("--latency-queries", type=int, default=300, help="single queries timed per setting")
    parser.add_argument("--exact-latency-queries", type=int, default=40)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer timed queries")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench_search.json")
    args = parser.parse_args(argv)

    import faiss

    from clipforge.library.vector_index import IndexSpec, build_index

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    if args.quick:
        args.latency_queries, args.exact_latency_queries = 100, 10
    k = args.k
    t0 = time.perf_counter()
    data = clustered_vectors(args.n + args.queries, args.dim, args.clusters, args.seed)
    vectors, queries = data[:args.n], data[args.n:]
    ids = np.arange(args.n, dtype=np.int64)
    gen_s = time.perf_counter() - t0
    print(f"data: {args.n:,} x {args.dim} in {args.clusters} clusters + {args.queries} queries ({gen_s:.1f}s)",
          flush=True)

    t0 = time.perf_counter()
    truth_scores, truth = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    truth_s = time.perf_counter() - t0
    contrast = neighbourhood_contrast(vectors, queries, truth_scores, args.seed)
    print(f"neighbourhoods: {contrast}", flush=True)
    # On a busy machine a single-query scan with several OpenMP threads can be far slower than with
    # one (the idle thread spins against other processes), so exact is timed both ways and the
    # faster one is the anchor: the speedup reported is never inflated by a handicapped baseline.
    default_threads = faiss.omp_get_max_threads()
    exact_by_threads = {}
    for threads in sorted({1, default_threads}):
        faiss.omp_set_num_threads(threads)
        times = single_query_latencies(lambda q: faiss.knn(q, vectors, k, metric=faiss.METRIC_INNER_PRODUCT),
                                       queries[:args.exact_latency_queries])
        exact_by_threads[threads] = statistics.median(times) * 1e3
    faiss.omp_set_num_threads(default_threads)
    exact_ms = min(exact_by_threads.values())
    print(f"exact flat: median {exact_ms:.2f} ms/query (by OpenMP threads: "
          f"{ {t: round(v, 2) for t, v in exact_by_threads.items()} }; batched ground truth for "
          f"{args.queries} queries in {truth_s:.1f}s)", flush=True)

    spec = IndexSpec(kind="ivf", nlist=args.nlist, target_recall=args.target_recall, recall_k=k)
    t0 = time.perf_counter()
    vindex = build_index(vectors, ids, spec)
    build_s = time.perf_counter() - t0
    ivf = faiss.extract_index_ivf(vindex.index)
    print(f"IVF build: nlist {vindex.params['nlist']}, trained on {vindex.params['train_size']:,} "
          f"in {vindex.params['train_seconds']:.1f}s, total build+tune {build_s:.1f}s; library-tuned nprobe "
          f"{vindex.params['nprobe']} (estimated recall@{k} {vindex.info['recall_at_k']})", flush=True)

    sweep = []
    tuned = int(vindex.params["nprobe"])
    candidates = sorted({p for p in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, tuned)
                         if p <= vindex.params["nlist"]})
    for nprobe in candidates:
        ivf.nprobe = nprobe
        _, found = vindex.index.search(queries, k)
        r = recall(found, truth, k)
        lat = single_query_latencies(lambda q: vindex.index.search(q, k), queries[:args.latency_queries])
        faiss.omp_set_num_threads(1)
        lat_1 = single_query_latencies(lambda q: vindex.index.search(q, k), queries[:args.latency_queries])
        faiss.omp_set_num_threads(default_threads)
        if statistics.median(lat_1) < statistics.median(lat):
            lat = lat_1  # same rule as for exact: report the better thread setting
        med = statistics.median(lat) * 1e3
        p95 = float(np.percentile(lat, 95)) * 1e3
        sweep.append({"nprobe": nprobe, "recall_at_k": round(r, 4), "median_ms": round(med, 3),
                      "p95_ms": round(p95, 3), "speedup_vs_exact": round(exact_ms / med, 1)})
        print(f"  nprobe {nprobe:4d}: recall@{k} {r:.4f}  median {med:7.3f} ms  p95 {p95:7.3f} ms  "
              f"{exact_ms / med:6.1f}x faster than exact", flush=True)
        if r >= 0.995 and nprobe >= tuned:
            break
    meeting = [s for s in sweep if s["recall_at_k"] >= args.target_recall]
    chosen = min(meeting, key=lambda s: s["median_ms"]) if meeting else None
    library_choice = next(s for s in sweep if s["nprobe"] == tuned)
    result = {
        "benchmark": "bench_search", "n": args.n, "dim": args.dim, "clusters": args.clusters, "k": k,
        "queries": args.queries, "data": contrast, "exact": {"median_ms": round(exact_ms, 3), "latency_queries": args.exact_latency_queries,
                                                       "median_ms_by_threads": exact_by_threads},
        "ivf": {"nlist": vindex.params["nlist"], "train_size": vindex.params["train_size"],
                "train_seconds": vindex.params["train_seconds"], "build_and_tune_seconds": round(build_s, 1),
                "library_tuned_nprobe": tuned, "library_estimated_recall": vindex.info["recall_at_k"],
                "library_choice_on_heldout": library_choice, "sweep": sweep},
        "best_meeting_target": chosen, "target_recall": args.target_recall,
        "goal_met_5ms": bool(chosen and chosen["median_ms"] < 5.0),
        "machine": {"cpus": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(),
                    "load_average": os.getloadavg(), "python": sys.version.split()[0],
                    "faiss": faiss.__version__, "platform": platform.platform()},
    }
    from clipforge.atomic import write_json_atomic

    write_json_atomic(args.out, result)
    _plot(result, args.out.with_suffix(".png"))
    if chosen:
        print(f"result: IVF nprobe {chosen['nprobe']}: median {chosen['median_ms']:.3f} ms/query vs exact "
              f"{exact_ms:.2f} ms ({chosen['speedup_vs_exact']}x) at recall@{k} {chosen['recall_at_k']}")
    else:
        print(f"result: no nprobe reached recall@{k} >= {args.target_recall}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = result["ivf"]["sweep"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot([s["median_ms"] for s in sweep], [s["recall_at_k"] for s in sweep], "o-", label="IVF (nprobe sweep)")
    for s in sweep:
        ax.annotate(str(s["nprobe"]), (s["median_ms"], s["recall_at_k"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=7)
    ax.scatter([result["exact"]["median_ms"]], [1.0], color="black", marker="s", label="exact flat scan")
    ax.axhline(result["target_recall"], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("median latency per query (ms, log scale)")
    ax.set_ylabel(f"recall@{result['k']} vs exact")
    ax.set_title(f"{result['n']:,} x {result['dim']} clustered unit vectors")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
