"""A file in a photo folder is opened by the photo formats' openers only (`formats.PHOTO_FORMATS`).

Pillow identifies a file by its bytes and tried every opener it has: a hostile `holiday.jpg` in a folder
given to `index add` (or any dataset) could be SGI, PCX, IM, QOI, DDS, SPIDER, FITS, PSD... and was decoded
as that, some in Python. Now such a file is "not an image" as any other file, and every photo format
still loads, the ones Pillow registers only after importing all its plugins included.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from clipforge.image import ImageLoadError, load_image

_OTHERS = {"SGI": "RGB", "PCX": "RGB", "IM": "RGB", "QOI": "RGB", "DDS": "RGB", "SPIDER": "F", "XBM": "1", "MSP": "1"}


def _encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (24, 16)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 7 if mode in ("1", "F") else (200, 40, 90)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", sorted(_OTHERS))
def test_a_file_of_another_format_named_like_a_photo_is_not_an_image(fmt, tmp_path):
    data = _encoded(fmt, _OTHERS[fmt])
    with Image.open(io.BytesIO(data)) as opened:  # what Pillow alone does with it (the old behaviour)
        assert opened.format == fmt
    path = tmp_path / "holiday.jpg"
    path.write_bytes(data)
    for source in (path, data):
        with pytest.raises(ImageLoadError, match=r"not an image \(unrecognised or unsupported format\)$"):
            load_image(source)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "PPM", "ICO", "JPEG2000", "AVIF", "TGA"])
def test_every_photo_format_loads_by_its_bytes_whatever_the_name(fmt, tmp_path):
    from clipforge.image.formats import PHOTO_FORMATS, photo_formats

    Image.init()
    if fmt not in Image.SAVE:
        pytest.skip(f"this Pillow cannot write {fmt}")
    path = tmp_path / "named-wrongly.png"
    size = (16, 16) if fmt == "ICO" else (20, 12)  # Pillow reads square icons only
    path.write_bytes(_encoded(fmt, size=size))
    image = load_image(path)
    assert image.size == size and image.mode == "RGB"
    assert fmt in photo_formats() and fmt in PHOTO_FORMATS


def test_index_add_counts_such_a_file_as_failed_with_the_reason(tmp_path):
    from clipforge.library import Library, resolve_encoder

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "real.png").write_bytes(_encoded("PNG"))
    (photos / "holiday.jpg").write_bytes(_encoded("SGI"))
    with Library(tmp_path / "lib", resolve_encoder("test-vit-tiny")) as library:
        report = library.add(photos, workers=0, progress=False)
        assert (report.added, report.failed) == (1, 1)
        failed = library.list_images(status="failed")
    assert [r.path.endswith("holiday.jpg") for r in failed] == [True]
    assert "not an image (unrecognised or unsupported format" in failed[0].error
