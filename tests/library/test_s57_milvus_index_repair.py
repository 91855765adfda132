"""A milvus-lite index file left short or overwritten is rebuilt, not a store broken for good.

milvus-lite writes a segment's index file in place the first time the collection is loaded after a write (so by a
plain `search`): a process killed there, or refused the write by a full disk or a file-size limit, left it short,
and every command after failed on it ("Failed to read all data for array ... (file seems not fully written?)";
"No data left in file"; garbage: "restore the folder from a backup, or index the photos again"), though the rows
were whole and deleting the derived file was the whole repair. Now the store deletes the index files of that
collection, says so in one notice, and the engine builds them again from the rows."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.cli.main import main  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402


def _store(tmp_path: Path, images_factory) -> list[str]:
    from milvus_lite.server_manager import server_manager_instance

    images_factory(tmp_path / "photos", 4)
    with MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "lib", "test-vit-tiny") as milvus:
        milvus.add(tmp_path / "photos", workers=0, progress=False)
    server_manager_instance.release_server(f"{tmp_path}/m.db")
    return ["--store", f"milvus-lite:{tmp_path}/m.db", "--library", str(tmp_path / "lib"), "--model", "test-vit-tiny"]


def _search(capfd, base: list[str]) -> tuple[int, str, str]:
    from milvus_lite.server_manager import server_manager_instance

    code = main(["search", "a photo", "-k", "4", "--paths", *base])
    server_manager_instance.release_server(base[1].removeprefix("milvus-lite:"))  # the next command opens it anew
    out, err = capfd.readouterr()
    return code, out, err


@pytest.mark.parametrize("damage", ["short", "empty", "garbage"])
def test_an_unreadable_index_file_is_rebuilt_and_said(tmp_path, images_factory, capfd, damage) -> None:
    base = _store(tmp_path, images_factory)
    code, before, _ = _search(capfd, base)  # the first load after the write writes the index files
    assert code == 0 and len(before.splitlines()) == 4
    files = sorted((tmp_path / "m.db" / "collections").glob("*/partitions/*/indexes/*.idx"))
    sizes = [path.stat().st_size for path in files]
    assert files
    for path in files:  # what a kill -9 or `ulimit -f` during that first load leaves
        if damage == "short":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif damage == "empty":
            path.write_bytes(b"")
        else:
            path.write_bytes(bytes(range(256)) * 2)
    code, after, err = _search(capfd, base)
    assert code == 0, err
    assert after == before  # every photo found, as before
    notices = [line for line in err.splitlines() if line.startswith("notice: milvus-lite store")]
    assert notices and all("index file" in line and "nothing stored is lost" in line for line in notices), err
    assert [path.stat().st_size for path in files] == sizes  # built again, whole
    assert _search(capfd, base)[2] == ""  # and read without a word the next time


def test_an_unreadable_manifest_is_said_not_read_as_an_empty_library(tmp_path, images_factory, capfd) -> None:
    """A zero-byte `manifest.json` made milvus-lite read `manifest.json.prev` (the collection one save before: here
    empty) with a log line nobody saw: `search` said "the library has no photos yet", exit 0."""
    base = _store(tmp_path, images_factory)
    manifests = sorted((tmp_path / "m.db" / "collections").glob("clipforge_m*/manifest.json"))
    assert len(manifests) == 1
    manifests[0].write_bytes(b"")
    _, out, err = _search(capfd, base)
    assert f"notice: milvus-lite store file {manifests[0]} cannot be read; the engine reads manifest.json.prev" in err
