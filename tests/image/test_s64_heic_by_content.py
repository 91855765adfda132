"""A HEIC/HEIF photo is named by its bytes wherever it is read (audit 64, phone finding 1).

The CLI's loader called an iPhone HEIC "not an image (unrecognised or unsupported format)" when its name did not
say .heic (IMG_0004.JPG holding HEIC bytes, as some export and transfer tools write it), and for
`search --image X.HEIC` and `classify X.HEIC`, with nothing to install; `index stats` then listed it as "not an
image" for good. The server named the same bytes by their ISO-BMFF brand (`iso_photo_format`) and said
`pip install pillow-heif`. That one function now lives in the image layer; the loader's failure reason, and so
every command's line and the library's recorded reason, says what the photo is and what reads it.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image, features

from clipforge.cli.main import main
from clipforge.image import ImageLoadError, load_image

HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)  # an iPhone HEIC's first box (no reader)
HEIC_REASON = ("a HEIC/HEIF photo (a phone camera's format), which this installation cannot read: "
               "`pip install pillow-heif` lets clipforge read them")


@pytest.fixture()
def no_heif(monkeypatch):
    """This installation without a HEIF opener, whatever is installed (the suite must not depend on it)."""
    monkeypatch.delitem(Image.OPEN, "HEIF", raising=False)


def _photo(path):
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    return path


def test_heic_bytes_under_a_jpg_name_are_named_by_their_brand(tmp_path, no_heif) -> None:
    path = tmp_path / "IMG_0004.JPG"
    path.write_bytes(HEIC)
    with pytest.raises(ImageLoadError) as caught:
        load_image(path)
    assert caught.value.reason == HEIC_REASON
    assert str(caught.value) == f"cannot load image {path}: {HEIC_REASON}"
    with pytest.raises(ImageLoadError) as caught:  # bytes and file objects alike
        load_image(io.BytesIO(HEIC))
    assert caught.value.reason == HEIC_REASON
    mov = b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  " + bytes(64)  # a Live Photo's video: the same box
    with pytest.raises(ImageLoadError) as caught:
        load_image(io.BytesIO(mov))
    assert caught.value.reason == "not an image (unrecognised or unsupported format)"


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow writes no AVIF to build the file from")
def test_an_avif_is_named_when_this_pillow_lacks_its_opener(monkeypatch) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(buffer, format="AVIF")
    monkeypatch.delitem(Image.OPEN, "AVIF")
    with pytest.raises(ImageLoadError) as caught:
        load_image(io.BytesIO(buffer.getvalue()))
    assert caught.value.reason == (
        "an AVIF photo (a phone camera's format), which this installation cannot read: a Pillow built with libavif "
        "(11.3 or later), or `pip install pillow-avif-plugin`, reads them")


def test_the_server_uses_the_image_layers_brand_check() -> None:
    from clipforge.image import formats
    from clipforge.server import uploads

    assert uploads.iso_photo_format is formats.iso_photo_format
    assert formats.iso_photo_format(HEIC) == "HEIF"


def test_index_add_records_the_photo_as_heic_and_says_what_reads_it(tmp_path, no_heif, capsys) -> None:
    folder = tmp_path / "DCIM"
    folder.mkdir()
    _photo(folder / "IMG_0001.JPG")
    (folder / "IMG_0004.JPG").write_bytes(HEIC)
    lib = ["--library", str(tmp_path / "lib")]
    assert main(["index", "add", str(folder), *lib, "--model", "clipforge-tiny", "--workers", "0"]) == 0
    out, err = capsys.readouterr()
    assert "failed 1: a HEIC/HEIF photo (1);" in out
    assert f"  failed: {folder / 'IMG_0004.JPG'}: {HEIC_REASON}" in err.splitlines()
    assert main(["index", "list", "--failed", *lib]) == 0
    assert HEIC_REASON in capsys.readouterr().out


def test_search_image_and_classify_name_a_heic_photo(tmp_path, no_heif, capsys) -> None:
    lib = ["--library", str(tmp_path / "lib")]
    assert main(["index", "add", str(_photo(tmp_path / "a.jpg")), *lib, "--model", "clipforge-tiny",
                 "--workers", "0", "-q"]) == 0
    heic = tmp_path / "IMG_0002.HEIC"
    heic.write_bytes(HEIC)
    capsys.readouterr()
    assert main(["search", "--image", str(heic), *lib]) == 2
    assert capsys.readouterr().err == f"error: {heic}: {HEIC_REASON}\n"
    assert main(["classify", str(heic), "--labels", "cat,dog", "--model", "clipforge-tiny", "--quiet"]) == 2
    assert f"skipped {heic}: {HEIC_REASON}" in capsys.readouterr().err.splitlines()
