"""Camera RAW files a folder walk passes over are counted and said once (audit 64, phone finding 4).

A card or a ProRAW export holding only .DNG/.CR2/.NEF files indexed nothing and said only "no image files in X":
nothing told the user that RAW files were there, skipped, and what to do. Walks still leave RAW files out (they
are the negatives beside the JPEGs a camera saves; clipforge does not start decoding them) and they are not
failures, but the scan's notice counts them, in the style of its notice for .heic without pillow-heif.
"""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.image import formats
from clipforge.library.scan import scan_paths
from clipforge.library.scan_notices import UnreadablePhotosNotice

HINT = "clipforge reads the JPEG/HEIC a camera saves beside them; export RAW-only shots to JPEG"
RAW_ONLY = f"notice: skipped 3 camera RAW files (.cr2, .dng, .nef): {HINT}"
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"


def _tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 20, 200)).save(buffer, format="TIFF")
    return buffer.getvalue()


def _raw_card(folder) -> None:
    """A camera card of RAW files only (a DNG is a TIFF, as Adobe's are), plus an AppleDouble twin (hidden)."""
    (folder / "100CANON").mkdir(parents=True)
    (folder / "IMG_0007.DNG").write_bytes(_tiff())
    (folder / "100CANON" / "IMG_0008.CR2").write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(200))
    (folder / "DSC_0009.nef").write_bytes(b"MM\x00*" + bytes(200))
    (folder / "._IMG_0007.DNG").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # hidden: never counted


@pytest.fixture()
def no_heif(monkeypatch):
    monkeypatch.setattr(formats.IMAGE_EXTENSIONS, "_extensions",
                        frozenset(formats.IMAGE_EXTENSIONS) - {".heic", ".heif", ".hif"}, raising=False)


def test_a_walk_counts_the_raw_files_it_passes_over(tmp_path) -> None:
    _raw_card(tmp_path / "card")
    with pytest.warns(UnreadablePhotosNotice) as said:
        found = scan_paths([tmp_path / "card"], recursive=True)
    assert [str(w.message) for w in said] == [RAW_ONLY.removeprefix("notice: ")]
    assert found.files == [] and found.rejected == []
    assert dict(found.unreadable) == {".cr2": 1, ".dng": 1, ".nef": 1}
    with pytest.warns(UnreadablePhotosNotice, match=r"^skipped 2 camera RAW files \(\.dng, \.nef\): clipforge "):
        assert scan_paths([tmp_path / "card"], recursive=False).files == []  # top level: the DNG and the NEF


def test_index_add_embed_and_classify_say_it_once(tmp_path, capsys) -> None:
    _raw_card(tmp_path / "card")
    card = str(tmp_path / "card")
    assert main(["index", "add", card, "-r", "--library", str(tmp_path / "lib"), "--model", "clipforge-tiny",
                 "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert (report["added"], report["failed"]) == (0, 0)  # not failures
    assert err.splitlines().count(RAW_ONLY) == 1, err
    assert main(["embed", card, "-r", "--out", str(tmp_path / "emb"), "--model", "clipforge-tiny"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err.count(RAW_ONLY) == 1 and err[-1].startswith(f"error: no image files in {card} "), err
    assert main(["classify", card, "--labels", "cat,dog", "--model", "clipforge-tiny"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [RAW_ONLY, f"error: folder {card} holds no image files"]


def test_raw_beside_heic_and_jpeg_is_one_notice(tmp_path, no_heif, capsys) -> None:
    folder = tmp_path / "DCIM"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / "IMG_0001.JPG")
    (folder / "IMG_0003.CR3").write_bytes(b"\x00\x00\x00\x18ftypcrx " + bytes(100))  # a RAW-only shot
    (folder / "IMG_0002.HEIC").write_bytes(HEIC)
    assert main(["index", "add", str(folder), "--library", str(tmp_path / "lib"), "--model", "clipforge-tiny",
                 "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["added"] == 1
    notices = [line for line in err.splitlines() if line.startswith("notice:")]
    assert notices == [
        "notice: skipped 1 photo in a format this installation cannot read: 1 .heic file (`pip install pillow-heif` "
        f"lets clipforge read them); and skipped 1 camera RAW file (.cr3): {HINT}"], err


def test_a_raw_file_named_outright_is_still_read_as_before(tmp_path, capsys) -> None:
    """Named, a DNG is read as today (Pillow's TIFF reader: often the small preview of a real DNG); the notice
    says RAW files are tried anyway, as it says for a named .heic."""
    dng = tmp_path / "IMG_0007.DNG"
    dng.write_bytes(_tiff())
    assert main(["index", "add", str(dng), "--library", str(tmp_path / "lib"), "--model", "clipforge-tiny",
                 "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["added"] == 1
    assert f"notice: 1 camera RAW file named (.dng) is tried anyway: {HINT}" in err.splitlines(), err


def test_raw_files_shot_beside_a_jpeg_are_not_said(tmp_path, capsys) -> None:
    """A card shot RAW+JPEG: every shot is indexed by its JPEG, so nothing is said of the RAW twins (the notice's
    "export RAW-only shots to JPEG" came on every run); only a RAW file without a photo of its name counts."""
    folder = tmp_path / "DCIM"
    folder.mkdir()
    for stem in ("IMG_0001", "img_0002"):
        Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / f"{stem}.JPG")
    (folder / "IMG_0001.CR2").write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(200))
    (folder / "IMG_0002.CR2").write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(200))  # case differs
    (folder / "IMG_0003.CR2").write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(200))  # RAW only
    assert main(["index", "add", str(folder), "--library", str(tmp_path / "lib"), "--model", "clipforge-tiny",
                 "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["added"] == 2
    assert [line for line in err.splitlines() if line.startswith("notice:")] == [
        f"notice: skipped 1 camera RAW file (.cr2): {HINT}"], err
