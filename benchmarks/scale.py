"""Library stores at scale: FAISS flat and IVF (the embedded store) vs a Milvus server and milvus-lite.

    python -m benchmarks.run --scale                  # 1,000,000 x 512; milvus-lite on the first 200,000
    python -m benchmarks.scale --n 100000             # a smaller run of the same
    python -m benchmarks.scale --milvus milvus://db.lan:19530   # an existing server instead of a local one

Data: `benchmarks.bench_search.clustered_vectors` (CLIP-like clustered unit vectors; uniform noise
has no neighbours worth finding). Queries are fresh draws of the same distribution. For every
store: ingest rate (vectors/s, index build included), single-query latency p50/p95 and recall@10
against exact inner-product search (FAISS flat is the ground truth). IVF and milvus-lite sweep
their search knob (nprobe) and the JSON keeps every point; "meets_goal" marks recall@10 >= 0.95
at p95 <= 50 ms.

The Milvus server (the `milvus` wheel's Milvus 2.3 standalone, started here in a temporary folder by
`clipforge.library.milvus_server` unless `--milvus` names one) gets the vectors once (insert + flush),
then each index type in turn (FLAT, IVF_FLAT, HNSW): build, load, sweep the search knob, release.
A type's ingest time is the shared insert+flush plus its own build+load. Its memory is the server
process's resident size loaded minus released, and its files the index files it wrote. Searches are
single gRPC calls from this process (pymilvus), Bounded consistency (the data is static).
milvus-lite runs in this process (its embedded engine is pure Python on FAISS segment indexes): its
figures describe the embedded engine, not a Milvus server (see docs/scale.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_search import clustered_vectors, recall, single_query_latencies

ROOT = Path(__file__).resolve().parents[1]
GOAL_RECALL, GOAL_P95_MS = 0.95, 50.0

__all__ = ["main", "run"]


def _latency(search: Any, queries: np.ndarray) -> dict[str, float]:
    """p50/p95 of single queries, FAISS on one OpenMP thread (on a busy machine idle OpenMP threads spin against
    other processes and multiply latency; milvus-lite searches with FAISS in this process, so it gets the same)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        times = single_query_latencies(search, queries)
    finally:
        faiss.omp_set_num_threads(threads)
    return {"p50_ms": round(statistics.median(times) * 1e3, 3), "p95_ms": round(float(np.percentile(times, 95)) * 1e3, 3)}


def _point(found: np.ndarray, truth: np.ndarray, k: int, latency: dict[str, float], **knobs: Any) -> dict[str, Any]:
    r = recall(found, truth, k)
    return {**knobs, "recall_at_k": round(r, 4), **latency,
            "meets_goal": bool(r >= GOAL_RECALL and latency["p95_ms"] <= GOAL_P95_MS)}


def _faiss(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int, timed: int,
           log: Any) -> dict[str, Any]:
    import faiss

    out: dict[str, Any] = {}
    started = time.perf_counter()
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    seconds = time.perf_counter() - started
    lat = _latency(lambda q: flat.search(q, k), queries[:timed])
    out["flat"] = {"ingest_seconds": round(seconds, 2), "ingest_per_s": round(len(vectors) / seconds),
                   "points": [_point(flat.search(queries, k)[1], truth, k, lat)]}
    log(f"faiss flat: ingest {out['flat']['ingest_per_s']:,}/s, p50 {lat['p50_ms']} ms p95 {lat['p95_ms']} ms")
    flat.reset()  # free its copy of the vectors before IVF is built

    from clipforge.library.vector_index import IndexSpec, build_index

    started = time.perf_counter()
    vindex = build_index(vectors, np.arange(len(vectors), dtype=np.int64),
                         IndexSpec(kind="ivf", target_recall=GOAL_RECALL, recall_k=k))
    seconds = time.perf_counter() - started
    ivf = faiss.extract_index_ivf(vindex.index)
    points = []
    for nprobe in (1, 2, 4, 8, 16, 32, 64, 128):
        if nprobe > ivf.nlist:
            break
        ivf.nprobe = nprobe
        point = _point(vindex.index.search(queries, k)[1], truth, k,
                       _latency(lambda q: vindex.index.search(q, k), queries[:timed]), nprobe=nprobe)
        points.append(point)
        log(f"faiss ivf nlist {ivf.nlist} nprobe {nprobe}: recall {point['recall_at_k']} p50 {point['p50_ms']} ms "
            f"p95 {point['p95_ms']} ms")
        if point["recall_at_k"] >= 0.99:
            break
    out["ivf"] = {"nlist": int(ivf.nlist), "library_nprobe": int(vindex.params["nprobe"]),
                  "ingest_seconds": round(seconds, 2), "ingest_per_s": round(len(vectors) / seconds), "points": points}
    return out


def _milvus_lite(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int, timed: int, nlist: int,
                 batch: int, log: Any) -> dict[str, Any]:
    from pymilvus import DataType, MilvusClient

    folder = Path(tempfile.mkdtemp(prefix="clipforge-scale-milvus-"))
    try:
        client = MilvusClient(str(folder / "scale.db"))
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="IVF_FLAT", metric_type="IP", params={"nlist": nlist})
        client.create_collection("scale", schema=schema, index_params=index)
        started = time.perf_counter()
        for start in range(0, len(vectors), batch):
            rows = vectors[start:start + batch].tolist()
            client.insert("scale", [{"id": start + j, "vector": row} for j, row in enumerate(rows)])
            if start // batch % 20 == 0:
                log(f"milvus-lite: inserted {start + len(rows):,} ({(start + len(rows)) / (time.perf_counter() - started):,.0f}/s)")
        inserted = time.perf_counter() - started
        client.flush("scale")
        client.release_collection("scale")
        client.load_collection("scale")  # segment indexes built and loaded: searchable at full speed
        seconds = time.perf_counter() - started
        out: dict[str, Any] = {"index": "IVF_FLAT", "nlist_per_segment": nlist, "insert_seconds": round(inserted, 1),
                               "ingest_seconds": round(seconds, 1), "ingest_per_s": round(len(vectors) / seconds),
                               "disk_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
                               "points": []}
        log(f"milvus-lite: ingest {out['ingest_per_s']:,}/s ({inserted:.0f}s insert, {seconds:.0f}s with flush+load)")
        for nprobe in (8, 16, 32, 64):
            params = {"metric_type": "IP", "params": {"nprobe": nprobe}}

            def search(q: np.ndarray, params: dict = params) -> Any:
                return client.search("scale", data=q.tolist(), limit=k, search_params=params)

            found = np.array([[hit["id"] for hit in hits] for hits in search(queries)])
            point = _point(found, truth, k, _latency(search, queries[:timed]), nprobe=nprobe)
            out["points"].append(point)
            log(f"milvus-lite nprobe {nprobe}: recall {point['recall_at_k']} p50 {point['p50_ms']} ms "
                f"p95 {point['p95_ms']} ms")
            if point["recall_at_k"] >= 0.99:
                break
        client.close()
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# Search knobs swept per Milvus index type (stop at recall >= 0.99), and the build parameters.
SERVER_INDEXES: dict[str, tuple[dict[str, Any], str, tuple[int, ...]]] = {
    "FLAT": ({}, "", (0,)),
    "IVF_FLAT": ({"nlist": 1024}, "nprobe", (4, 8, 16, 32, 64, 128)),
    "HNSW": ({"M": 16, "efConstruction": 128}, "ef", (16, 32, 64, 128, 256)),
}


def _dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _milvus_server(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int, timed: int,
                   address: str | None, indexes: list[str], batch: int, log: Any) -> dict[str, Any]:
    """One collection on a Milvus server; each index type built, loaded, swept and released in turn."""
    from pymilvus import DataType, MilvusClient

    server = folder = None
    out: dict[str, Any] = {}
    if address is None:
        from clipforge.library.milvus_server import start_local_server

        folder = Path(tempfile.mkdtemp(prefix="clipforge-scale-server-"))
        started = time.perf_counter()
        server = start_local_server(folder)
        address = server.address
        out["server_start_seconds"] = round(time.perf_counter() - started, 1)
    try:
        client = MilvusClient(uri=f"http://{address}", timeout=3600)
        out["server_version"] = client.get_server_version()
        name = "clipforge_scale"
        if client.has_collection(name):
            client.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
        client.create_collection(name, schema=schema)
        rss_empty = server.rss_bytes() if server else 0
        started = time.perf_counter()
        for start in range(0, len(vectors), batch):
            rows = vectors[start:start + batch].tolist()
            client.insert(name, [{"id": start + j, "vector": row} for j, row in enumerate(rows)])
            if start // batch % 40 == 0:
                done = start + len(rows)
                log(f"milvus server: inserted {done:,} ({done / (time.perf_counter() - started):,.0f}/s)")
        inserted = time.perf_counter() - started
        client.flush(name)
        flushed = time.perf_counter() - started
        out |= {"address": address, "insert_seconds": round(inserted, 1), "insert_flush_seconds": round(flushed, 1),
                "insert_per_s": round(len(vectors) / inserted), "batch": batch, "indexes": {}}
        if server:
            out["rss_after_insert_bytes"] = server.rss_bytes()
            out["rss_empty_bytes"] = rss_empty
            out["binlog_bytes"] = _dir_bytes(folder / "data" / "insert_log")
        log(f"milvus server {out['server_version']}: insert {out['insert_per_s']:,}/s, +flush {flushed:.0f}s")
        for kind in indexes:
            build, knob, values = SERVER_INDEXES[kind]
            started = time.perf_counter()
            index = client.prepare_index_params()
            index.add_index(field_name="vector", index_type=kind, metric_type="IP", params=dict(build))
            client.create_index(name, index)
            built = time.perf_counter() - started
            rss_released = server.rss_bytes() if server else 0
            client.load_collection(name)
            seconds = time.perf_counter() - started
            row: dict[str, Any] = {"params": build, "build_seconds": round(built, 1),
                                   "build_load_seconds": round(seconds, 1),
                                   "ingest_seconds": round(flushed + seconds, 1),
                                   "ingest_per_s": round(len(vectors) / (flushed + seconds)), "points": []}
            if server:
                time.sleep(2)
                row["rss_loaded_bytes"] = server.rss_bytes()
                row["rss_loaded_minus_released_bytes"] = row["rss_loaded_bytes"] - rss_released
                row["index_file_bytes"] = _dir_bytes(folder / "data" / "index_files")
            log(f"milvus server {kind}: build {built:.0f}s, +load {seconds:.0f}s, ingest {row['ingest_per_s']:,}/s")
            for value in values:
                params = {"metric_type": "IP", "params": {knob: value} if knob else {}}

                def search(q: np.ndarray, params: dict = params) -> Any:
                    return client.search(name, data=q.tolist(), limit=k, search_params=params,
                                         consistency_level="Bounded")

                found = np.array([[hit["id"] for hit in hits] for hits in search(queries)])
                knobs = {knob: value} if knob else {}
                point = _point(found, truth, k, _latency(search, queries[:timed]), **knobs)
                row["points"].append(point)
                log(f"milvus server {kind} {knob} {value}: recall {point['recall_at_k']} p50 {point['p50_ms']} ms "
                    f"p95 {point['p95_ms']} ms")
                if point["recall_at_k"] >= 0.99:
                    break
            out["indexes"][kind] = row
            client.release_collection(name)
            client.drop_index(name, "vector")
            if server:  # the files of a dropped index are garbage-collected later: count only the next one's
                shutil.rmtree(folder / "data" / "index_files", ignore_errors=True)
        client.drop_collection(name)
        client.close()
        return out
    finally:
        if server:
            server.stop()
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def run(n: int = 1_000_000, dim: int = 512, queries: int = 200, timed: int = 100, k: int = 10,
        milvus: bool = True, milvus_nlist: int = 256, batch: int = 10_000, seed: int = 0,
        progress: bool = True, lite_n: int | None = 200_000, server: bool = True, server_address: str | None = None,
        server_indexes: tuple[str, ...] = ("FLAT", "IVF_FLAT", "HNSW"), server_batch: int = 5_000) -> dict[str, Any]:
    import faiss

    def log(line: str) -> None:
        if progress:
            print(line, flush=True)

    started = time.perf_counter()
    data = clustered_vectors(n + queries, dim, 4000, seed)
    vectors, held_out = data[:n], data[n:]
    truth = faiss.knn(held_out, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    log(f"data: {n:,} x {dim} + {queries} queries, exact top-{k} ({time.perf_counter() - started:.0f}s)")
    result: dict[str, Any] = {"benchmark": "scale", "n": n, "dim": dim, "k": k, "queries": queries,
                              "latency_queries": timed, "goal": {"recall_at_k": GOAL_RECALL, "p95_ms": GOAL_P95_MS},
                              "load_average_start": [round(x, 2) for x in os.getloadavg()],
                              "cpus": len(os.sched_getaffinity(0)), "nice": os.nice(0)}
    result["faiss"] = _faiss(vectors, held_out, truth, k, timed, log)
    if server:
        try:
            result["milvus_server"] = _milvus_server(vectors, held_out, truth, k, timed, server_address,
                                                     list(server_indexes), server_batch, log)
        except ImportError as exc:
            result["milvus_server"] = {"skipped": f"no Milvus server: the milvus-server extra is not installed ({exc})"}
        result["load_average_after_server"] = [round(x, 2) for x in os.getloadavg()]
    if milvus:
        sub = min(n, lite_n or n)  # the pure-Python engine ingests ~750 rows/s: a subset, with its own truth
        sub_truth = truth if sub == n else faiss.knn(held_out, vectors[:sub], k, metric=faiss.METRIC_INNER_PRODUCT)[1]
        try:
            result["milvus_lite"] = {"n": sub, **_milvus_lite(vectors[:sub], held_out, sub_truth, k, timed,
                                                              milvus_nlist, batch, log)}
        except ImportError as exc:
            result["milvus_lite"] = {"skipped": f"pymilvus/milvus-lite not installed ({exc})"}
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200, help="held-out queries for recall")
    parser.add_argument("--latency-queries", type=int, default=100, help="single queries timed per setting")
    parser.add_argument("--milvus-nlist", type=int, default=256, help="IVF cells per milvus-lite segment")
    parser.add_argument("--no-milvus", action="store_true", help="skip milvus-lite")
    parser.add_argument("--lite-n", type=int, default=200_000, help="vectors given to milvus-lite (0: all)")
    parser.add_argument("--milvus", metavar="milvus://HOST:PORT", default=None,
                        help="an existing Milvus server (default: start the milvus-server extra's one locally)")
    parser.add_argument("--no-server", action="store_true", help="skip the Milvus server")
    parser.add_argument("--server-indexes", default="FLAT,IVF_FLAT,HNSW")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results-scale.json")
    args = parser.parse_args(argv)
    address = args.milvus.removeprefix("milvus://").rstrip("/") if args.milvus else None
    result = run(args.n, args.dim, args.queries, args.latency_queries, milvus=not args.no_milvus,
                 milvus_nlist=args.milvus_nlist, lite_n=args.lite_n or None, server=not args.no_server,
                 server_address=address, server_indexes=tuple(args.server_indexes.split(",")))
    from clipforge.atomic import write_json_atomic

    write_json_atomic(args.out, result)
    print(f"wrote {args.out} (load {result['load_average_start']} -> {result['load_average_end']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
