"""Search, the derived index's staleness checks, model identity, tags, uploads, schema."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.library import Library, ModelMismatchError, SchemaError, resolve_encoder
from clipforge.library.schema import CREATED_VERSION
from clipforge.library.store import SCHEMA_VERSION, Store


@pytest.fixture()
def library(tmp_path, tiny_encoder, images_factory):
    images_factory(tmp_path / "photos", 8)
    lib = Library(tmp_path / "lib", tiny_encoder)
    lib.add(tmp_path / "photos", workers=0, progress=False)
    yield lib
    lib.close()


def test_search_by_image_text_and_arithmetic(library, tmp_path):
    target = tmp_path / "photos" / "img003.jpg"
    hits = library.search(image=target, top_k=3)
    assert hits[0].path == str(target) and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # Scores are cosine similarities of the stored vectors with the query vector.
    text_hits = library.search(text="a red car", top_k=8)
    query = library.encoder.encode_texts(["a red car"])[0]
    stored = library.store.vectors_for_shas(library.encoder.fingerprint, [h.sha256 for h in text_hits])
    for hit in text_hits:
        assert hit.score == pytest.approx(float(stored[hit.sha256] @ query), abs=1e-5)
    assert len(text_hits) == 8
    mixed = library.search(f'"a red car" + {target} - 0.5:"grass"', top_k=2)
    enc = library.encoder
    vec = enc.encode_texts(["a red car"])[0] + enc.encode_images([str(target)])[0] - 0.5 * enc.encode_texts(["grass"])[0]
    vec /= np.linalg.norm(vec)
    assert mixed[0].score == pytest.approx(float(stored_or_fetch(library, mixed[0].sha256) @ vec), abs=1e-5)
    assert library.search("x", top_k=0) == []


def stored_or_fetch(library: Library, sha: str) -> np.ndarray:
    return library.store.vectors_for_shas(library.encoder.fingerprint, [sha])[sha]


def test_index_follows_the_database(library, tmp_path, tiny_encoder, images_factory):
    manager = library.index_manager
    library.search("cat")
    # A second process (here: a second Library on the same folder) trusts the saved index...
    other = Library(tmp_path / "lib", tiny_encoder)
    other.search("cat")
    assert other.index_manager.last_action == "loaded"
    # ...and rows it adds are appended to the first one's live index, not rebuilt.
    new = images_factory(tmp_path / "more", 2, seed=50, formats=("png",))
    other.add(tmp_path / "more", workers=0, progress=False, update_index=False)
    hits = library.search(image=new[1], top_k=1)
    assert manager.last_action == "extended" and hits[0].path == str(new[1])
    assert manager.get().count == 10
    # Removing rows cannot be patched in place: rebuild.
    other.remove(new[1])
    assert library.search(image=new[1], top_k=1)[0].path != str(new[1])
    assert manager.last_action == "rebuilt" and manager.get().count == 9
    saved = json.loads(library.store.get_meta(manager.state_key))
    assert saved["count"] == 9 and saved["model_fingerprint"] == tiny_encoder.fingerprint
    assert saved["file_crc32"] == f"{zlib.crc32(manager.index_path.read_bytes()):08x}"
    # A saved index older than the database is loaded and extended with the new rows.
    more = images_factory(tmp_path / "more2", 1, seed=60, formats=("png",))
    other.add(tmp_path / "more2", workers=0, progress=False, update_index=False)
    reopened = Library(tmp_path / "lib", tiny_encoder)
    assert reopened.search(image=more[0], top_k=1)[0].path == str(more[0])
    assert reopened.index_manager.last_action == "loaded" and reopened.index_manager.get().count == 10
    # Missing file, tampered record, damaged index file: each means rebuild, never a wrong answer.
    for damage in ("delete", "record", "garbage"):
        if damage == "delete":
            manager.index_path.unlink()
        elif damage == "record":
            saved = json.loads(library.store.get_meta(manager.state_key))
            saved["content_hash"] = "0" * 64
            with library.store.transaction() as tx:
                tx.set_meta(manager.state_key, json.dumps(saved))
        else:
            manager.index_path.write_bytes(b"not a faiss index")
        fresh = Library(tmp_path / "lib", tiny_encoder)
        assert fresh.search(image=new[0], top_k=1)[0].path == str(new[0])
        assert fresh.index_manager.last_action == "rebuilt", damage
    other.close()


def test_switching_index_kind_is_remembered(library, tmp_path, tiny_encoder):
    info = library.rebuild_index("hnsw", ef_search=32)
    assert info["kind"] == "hnsw" and info["params"]["ef_search"] == 32
    reopened = Library(tmp_path / "lib", tiny_encoder)
    reopened.search("x")
    assert reopened.index_manager.last_action == "loaded"
    assert reopened.stats()["index"]["kind"] == "hnsw"
    assert reopened.rebuild_index("flat")["kind"] == "flat"


def test_model_mismatch_is_refused(library, tmp_path, tiny_encoder):
    with pytest.raises(ModelMismatchError, match="test-vit-tiny") as err:
        Library(tmp_path / "lib", "test-rn-tiny")
    assert "another --library folder" in str(err.value)
    torch.manual_seed(123)  # same architecture, different weights: still a different model
    from clipforge.models import create_model_from_config, get_config

    with pytest.raises(ModelMismatchError):
        Library(tmp_path / "lib", create_model_from_config(get_config("test-vit-tiny")))
    conn = sqlite3.connect(library.paths.db)
    assert conn.execute("SELECT COUNT(DISTINCT model) FROM embeddings").fetchone()[0] == 1
    # Without --model, the recorded model is loaded by name: same fingerprint, search works.
    reopened = Library(tmp_path / "lib")
    assert reopened.encoder.fingerprint == tiny_encoder.fingerprint
    assert len(reopened.search("a photo", top_k=3)) == 3


def test_tags_are_stored_and_filter_search(library):
    report = library.classify(["cat", "dog", "car"], templates="simple", top_k=2, progress=False)
    assert report.images == 8 and sum(report.top1_counts.values()) == 8
    enc = library.encoder
    classes = enc.encode_texts([f"a photo of a {c}." for c in ["cat", "dog", "car"]])
    for record in library.list_images():
        vector = stored_or_fetch(library, record.sha256)
        logits = enc.logit_scale() * classes @ vector
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs)[:2]
        tags = library.tags(record.id)
        assert [t[0] for t in tags] == [["cat", "dog", "car"][i] for i in order]
        np.testing.assert_allclose([t[1] for t in tags], probs[order], atol=1e-4)
    for label, count in report.top1_counts.items():
        hits = library.search("anything", top_k=50, filter_tags=label)
        assert len(hits) == count and all(h.tags[0][0] == label for h in hits)
    top2 = library.search("anything", top_k=50, filter_tags=["cat"], tag_rank=1)
    assert len(top2) >= report.top1_counts.get("cat", 0)
    assert library.search("anything", filter_tags="zebra") == []
    assert library.stats()["tags"] == report.top1_counts
    # A new label set replaces the old tags.
    library.classify("indoor,outdoor", templates="simple", progress=False)
    assert {t[0] for r in library.list_images() for t in library.tags(r.id)} == {"indoor", "outdoor"}


def test_classify_image_matches_library_tags(library, tmp_path):
    path = tmp_path / "photos" / "img002.png"
    library.classify("cat,dog,car", templates="simple", top_k=3, progress=False)
    record = library.store.image_by_path(str(path))
    direct = library.classify_image(str(path), "cat,dog,car", templates="simple")
    assert [p[0] for p in direct] == [t[0] for t in library.tags(record.id)]
    assert sum(p for _, p in direct) == pytest.approx(1.0, abs=1e-5)


def test_add_bytes_thumbnails_and_image_bytes(library, tmp_path):
    from clipforge.image import ImageLoadError

    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(buffer, format="PNG")
    record = library.add_bytes(buffer.getvalue(), filename="holiday.jpg")  # the name lies; the bytes decide
    assert record.status == "ok" and record.path.endswith(".png") and (record.width, record.height) == (300, 200)
    assert library.search(image=buffer.getvalue(), top_k=1)[0].id == record.id
    data, mime = library.image_bytes(record.id)
    assert data == buffer.getvalue() and mime == "image/png"
    thumb = library.thumbnail(record.id, size=64)
    with Image.open(io.BytesIO(thumb)) as im:
        assert im.format == "JPEG" and max(im.size) == 64
    assert library.thumbnail(record.id, size=64) == thumb  # served from the cache
    assert again_same_record(library, buffer.getvalue(), record.id)
    with pytest.raises(ImageLoadError, match="not an image"):
        library.add_bytes(b"<html>nope</html>", filename="x.png")
    with pytest.raises(KeyError):
        library.thumbnail(999999)
    assert library.get_image(999999) is None
    with pytest.raises(ValueError, match="between"):
        library.thumbnail(record.id, size=100000)


def test_a_big_upload_is_checked_at_a_reduced_scale_and_truncation_still_refused(library, largest_jpeg_decode):
    """`add_bytes` decodes an upload to check it before keeping it: a big JPEG at a reduced DCT scale (every
    byte of its entropy-coded data is still read), so a cut anywhere, down to the last bytes, is refused and
    nothing is stored."""
    from clipforge.image import ImageLoadError

    rng = np.random.default_rng(3)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).resize((2400, 1800)).save(buffer, "JPEG")
    data = buffer.getvalue()
    largest = largest_jpeg_decode
    before = library.stats()["images"]
    for keep in (0.5, 0.99, 0.999):
        with pytest.raises(ImageLoadError, match="truncated"):
            library.add_bytes(data[: int(len(data) * keep)], filename="cut.jpg")
    assert library.stats()["images"] == before
    assert not library.paths.uploads_dir.exists() or not any(p.is_file() for p in library.paths.uploads_dir.rglob("*"))
    record = library.add_bytes(data, filename="big.jpg")
    assert record.status == "ok" and (record.width, record.height) == (2400, 1800)
    assert 0 < largest[0] <= 2400 * 1800 // 16, f"decoded {largest[0]:,} pixels of a 2400 x 1800 upload"


def again_same_record(library: Library, data: bytes, expected_id: int) -> bool:
    return library.add_bytes(data).id == expected_id


def test_concurrent_reads_while_writing(library, tmp_path, images_factory):
    errors: list[BaseException] = []
    ids = [r.id for r in library.list_images()]
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                assert library.search(text="a dog", top_k=3)
                assert library.get_image(ids[0]) is not None
                library.thumbnail(ids[1], size=32)
                library.stats()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for round_ in range(3):
            images_factory(tmp_path / f"more{round_}", 3, seed=100 + round_, formats=("png",))
            library.add(tmp_path / f"more{round_}", workers=0, progress=False)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert library.store.status_counts()["ok"] == 17


def test_schema_is_versioned_and_checked(tmp_path):
    store = Store(tmp_path / "a.sqlite3")
    conn = store.conn()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == CREATED_VERSION  # raised by the writes that need it
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.integrity_ok()
    store.close()
    newer = sqlite3.connect(tmp_path / "a.sqlite3")
    newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer.close()
    with pytest.raises(SchemaError, match="newer"):
        Store(tmp_path / "a.sqlite3")
    foreign = sqlite3.connect(tmp_path / "b.sqlite3")
    foreign.execute("CREATE TABLE t (x)")
    foreign.close()
    with pytest.raises(SchemaError, match="not a clipforge library"):
        Store(tmp_path / "b.sqlite3")
    with pytest.raises(FileNotFoundError, match="index add"):
        Library(tmp_path / "missing", create=False)


def test_default_location_follows_xdg(monkeypatch, tmp_path):
    from clipforge.library import default_library_dir

    monkeypatch.delenv("CLIPFORGE_LIBRARY", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_library_dir() == tmp_path / "data" / "clipforge" / "library"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_library_dir() == tmp_path / "home" / ".local" / "share" / "clipforge" / "library"
    monkeypatch.setenv("CLIPFORGE_LIBRARY", str(tmp_path / "explicit"))
    assert default_library_dir() == tmp_path / "explicit"


def test_resolve_encoder_accepts_every_model_form(tiny_encoder):
    model, preprocess = tiny_encoder.model, tiny_encoder.preprocess
    for form in (tiny_encoder, model, (model, preprocess), "test-vit-tiny"):
        assert resolve_encoder(form).fingerprint == tiny_encoder.fingerprint
    with pytest.raises(TypeError, match="model must be"):
        resolve_encoder(42)


def test_an_avif_upload_keeps_its_format_as_extension(library):
    """An AVIF upload was stored as `holiday.img` (no extension known for the format): a later scan of the
    uploads did not see it as an image. `.avif` now, from the bytes."""
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow cannot write AVIF")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 160, 90)).save(buffer, format="AVIF")
    record = library.add_bytes(buffer.getvalue(), filename="holiday.jpg")
    assert record.status == "ok" and record.path.endswith("/holiday.avif"), record.path
    assert library.image_bytes(record.id) == (buffer.getvalue(), "image/avif")
