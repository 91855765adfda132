"""File names Linux allows but Milvus filter expressions did not: the milvus-lite store answers as the embedded
store does for a name with a line break (a whole `index add` of its folder failed: "unterminated string
literal"), a name that is not UTF-8 in a searched folder (`search --in` missed it) and a folder that is not
UTF-8 (`index remove`, `search --in`: "surrogates not allowed"). One store and one embedded library, built once
for the module from the same folder (milvus-lite start-up is the cost)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.cli.main import main  # noqa: E402
from clipforge.library import Library  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402
from tests.library.conftest import write_images  # noqa: E402

NEWLINE = "new\nline.png"
RETURN = "carriage\rreturn.png"
NOT_UTF8 = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
NOT_UTF8_DIR = os.fsdecode(b"d\xfe\xffir")


def _folder(root: Path) -> Path:
    """root/n: names with a newline and a carriage return, a not-an-image with a newline in its name;
    root/u: a plain name and one that is not UTF-8; root/q/gone\\n.png (removed by a test); root/<not UTF-8>/x.png."""
    made = write_images(root / "src", 6)
    for folder, names in (
        ("n", [NEWLINE, RETURN]),
        ("u", ["plain.png", NOT_UTF8]),
        ("q", ["gone\n.png"]),
        (NOT_UTF8_DIR, ["x.png"]),
    ):
        (root / folder).mkdir()
        for name in names:
            shutil.copyfile(made.pop(), root / folder / name)
    (root / "n" / "bad\nnotes.jpg").write_text("not an image\n")
    shutil.rmtree(root / "src")
    return root


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_encoder):
    """(embedded library, milvus-lite library, each one's add report (or error) per folder, the photos' root),
    built once; an add that fails is kept as its exception so that each folder's test says its own defect."""
    root = _folder(tmp_path_factory.mktemp("names"))
    embedded = Library(root / "lib", tiny_encoder)
    milvus = MilvusLibrary(f"milvus-lite:{root}/m.db", root / "mlib", tiny_encoder)
    reports: list[dict] = [{}, {}]
    for library, report in zip((embedded, milvus), reports, strict=True):
        for folder in ("n", "u", "q", NOT_UTF8_DIR):
            try:
                report[folder] = library.add(root / folder, workers=0, progress=False)
            except Exception as exc:  # noqa: BLE001 - asserted by the folder's test
                report[folder] = exc
    yield embedded, milvus, reports, root
    milvus.close()
    embedded.close()


def _counts(report) -> tuple:
    assert not isinstance(report, Exception), report
    return report.added, report.embedded, report.failed, sorted(report.failures)


def test_names_with_line_breaks_are_added_as_the_embedded_store_adds_them(stores) -> None:
    embedded, milvus, (a, b), root = stores
    assert _counts(b["n"]) == _counts(a["n"])
    assert (b["n"].added, b["n"].failed) == (2, 1)
    assert [(Path(path).name, reason.split(" (")[0]) for path, reason in b["n"].failures] == [
        ("bad\nnotes.jpg", "not an image")
    ]
    again = milvus.add(root / "n", workers=0, progress=False)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3)
    assert {Path(h.path).name for h in milvus.search("a photo", top_k=50, under=root / "n")} == {
        NEWLINE,
        RETURN,
    }


def test_search_in_a_folder_finds_a_name_that_is_not_utf8(stores) -> None:
    embedded, milvus, (a, b), root = stores
    assert _counts(b["u"]) == _counts(a["u"])
    for library in (embedded, milvus):
        found = library.search("a photo", top_k=50, under=root / "u")
        assert {Path(h.path).name for h in found} == {"plain.png", NOT_UTF8}, library


def test_a_folder_that_is_not_utf8_is_searched_and_removed(stores) -> None:
    embedded, milvus, (a, b), root = stores
    assert _counts(b[NOT_UTF8_DIR]) == _counts(a[NOT_UTF8_DIR])
    folder = root / NOT_UTF8_DIR
    for library in (embedded, milvus):
        assert [h.path for h in library.search("a photo", top_k=50, under=folder)] == [str(folder / "x.png")]
    assert milvus.remove(folder) == embedded.remove(folder) == 1
    for library in (embedded, milvus):
        assert library.search("a photo", top_k=50, under=folder) == []


def test_index_remove_of_a_name_with_a_line_break(stores, capsys) -> None:
    _, milvus, _, root = stores
    gone = str(root / "q" / "gone\n.png")
    store = ["--store", f"milvus-lite:{root}/m.db", "--library", str(root / "mlib")]
    assert main(["index", "remove", gone, *store]) == 0
    assert capsys.readouterr().out.strip() == "removed 1 image"
    assert milvus.get_path(gone) is None and milvus.get_path(str(root / "n" / NEWLINE)) is not None
