"""`index stats` of the milvus-lite store lists what the embedded store lists: the first 20 failures in the order
they were recorded (it showed an arbitrary 20 sorted by path: 7 of the folder added second before 13 of the
first, where the embedded store listed the first folder's 13), and every key the embedded store's report has
(`missing_vectors` was absent); a reason and a tag label are held to the sizes a server counts in bytes. One store and one
embedded library, built once for the module."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.cli.main import main  # noqa: E402
from clipforge.library import Library  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402
from clipforge.library.milvus_writer import row_from_record  # noqa: E402
from clipforge.library.store import ImageRecord  # noqa: E402
from tests.library.conftest import write_images  # noqa: E402


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_encoder):
    """(embedded, milvus-lite, root): 13 not-images in z/ added first, 13 in a/ second, one photo in a/."""
    root = tmp_path_factory.mktemp("failures")
    for folder in ("z", "a"):
        (root / folder).mkdir()
        for i in range(10, 23):
            (root / folder / f"bad{i}.jpg").write_text("not an image\n")
    write_images(root / "a", 1)
    embedded = Library(root / "lib", tiny_encoder)
    milvus = MilvusLibrary(f"milvus-lite:{root}/m.db", root / "mlib", tiny_encoder)
    for library in (embedded, milvus):
        for folder in ("z", "a"):
            library.add(root / folder, workers=0, progress=False)
    yield embedded, milvus, root
    milvus.close()
    embedded.close()


def test_the_first_failures_in_the_order_they_were_recorded(stores) -> None:
    embedded, milvus, root = stores
    listed = milvus.stats()["failures"]
    assert listed == embedded.stats()["failures"]
    assert [f["path"] for f in listed] == [
        *(str(root / "z" / f"bad{i}.jpg") for i in range(10, 23)),
        *(str(root / "a" / f"bad{i}.jpg") for i in range(10, 17)),
    ]
    assert {f["reason"].split(" (")[0] for f in listed} == {"not an image"}


def test_index_stats_json_has_the_embedded_stores_keys(stores, capsys) -> None:
    embedded, milvus, root = stores
    mine, theirs = milvus.stats(verify=True), embedded.stats(verify=True)
    assert set(theirs) == set(mine)  # every key on both stores, null where it does not apply (audit 66 #5)
    assert theirs["schema_version"] >= 1 and mine["schema_version"] is None  # the SQLite file's: none on Milvus
    assert mine["missing_vectors"] == theirs["missing_vectors"] == 0
    assert "missing_vectors" not in milvus.stats()  # only with verify, as the embedded store
    assert (
        main(["index", "stats", "--store", f"milvus-lite:{root}/m.db", "--library", str(root / "mlib")]) == 0
    )
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  failed: ")]
    assert (
        failed[0]
        == f"  failed: {root / 'z' / 'bad10.jpg'}: not an image (unrecognised or unsupported format)"
    )
    assert len(failed) == 20


def test_a_label_longer_than_the_tag_field_is_refused_before_anything_is_remembered(stores) -> None:
    """milvus-lite stored a 513-byte label; a Milvus server counts the 512 of the tag field in bytes and refuses
    the rows, and the vocabulary, remembered first, would then fail every later add there."""
    _, milvus, _ = stores
    label = "猫" * 171  # 513 bytes of UTF-8
    with pytest.raises(ValueError) as refused:
        milvus.classify(["fish", label], templates="a photo of a {}.", progress=False)
    assert str(refused.value) == (
        f"label {label[:40]!r}... is 513 bytes in UTF-8; a Milvus library stores labels of at most 512 bytes: "
        "use a shorter label"
    )
    assert label not in milvus.tag_counts()
    assert milvus.classify(["fish", "猫" * 170], templates="a photo of a {}.", progress=False).images == 1


def test_a_reason_is_cut_as_a_milvus_server_measures_it_and_written_when_not_utf8(stores) -> None:
    """The `error` field holds 2,048 bytes on a server (2,000 Chinese characters passed the old cut as 6,000 and the
    server refuses the batch); a reason naming an undecodable file could not be sent at all, even to milvus-lite."""
    _, milvus, root = stores
    long = row_from_record(
        ImageRecord(
            0, str(root / "long.jpg"), None, 1, 1, None, None, 0.0, "failed", "OSError: " + "猫" * 1999
        ),
        None,
        milvus.space.dim,
    )
    assert long["error"] == "OSError: " + "猫" * 679 and len(long["error"].encode()) == 2046
    odd = str(root / "odd.jpg")
    reason = os.fsdecode(b"[Errno 5] Input/output error: 'caf\xe9.jpg'")
    milvus.space.upsert(
        [
            row_from_record(
                ImageRecord(0, odd, None, 1, 1, None, None, 0.0, "failed", reason), None, milvus.space.dim
            )
        ]
    )
    try:
        assert milvus.get_path(odd).error == "[Errno 5] Input/output error: 'caf\\udce9.jpg'"
    finally:
        milvus.remove(odd)
