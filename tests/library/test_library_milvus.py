"""The Milvus store (milvus-lite here): same answers as the embedded store, incremental, crash-safe."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.cli.main import main  # noqa: E402
from clipforge.library import Library  # noqa: E402
from clipforge.library import indexer as indexer_module  # noqa: E402
from clipforge.library import milvus_add as milvus_add_module  # noqa: E402
from clipforge.library import milvus_library as milvus_module  # noqa: E402
from clipforge.library import milvus_store as store_module  # noqa: E402
from clipforge.library.backend import parse_store, read_token  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary, tag_filter  # noqa: E402

# Opt-in: the "server" cases run on a real Milvus server (the milvus-server extra, or
# $CLIPFORGE_TEST_MILVUS_ADDRESS); the `milvus_server` fixture is in tests/library/conftest.py.
MILVUS_SERVER = pytest.mark.skipif(
    not (os.environ.get("CLIPFORGE_TEST_MILVUS_ADDRESS") or importlib.util.find_spec("milvus")),
    reason="no Milvus server (pip install -e '.[milvus-server]', or set CLIPFORGE_TEST_MILVUS_ADDRESS)")


@pytest.fixture()
def photo_set(tmp_path, images_factory, bad_files_factory) -> Path:
    photos = images_factory(tmp_path / "photos", 14, formats=("png", "jpg", "webp"))
    bad_files_factory(tmp_path / "photos" / "bad", photos[1])
    shutil.copyfile(photos[0], tmp_path / "photos" / "copy_of_first.png")  # same bytes, two paths
    photos[5].rename(tmp_path / "photos" / "potter's \"wheel\" \\ 5.webp")  # quotes in a filter expression
    return tmp_path / "photos"


@pytest.fixture(params=["lite", pytest.param("server", marks=MILVUS_SERVER)])
def store(request, tmp_path) -> str:
    """A fresh store: a milvus-lite file, and (opt-in) a new collection on a real Milvus server."""
    if request.param == "lite":
        return f"milvus-lite:{tmp_path}/m.db"
    return f"milvus://{request.getfixturevalue('milvus_server')}/t{uuid.uuid4().hex[:12]}"


class _Score(float):
    """A score equal to another within 5e-5 (Milvus and FAISS sum in different orders; rounding both
    to 5 places split -0.036995 into -0.037 and -0.03699)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and abs(float(self) - float(other)) <= 5e-5

    __hash__ = float.__hash__


def _hits(hits) -> list[tuple[str, float, list[str]]]:
    return [(h.path, _Score(h.score), h.duplicates) for h in hits]


def test_same_top10_as_the_embedded_store(tmp_path, tiny_encoder, photo_set, store) -> None:
    embedded = Library(tmp_path / "lib", tiny_encoder)
    milvus = MilvusLibrary(store, tmp_path / "mlib", tiny_encoder)
    a = embedded.add(photo_set, workers=0, batch_size=4, progress=False)
    b = milvus.add(photo_set, workers=0, batch_size=4, progress=False)
    assert (b.added, b.embedded, b.duplicates, b.failed) == (a.added, a.embedded, a.duplicates, a.failed) == (
        15, 14, 1, 4)
    assert sorted(b.failures) == sorted(a.failures)
    for query in ("a photo of a cat", "red - blue", "green"):
        assert _hits(milvus.search(query, top_k=10)) == _hits(embedded.search(query, top_k=10))
    assert _hits(milvus.search(image=photo_set / "img003.png", top_k=5)) == _hits(
        embedded.search(image=photo_set / "img003.png", top_k=5))
    labels = "red, green, blue, grey"
    assert embedded.classify(labels, top_k=3, progress=False).top1_counts == milvus.classify(
        labels, top_k=3, progress=False).top1_counts
    for label in ("red", "green", "blue", "grey"):
        for rank, floor in ((0, 0.0), (1, 0.2), (2, 0.0)):
            want = embedded.search("photo", top_k=10, filter_tags=label, tag_rank=rank, min_tag_score=floor)
            got = milvus.search("photo", top_k=10, filter_tags=label, tag_rank=rank, min_tag_score=floor)
            assert _hits(got) == _hits(want), (label, rank, floor)
            assert [[t for t, _ in h.tags] for h in got] == [[t for t, _ in h.tags] for h in want]
    stats = milvus.stats()
    assert stats["images"] == {"ok": 15, "failed": 4} and stats["distinct_contents"] == 14
    assert [s["images"] for s in stats["spaces"]] == [14]  # distinct contents, as the embedded store counts them
    milvus.close()


def test_tag_filter_is_a_milvus_expression() -> None:
    assert tag_filter(["cat", 'say "hi"'], 1, 0.5) == (
        '(((tags[0] == "cat" or tags[0] == "say \\"hi\\"") and tag_scores[0] >= 0.5) or '
        '((tags[1] == "cat" or tags[1] == "say \\"hi\\"") and tag_scores[1] >= 0.5))')
    assert tag_filter(["cat"]) == '((tags[0] == "cat"))'


def test_rerun_skips_remove_and_prune(tmp_path, tiny_encoder, photo_set, monkeypatch, store) -> None:
    with MilvusLibrary(store, tmp_path / "mlib", tiny_encoder) as milvus:
        milvus.add(photo_set, workers=0, progress=False)
        monkeypatch.setattr(store_module, "_PAGE", 4)  # a server's scans in pages of 4 keys (quotes in names)
        rows = [r["path"] for r in milvus.space.iter_rows(fields=["path"])]
        assert len(rows) == len(set(rows)) == 19 and any('"wheel"' in p for p in rows)

        class Forbidden:
            def __init__(self, *a, **k):
                raise AssertionError("unchanged files must be skipped without reading")

        monkeypatch.setattr(indexer_module, "ImageFileReader", Forbidden)  # the one reader of both stores
        again = milvus.add(photo_set, workers=0, progress=False)
        assert (again.unchanged, again.added, again.embedded) == (19, 0, 0)
        monkeypatch.undo()
        assert milvus.remove(photo_set / "img002.webp") == 1
        with pytest.raises(ValueError, match="has no image with"):
            milvus.remove([photo_set / "nope.png"], missing_ok=False)
        (photo_set / "img003.png").unlink()
        assert milvus.prune() == 1
        assert milvus.stats()["images"]["ok"] == 13
        hit = milvus.search("x", top_k=1)[0]
        assert milvus.get_image(hit.id).path == hit.path and milvus.thumbnail(hit.id, 32)[:2] == b"\xff\xd8"


def test_store_spec_never_takes_a_token_from_the_command_line(tmp_path, monkeypatch) -> None:
    assert parse_store("milvus://db.example:19530/photos").collection == "photos"
    assert parse_store(f"milvus-lite:{tmp_path}/x.db").kind == "milvus-lite"
    for spec in ("milvus://root:secret@db:19530/c", "milvus://db:19530/c?token=abc", "milvus://db/c",
                 "milvus-lite:x.txt", "milvus://db:19530/1bad", "redis://x"):
        with pytest.raises(ValueError, match="--store"):
            parse_store(spec)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    monkeypatch.delenv("CLIPFORGE_MILVUS_TOKEN", raising=False)
    monkeypatch.setenv("CLIPFORGE_MILVUS_TOKEN_FILE", str(token))
    assert read_token() == "s3cret"


def test_unreachable_store_mid_run_is_one_sentence_and_a_rerun_repairs(tmp_path, photo_set, capsys,
                                                                       monkeypatch) -> None:
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    store = f"milvus-lite:{tmp_path}/m.db"
    args = ["index", "add", str(photo_set), "--store", store, "--library", str(tmp_path / "mlib"),
            "--model", "test-vit-tiny", "--workers", "0", "--batch-size", "4", "-q"]
    real = MilvusClient.upsert
    calls = []

    def flaky(self, collection, rows, *args, **kwargs):  # the server goes away at the third batch
        calls.append(collection)
        if collection.endswith("_spaces") or len(calls) < 4:
            return real(self, collection, rows, *args, **kwargs)
        raise MilvusException(message="failed to connect to all addresses; last error: UNAVAILABLE")

    monkeypatch.setattr(MilvusClient, "upsert", flaky)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "UNAVAILABLE" in err and "running the same command again" in err
    monkeypatch.undo()
    assert main(args) == 0
    capsys.readouterr()
    with MilvusLibrary(store, tmp_path / "mlib") as milvus:
        rows = list(milvus.space.iter_rows(fields=["path", "status"]))
    assert len(rows) == len({r["path"] for r in rows}) == 19
    assert sum(r["status"] == "ok" for r in rows) == 15


# `clipforge index add --store milvus-lite:...`, slowed after each written batch so the kill lands mid-run.
_SLOW = """
import sys, time
from clipforge.library import milvus_library
write = milvus_library.MilvusWriter.write
def slow_write(self, batch):
    write(self, batch)
    print("batch", flush=True)
    time.sleep(0.4)
milvus_library.MilvusWriter.write = slow_write
from clipforge.cli.main import main
sys.exit(main({args!r}))
"""


def test_kill_9_mid_run_then_rerun_stores_each_image_once(tmp_path, photo_set, store) -> None:
    args = ["index", "add", str(photo_set), "--store", store, "--library", str(tmp_path / "mlib"),
            "--model", "test-vit-tiny", "--workers", "0", "--batch-size", "3", "-q"]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW.format(args=args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    seen = 0
    deadline = time.monotonic() + 120
    while seen < 2 and time.monotonic() < deadline:
        if proc.stdout.readline().startswith(b"batch"):
            seen += 1
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert seen == 2, proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
    with MilvusLibrary(store, tmp_path / "mlib") as milvus:
        partial = {r["path"] for r in milvus.space.iter_rows(fields=["path"])}
    assert 0 < len(partial) < 19  # killed with work left
    assert main(args) == 0
    with MilvusLibrary(store, tmp_path / "mlib") as milvus:
        rows = list(milvus.space.iter_rows(fields=["path", "status", "sha256"]))
        assert len(rows) == len({r["path"] for r in rows}) == 19
        assert sum(r["status"] == "ok" for r in rows) == 15
        again = milvus.add(photo_set, workers=0, progress=False)
    assert (again.unchanged, again.added, again.embedded) == (19, 0, 0)


def test_indexer_plan_is_shared(tmp_path) -> None:
    """The Milvus store plans with the embedded store's own rules, not a copy."""
    assert milvus_add_module._plan is indexer_module._plan


def test_scale_benchmark_runs_on_a_small_set() -> None:
    """`benchmarks/scale.py` end to end on 1,500 vectors: every store reports ingest, latency and recall."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.scale import run

    result = run(n=1500, dim=32, queries=20, timed=5, milvus_nlist=8, batch=1000, progress=False, server=False)
    stores = [result["faiss"]["flat"], result["faiss"]["ivf"], result["milvus_lite"]]
    assert all(s["ingest_per_s"] > 0 and s["points"] for s in stores)
    assert result["faiss"]["flat"]["points"][0]["recall_at_k"] == 1.0
    assert all(0.0 <= p["recall_at_k"] <= 1.0 and p["p95_ms"] >= p["p50_ms"] for s in stores for p in s["points"])


@MILVUS_SERVER
def test_scale_benchmark_server_rows(milvus_server) -> None:
    """Opt-in: the benchmark's Milvus server rows (insert, build, load, sweep, release) on a small set."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.scale import run

    result = run(n=3000, dim=32, queries=20, timed=5, progress=False, milvus=False, server_address=milvus_server,
                 server_indexes=("FLAT", "HNSW"), server_batch=1000)
    server = result["milvus_server"]
    assert server["insert_per_s"] > 0 and set(server["indexes"]) == {"FLAT", "HNSW"}
    assert server["indexes"]["FLAT"]["points"][0]["recall_at_k"] == 1.0
    assert [p["ef"] for p in server["indexes"]["HNSW"]["points"]][0] == 16


def test_remove_stats_and_list_read_only_what_they_need(tmp_path, tiny_encoder, images_factory, store,
                                                         monkeypatch) -> None:
    """remove() reads the ids, paths and folders asked about (``path like``), never every row; stats()
    scans only short fields (count(*) on a server); list_images() reads whole rows of its page only."""
    mine = images_factory(tmp_path / "photos" / "my_photos", 3)
    images_factory(tmp_path / "photos" / "myXphotos", 2, seed=3)  # `_` is a wildcard to milvus-lite's `like`
    odd = Path(os.fsdecode(bytes(tmp_path / "photos" / "my_photos") + b"/\xff\xfe.png"))  # a b64: key
    shutil.copyfile(images_factory(tmp_path / "spare", 1, seed=9)[0], odd)
    scans: list[tuple[str, list[str]]] = []
    real = store_module.MilvusSpace.iter_rows

    def spy(self, filter="", fields=store_module._FIELDS):
        scans.append((filter, list(fields)))
        return real(self, filter, fields)

    with MilvusLibrary(store, tmp_path / "mlib", tiny_encoder) as milvus:
        milvus.add(tmp_path / "photos", workers=0, progress=False)
        everything = milvus.list_images(limit=100)
        monkeypatch.setattr(store_module.MilvusSpace, "iter_rows", spy)
        assert [r.path for r in milvus.list_images(limit=2, offset=1)] == [r.path for r in everything[1:3]]
        assert scans == [('status == "ok"', ["path", "added_at"])]
        scans.clear()
        stats = milvus.stats()
        assert stats["images"] == {"ok": 6, "failed": 0} and stats["distinct_contents"] == 6
        assert scans == ([("", ["status", "sha256", "tags"])] if store.startswith("milvus-lite") else
                         [('status == "ok"', ["sha256", "tags"])])
        scans.clear()
        first = milvus.get_path(str(mine[0]))
        assert milvus.remove([first.id]) == 1
        assert milvus.remove(tmp_path / "photos" / "my_photos") == 3  # two photos and the odd name
        assert scans == []
        assert sorted(Path(r.path).parent.name for r in milvus.list_images()) == ["myXphotos", "myXphotos"]


def test_a_server_reuses_the_page_order_and_stats_for_its_listing_ttl(tmp_path, tiny_encoder, images_factory,
                                                                      store, monkeypatch) -> None:
    """Each page of GET /api/images and each GET /api/stats read every row of the collection (Milvus
    cannot order a query): anonymous requests cost a full scan apiece. With `listing_ttl` (the server
    sets it from `ServerLimits.listing_cache_s`) the order and the stats are read once per period;
    writes through the library show at once; without it every call still reads the collection."""
    from clipforge.server.service import LibraryService

    images_factory(tmp_path / "photos", 5)
    scans: list[str] = []
    real = store_module.MilvusSpace.iter_rows

    def spy(self, filter="", fields=store_module._FIELDS):
        scans.append(filter)
        return real(self, filter, fields)

    with MilvusLibrary(store, tmp_path / "mlib", tiny_encoder) as milvus:
        milvus.add(tmp_path / "photos", workers=0, progress=False)
        monkeypatch.setattr(store_module.MilvusSpace, "iter_rows", spy)
        milvus.list_images(limit=2)
        milvus.list_images(limit=2, offset=2)
        milvus.stats()
        milvus.stats()
        assert len(scans) == 4  # a library opened by a command reads afresh (the control)

        service = LibraryService(milvus)
        assert milvus.listing_ttl == service.limits.listing_cache_s > 0
        scans.clear()
        pages = [service.list_images(2, offset)[0] for offset in (0, 2, 4)] + [service.list_images(2, 0)[0]]
        assert [len(p) for p in pages] == [2, 2, 1, 2]
        assert len({r.path for p in pages[:3] for r in p}) == 5 and pages[3] == pages[0]
        for _ in range(3):
            assert service.stats()["images"] == {"ok": 5, "failed": 0}
        assert len(scans) == 2  # one scan for the order, one for the stats

        extra = images_factory(tmp_path / "more", 1, seed=7)[0]
        milvus.add(extra, workers=0, progress=False)  # a write here: the next page and stats see it
        scans.clear()
        assert str(extra) in {r.path for r in service.list_images(10, 0)[0]}
        assert service.stats()["images"] == {"ok": 6, "failed": 0}
        assert len(scans) == 2
        milvus.remove(str(extra))
        assert service.stats()["images"] == {"ok": 5, "failed": 0}

        monkeypatch.setattr(milvus_module.time, "monotonic", lambda: 1e12)  # the period has passed
        scans.clear()
        service.list_images(2, 0)
        service.stats()
        assert len(scans) == 2


def test_a_search_without_results_says_why_on_milvus_too(tmp_path, tiny_encoder, images_factory, capsys) -> None:
    """`search --tag` that matched nothing crashed on a Milvus store (AttributeError: no `no_results_reason`);
    it says why, as the embedded store does, naming the top tags that exist."""
    store = f"milvus-lite:{tmp_path}/m.db"
    with MilvusLibrary(store, tmp_path / "mlib", tiny_encoder) as milvus:
        assert milvus.no_results_reason("cat").startswith("the library has no photos yet")
    images_factory(tmp_path / "photos", 6)
    base = ["--store", store, "--library", str(tmp_path / "mlib")]
    assert main(["index", "add", str(tmp_path / "photos"), *base, "--model", "test-vit-tiny", "--workers", "0",
                 "-q"]) == 0
    capsys.readouterr()
    assert main(["search", "a photo", "--tag", "giraffe", *base]) == 0
    assert capsys.readouterr() == ("", "no results: no photo has tag 'giraffe': this library has no tags yet (tag it "
                                   "with `clipforge tag --labels \"cat, dog, car\"`)\n")  # a notice: stderr
    with MilvusLibrary(store, tmp_path / "mlib") as milvus:
        milvus.classify("cat, dog", templates="simple", top_k=2, progress=False)
        counts = milvus.stats()["tags"]
        assert sum(counts.values()) == 6
        listing = ", ".join(f"{label} ({n})" for label, n in counts.items())
        assert milvus.no_results_reason(["giraffe", "zebra"]) == f"no photo has tag 'giraffe' or 'zebra'; tags: {listing}"
        assert milvus.no_results_reason(next(iter(counts))) == "no photo matched"  # the tag exists: another reason
    assert main(["search", "a photo", "--tag", "giraffe", *base]) == 0
    assert capsys.readouterr() == ("", f"no results: no photo has tag 'giraffe'; tags: {listing}\n")


def test_a_search_of_an_empty_store_creates_nothing_and_stats_tells_the_size(tmp_path, tiny_encoder, images_factory,
                                                                            capsys) -> None:
    """A search before anything was indexed answered nothing but created the model's collection (and its registry)
    in the store; it creates nothing now. `index stats` said 0.0 MB for every Milvus store: a milvus-lite
    store's size is its folder's, and grows as photos are added."""
    from clipforge.library.backend import lite_bytes

    db = tmp_path / "m.db"
    with MilvusLibrary(f"milvus-lite:{db}", tmp_path / "mlib", tiny_encoder) as milvus:
        assert milvus.search("a photo", top_k=5) == []
        assert milvus.milvus.spaces() == []
        collections = milvus.milvus.client.list_collections()
        empty = milvus.stats()["db_bytes"]
    assert collections == []
    images_factory(tmp_path / "photos", 5)
    base = ["--store", f"milvus-lite:{db}", "--library", str(tmp_path / "mlib")]
    assert main(["index", "add", str(tmp_path / "photos"), *base, "--model", "test-vit-tiny", "--workers", "0",
                 "-q"]) == 0
    with MilvusLibrary(f"milvus-lite:{db}", tmp_path / "mlib") as milvus:
        stored = milvus.stats()["db_bytes"]
        assert [hit.path for hit in milvus.search("a photo", top_k=5)]  # the same search finds the photos now
    assert stored == lite_bytes(db) > empty >= 0
    capsys.readouterr()
    assert main(["index", "stats", *base]) == 0
    assert f"database  {stored / 1e6:.1f} MB" in capsys.readouterr().out


def test_every_library_method_a_command_calls_exists_on_milvus(tmp_path, tiny_encoder, images_factory, capsys) -> None:
    """The commands and the server take either store through one interface: a method only the embedded
    `Library` has is a crash waiting for a Milvus user (`search --tag` and `tag --list` were two)."""
    embedded_only = {"index_manager"}  # the FAISS/HNSW index files; Milvus indexes inside the server
    missing = {name for name in dir(Library) if not name.startswith("_")} - set(dir(MilvusLibrary)) - embedded_only
    assert not missing, f"MilvusLibrary lacks {sorted(missing)}"
    store = f"milvus-lite:{tmp_path}/m.db"
    images_factory(tmp_path / "photos", 4)
    base = ["--store", store, "--library", str(tmp_path / "mlib")]
    assert main(["index", "add", str(tmp_path / "photos"), *base, "--model", "test-vit-tiny", "--workers", "0",
                 "-q"]) == 0
    capsys.readouterr()
    assert main(["tag", "--list", *base]) == 0
    assert capsys.readouterr().out.startswith("no tags yet")
    assert main(["tag", "--labels", "cat, dog", "--templates", "simple", *base]) == 0
    capsys.readouterr()
    assert main(["tag", "--list", "--json", *base]) == 0
    counts = json.loads(capsys.readouterr().out)["tags"]
    assert set(counts) <= {"cat", "dog"} and sum(counts.values()) == 4
