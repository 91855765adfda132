"""One lossless JSON form of a failed file's name, and one `index stats --json` schema (audit 66 scripter, #1 and #5).

#1: `index add --json` and `index stats --json` wrote a name that is not UTF-8 with ``\\xNN`` escapes
(`BadImage.to_dict`'s backslashreplace): the Latin-1 name ``bad\\xe9.jpg`` and a UTF-8 name holding the four
characters ``\\xe9`` came out as the same string, which opens neither, while `embed`, `search` and `index list --json`
wrote ``b64:`` + base64 of the bytes, as the scan notice promises ("JSON writes them as b64:..."). Every report now
writes `path_text`; the lines people read (the REST API's `filename`, stderr, error messages) keep the escapes.

#5: `index stats --json` had `schema_version` only on the embedded store, `store` only on Milvus, and an `index` of
16 keys against 3: both stores now give every key, null where it does not apply (README, "`index stats --json`").
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.data.bad import BadImage
from clipforge.library.dbfile import path_text, text_path
from tests.library.conftest import write_images

pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses names that are not UTF-8")

TINY = ["--model", "test-vit-tiny", "--device", "cpu", "--workers", "0", "-q"]
README = Path(__file__).resolve().parents[2] / "README.md"


def _b64(raw: bytes) -> str:
    return "b64:" + base64.b64encode(raw).decode("ascii")


@pytest.fixture(scope="module")
def amb(tmp_path_factory) -> tuple[Path, list[str]]:
    """A folder with one photo and two files that are not images: ``bad\\xe9.jpg`` in Latin-1 (byte 0xe9) and a
    UTF-8 name holding a backslash, ``bad\\\\xe9.jpg``; (folder, their JSON names, Latin-1 first)."""
    folder = tmp_path_factory.mktemp("s66") / "amb"
    write_images(folder, 1)
    latin = os.fsencode(folder) + b"/bad\xe9.jpg"
    Path(os.fsdecode(latin)).write_bytes(b"not an image\n")
    (folder / "bad\\xe9.jpg").write_text("not an image\n")
    return folder, [_b64(latin), str(folder / "bad\\xe9.jpg")]


def _json(capsys, args: list[str]) -> dict:
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_a_bad_images_json_name_is_lossless_and_tells_the_two_names_apart(amb) -> None:
    folder, names = amb
    latin, literal = os.fsdecode(os.fsencode(folder) + b"/bad\xe9.jpg"), str(folder / "bad\\xe9.jpg")
    assert BadImage(latin, "not an image").to_dict() == {"path": names[0], "reason": "not an image"}
    assert BadImage(literal, "x").to_dict()["path"] == names[1] == literal
    assert BadImage("/p/金鱼.png", "x").to_dict()["path"] == "/p/金鱼.png"  # UTF-8 names stay as they are
    assert [text_path(name) for name in names] == [latin, literal]  # each opens its own file
    assert all(os.path.exists(text_path(name)) for name in names)
    assert BadImage(latin, "x").to_dict()["path"] == path_text(latin)  # one implementation, re-exported


def test_index_add_and_index_stats_json_write_b64_names(amb, tmp_path, capsys) -> None:
    folder, names = amb
    library = str(tmp_path / "lib")
    added = _json(capsys, ["index", "add", str(folder), "--library", library, *TINY, "--json"])
    assert (added["added"], added["failed"]) == (1, 2)
    assert sorted(f["path"] for f in added["failures"]) == sorted(names)
    stats = _json(capsys, ["index", "stats", "--library", library, "--json"])
    assert sorted(f["path"] for f in stats["failures"]) == sorted(names)
    assert main(["index", "list", "--library", library, "--json", "--failed"]) == 0
    listed = [json.loads(line)["path"] for line in capsys.readouterr().out.splitlines()]
    assert sorted(listed) == sorted(names)  # the form `index list --json` always wrote


def test_the_rest_api_names_a_failed_file_escaped_as_before(amb, tmp_path, tiny_encoder) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipforge.library import Library
    from clipforge.server import create_app

    folder, _ = amb
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(folder, workers=0, progress=False)
        with TestClient(create_app(library, ui=False)) as client:
            answer = client.get("/api/stats")
    assert answer.status_code == 200, answer.text
    assert sorted(f["filename"] for f in answer.json()["failures"]) == ["bad\\xe9.jpg", "bad\\xe9.jpg"]


def test_a_damaged_shard_is_named_escaped_in_its_line_and_losslessly_in_the_log() -> None:
    from clipforge.data.webdata import DamagedShard
    from clipforge.train.skipped import SkippedImages, damaged_record

    raw = b"/data/shard\xe9.tar"
    shard = DamagedShard(os.fsdecode(raw), "damaged shard (ReadError)", samples_read=3, error="ReadError")
    assert damaged_record(shard) == {"shard": _b64(raw), "samples_read": 3, "error": "ReadError"}
    assert SkippedImages("training data").damaged_line(shard) == (
        "training data: shard /data/shard\\xe9.tar is damaged (ReadError): 3 samples were read from it, the rest "
        "could not be (see log.jsonl)")


# -- milvus-lite: the same names and the same stats keys -----------------------------------------------------------

@pytest.fixture(scope="module")
def stores(amb, tmp_path_factory):
    """(embedded library folder, milvus-lite store argument, empty embedded folder, empty milvus-lite argument)."""
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    folder, _ = amb
    root = tmp_path_factory.mktemp("s66stores")
    for args in (["--library", str(root / "lib")], ["--store", f"milvus-lite:{root}/m.db"]):
        assert main(["index", "add", str(folder), *args, *TINY]) == 0
    (root / "empty").mkdir()
    assert main(["index", "add", str(root / "empty"), "--store", f"milvus-lite:{root}/e.db", *TINY]) == 0
    return str(root / "lib"), f"milvus-lite:{root}/m.db", str(root / "elib"), f"milvus-lite:{root}/e.db"


def test_a_milvus_store_writes_the_same_failure_names(amb, stores, capsys) -> None:
    _, names = amb
    stats = _json(capsys, ["index", "stats", "--store", stores[1], "--json"])
    assert sorted(f["path"] for f in stats["failures"]) == sorted(names)


def test_removing_an_unknown_name_from_milvus_says_it_escaped(amb, stores, capsys) -> None:
    folder, _ = amb
    gone = os.fsdecode(os.fsencode(folder) + b"/gone\xe9.jpg")
    assert main(["index", "remove", gone, "--store", stores[1]]) == 2
    err = capsys.readouterr().err
    assert f"has no image with {folder}/gone\\xe9.jpg (nothing removed" in err, err


INDEX_KEYS = ["path", "requested", "kind", "exists", "fresh", "next_search", "file_unchanged", "vectors_in_db",
              "newer_vectors", "count", "params", "recall_at_k", "recall_k", "built_at", "last_action",
              "rebuild_reason"]
STATS_KEYS = ["library", "store", "schema_version", "images", "model", "distinct_contents", "db_bytes", "index",
              "tags", "spaces", "failures", "missing_vectors", "same_file_names"]


def test_index_stats_json_has_the_same_keys_on_both_stores(stores, capsys) -> None:
    embedded = _json(capsys, ["index", "stats", "--library", stores[0], "--json"])
    milvus = _json(capsys, ["index", "stats", "--store", stores[1], "--json"])
    assert sorted(embedded) == sorted(milvus) == sorted(STATS_KEYS)
    assert sorted(embedded["index"]) == sorted(milvus["index"]) == sorted(INDEX_KEYS)
    assert (embedded["store"], milvus["store"]) == ("sqlite", "milvus-lite")
    assert isinstance(embedded["schema_version"], int) and milvus["schema_version"] is None
    assert (embedded["same_file_names"], milvus["same_file_names"]) == (0, None)  # Milvus cannot tell
    assert milvus["index"] == {**dict.fromkeys(INDEX_KEYS), "requested": "milvus", "kind": "milvus", "exists": True,
                               "fresh": True, "next_search": "none", "newer_vectors": 0}
    assert (embedded["images"], embedded["distinct_contents"]) == (milvus["images"], milvus["distinct_contents"])


def test_a_store_without_a_model_space_gives_the_same_keys(tmp_path, tiny_encoder) -> None:
    """A Milvus store before its first photo (`serve --create` answers /api/stats so): `model` and `index` null, `tags`
    {}, `missing_vectors` null; `same_file_names` is the command's (`index stats` adds it)."""
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from clipforge.library import Library
    from clipforge.library.milvus_library import MilvusLibrary

    milvus = MilvusLibrary(f"milvus-lite:{tmp_path}/e.db", tmp_path / "mlib", tiny_encoder)
    try:
        empty, unverified = milvus.stats(verify=True), milvus.stats()
    finally:
        milvus.close()
    with Library(tmp_path / "lib", tiny_encoder) as library:
        embedded = library.stats(verify=True)
        assert "missing_vectors" not in library.stats() and "missing_vectors" not in unverified  # only with verify
    assert sorted(empty) == sorted(embedded) == sorted(set(STATS_KEYS) - {"same_file_names"})
    assert (empty["model"], empty["index"], empty["tags"], empty["missing_vectors"]) == (None, None, {}, None)
    assert (empty["store"], empty["schema_version"], empty["spaces"], empty["failures"]) == ("milvus-lite", None, [], [])


def test_the_readme_documents_every_key() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("`index stats --json` is one object")
    paragraph = text[start:text.index("\n\n", start)]
    documented = set(re.findall(r"`([a-z_0-9]+)`", paragraph))
    assert set(STATS_KEYS) <= documented and set(INDEX_KEYS) <= documented, set(STATS_KEYS + INDEX_KEYS) - documented
