"""What a folder scan leaves out or cannot show is said (audit 59: collector finding 5, Chinese finding 10).

iPhone HEIC photos vanished from folder walks without a word when pillow-heif is not installed (half of a phone
collection; `embed` showed 1/1); named, they failed "not an image" with no hint. GBK file names from a Windows
zip were indexed silently and shown half-decoded. Each is now one notice per scan, in `index add`, `embed` and
the indexing `search --in` does, naming the extension and what reads it, or the encoding and `convmv`.
"""

from __future__ import annotations

import json
import os
import sys
import types

import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.image import formats
from clipforge.library.scan import scan_paths

HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"  # the start of a real HEIC file (no reader here)
SKIPPED = ("notice: skipped 2 photos in a format this installation cannot read: 1 .heic file, 1 .heif file "
           "(`pip install pillow-heif` lets clipforge read them)")


def _phone_folder(folder) -> None:
    folder.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / "IMG_0001.JPG")
    (folder / "IMG_0002.HEIC").write_bytes(HEIC)
    (folder / "sub").mkdir()
    (folder / "sub" / "IMG_0003.heif").write_bytes(HEIC)
    (folder / ".IMG_0004.heic").write_bytes(HEIC)  # hidden: skipped as every hidden file is, not counted


@pytest.fixture()
def no_heif(monkeypatch):
    """This installation without a HEIF reader, whatever is installed (the suite must not depend on it)."""
    monkeypatch.setattr(formats.IMAGE_EXTENSIONS, "_extensions",
                        frozenset(formats.IMAGE_EXTENSIONS) - {".heic", ".heif", ".hif"}, raising=False)


def test_photos_this_installation_cannot_read_are_counted_and_said(tmp_path, no_heif, capsys) -> None:
    _phone_folder(tmp_path / "iphone")
    lib = ["--library", str(tmp_path / "lib"), "--workers", "0"]
    assert main(["index", "add", str(tmp_path / "iphone"), *lib, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["added"] == 1
    assert SKIPPED in err.splitlines(), err
    # named outright, it is tried (it may be misnamed) and fails; the notice says what would read it
    assert main(["index", "add", str(tmp_path / "iphone" / "IMG_0002.HEIC"), *lib]) == 2  # its one file failed (audit 66)
    out, err = capsys.readouterr()
    assert ("notice: 1 photo named is in a format this installation cannot read (tried anyway): 1 .heic file "
            "(`pip install pillow-heif` lets clipforge read them)") in err.splitlines()
    assert "failed 1: a HEIC/HEIF photo (1);" in out  # named by its bytes since audit 64 (was "not an image")
    assert main(["embed", str(tmp_path / "iphone"), "--out", str(tmp_path / "emb"), "--workers", "0", "--json"]) == 0
    assert capsys.readouterr().err.count("skipped 2 photos in a format this installation cannot read") == 1
    # a folder of HEIC only: embed's refusal comes with the reason
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.heic").write_bytes(HEIC)
    assert main(["embed", str(tmp_path / "only"), "--out", str(tmp_path / "emb2")]) == 2
    assert "skipped 1 photo in a format this installation cannot read: 1 .heic file" in capsys.readouterr().err


def test_search_in_says_it_when_it_indexes_and_quiet_hides_it(tmp_path, no_heif, capsys) -> None:
    _phone_folder(tmp_path / "iphone")
    lib = ["--library", str(tmp_path / "lib")]
    assert main(["search", "a photo", "--in", str(tmp_path / "iphone"), "--paths", *lib]) == 0
    assert SKIPPED in capsys.readouterr().err.splitlines()
    assert main(["search", "a photo", "--in", str(tmp_path / "iphone"), "--paths", *lib]) == 0
    assert capsys.readouterr().err == ""  # nothing indexed: no summary, no notice at every search
    assert main(["index", "add", str(tmp_path / "iphone"), *lib, "-q"]) == 0
    assert "notice" not in capsys.readouterr().err


def test_a_heif_reader_that_imports_is_registered(monkeypatch) -> None:
    """pillow-heif, when importable, is registered: its photos are then walked like any other."""
    registered: list[bool] = []
    fake = types.ModuleType("pillow_heif")
    fake.register_heif_opener = lambda: registered.append(True)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pillow_heif", fake)
    assert "pillow_heif" in formats._register_optional_plugins() and registered == [True]


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses names that are not UTF-8")
def test_names_that_are_not_utf8_are_counted_and_their_encoding_guessed(tmp_path, images_factory, capsys) -> None:
    folder = tmp_path / "zip"
    photos = images_factory(folder, 3, formats=("png",))
    raw = os.fsencode(folder)
    os.rename(photos[0], raw + b"/" + "风景照片".encode("gbk") + b".png")
    os.rename(photos[1], raw + b"/" + "青蛙".encode("gbk") + b".png")
    lib = ["--library", str(tmp_path / "lib"), "--workers", "0"]
    assert main(["index", "add", str(folder), *lib, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["added"] == 3  # indexed all the same
    name = "风景照片".encode("gbk") + b".png"  # the first of the two, by bytes
    shown = (raw + b"/" + name).decode("utf-8", "backslashreplace")  # as `display_path` shows it: \xb7羰\xd5\xd5Ƭ
    assert (f"notice: 2 file names are not UTF-8 (indexed all the same; shown with \\xNN escapes, e.g. {shown}; JSON "
            "writes them as b64:...): perhaps a zip made on Windows (`unzip -O GBK` unpacks one with the right "
            f"names); read as GBK, {name.decode('utf-8', 'backslashreplace')} is 风景照片.png; `convmv -f gbk -t "
            f"utf-8 -r --notest {folder}` renames them") in err.splitlines()
    assert main(["embed", str(folder), "--out", str(tmp_path / "emb"), "--workers", "0", "--json"]) == 0
    assert capsys.readouterr().err.count("2 file names are not UTF-8") == 1
    latin = tmp_path / "old"
    photo, = images_factory(latin, 1, formats=("png",))
    os.rename(photo, os.fsencode(latin) + b"/caf\xe9.png")
    found = scan_paths([latin], recursive=True, notify=False)
    assert len(found.not_utf8) == 1
    with pytest.warns(UserWarning, match=r"read as LATIN1, caf\\xe9.png is café.png; `convmv -f latin1 -t utf-8"):
        scan_paths([latin], recursive=True)


def test_a_name_holding_terminal_codes_stays_one_inert_line(tmp_path, images_factory, capsys) -> None:
    """Review: a GBK name holding ESC[31m and a newline split the notice over three lines and coloured the
    terminal; control characters are written as their escapes."""
    folder = tmp_path / "photos"
    photo = images_factory(folder, 1, formats=("png",))[0]
    os.rename(photo, os.path.join(os.fsencode(folder), "风景".encode("gbk") + b"\x1b[31m\n.png"))
    assert main(["index", "add", str(folder), "--library", str(tmp_path / "lib"), "--workers", "0"]) == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "not UTF-8" in line)
    assert "\x1b" not in err and "\\x1b[31m\\n.png" in line
    assert "read as GBK" in line and "风景\\x1b[31m\\n.png" in line, line
