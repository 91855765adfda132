"""JPEGs crafted to cost minutes to decode or seconds to parse are refused from their markers, wherever
images are read.

*Scans*: each scan of a progressive JPEG walks every block of the picture, and an end-of-band run codes up
to 32,767 empty blocks in a few bits, so a scan over a 16-megapixel grey picture is ~31 bytes: a 187 KB
file of 4,000 such scans took 4.4 s to decode (draft or not; measured here), a 20 MB one would take
minutes of a core, for one anonymous `/api/search` (libjpeg-turbo's LJT-01-003; decoders such as NVIDIA
DALI cap the scans). *Segments*: 4-byte comment segments are parsed one by one by Pillow in Python and again
by libjpeg (4 MB of them: 1.6 s). `load_image` and every reader built on it count both first.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from clipforge.image import ImageLoadError, load_image
from clipforge.image.jpeg_markers import (
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    count_markers,
    refusal,
    source_refusal,
)


def _baseline(side: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (1, 2, 3)).save(buffer, "JPEG")
    return buffer.getvalue()


def _comments(count: int) -> bytes:
    """A small baseline JPEG with `count` empty comment segments after SOI."""
    data = _baseline()
    return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]


def test_the_count_reads_the_marker_structure(progressive_jpeg):
    plain = progressive_jpeg()
    assert count_markers(plain).scans == 6  # libjpeg's default progressive script for one component
    assert count_markers(progressive_jpeg(extra_scans=7)).scans == 6 + 7
    # marker bytes inside another segment (an EXIF thumbnail, an ICC profile) are not scans
    embedded = progressive_jpeg(app_payload=b"\xff\xda\x00\x08\xff\xfe\x00\x02" * 500)
    assert count_markers(embedded).scans == 6
    assert count_markers(embedded).segments == count_markers(plain).segments + 1
    assert count_markers(_baseline()).scans == 1
    assert count_markers(_comments(30)).segments == count_markers(_baseline()).segments + 30
    assert count_markers(b"\xff\xd8\xff\xda").scans == 1  # cut short: counted as far as it goes, nothing raised
    assert count_markers(progressive_jpeg(extra_scans=500), max_scans=10).scans == 11  # stops past the limit
    assert refusal(plain) is None and refusal(b"\x89PNG\r\n\x1a\n") is None
    stream = io.BytesIO(_comments(3 * MAX_JPEG_SEGMENTS))
    stream.seek(5)
    assert "marker segments" in source_refusal(stream) and stream.tell() == 5  # read whole, position kept


@pytest.mark.parametrize("kind", ["scans", "segments"])
def test_a_crafted_jpeg_is_refused_before_pillow_reads_it(kind, progressive_jpeg, tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    evil = progressive_jpeg(1024, extra_scans=3 * MAX_JPEG_SCANS) if kind == "scans" \
        else _comments(3 * MAX_JPEG_SEGMENTS)
    assert len(evil) < 64_000
    (tmp_path / "evil.jpg").write_bytes(evil)
    parsed: list[int] = []
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "_open", lambda self: parsed.append(1) or 1 / 0)
    limit = MAX_JPEG_SCANS if kind == "scans" else MAX_JPEG_SEGMENTS
    for source in (evil, str(tmp_path / "evil.jpg"), io.BytesIO(evil)):
        with pytest.raises(ImageLoadError, match=f"JPEG with more than {limit} ") as info:
            load_image(source, draft_size=224)
        assert "evil.jpg" in str(info.value) or not isinstance(source, str)
    assert not parsed  # refused from the markers: Pillow never parsed it


def test_ordinary_jpegs_still_load(progressive_jpeg):
    at_limit = progressive_jpeg(64, extra_scans=MAX_JPEG_SCANS - 6)
    assert count_markers(at_limit).scans == MAX_JPEG_SCANS
    assert load_image(at_limit).size == (64, 64)
    many = _comments(MAX_JPEG_SEGMENTS - count_markers(_baseline()).segments)
    assert count_markers(many).segments == MAX_JPEG_SEGMENTS and load_image(many).size == (64, 64)
    assert load_image(progressive_jpeg(64, app_payload=b"\xff\xda" * 300)).size == (64, 64)
    photo = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").save(photo, "JPEG", progressive=True, optimize=True)
    assert load_image(io.BytesIO(photo.getvalue())).size == (256, 256)


def test_index_add_counts_it_as_a_bad_file_and_goes_on(progressive_jpeg, tmp_path, tiny_vit):
    from clipforge.image import build_preprocess
    from clipforge.library import Encoder, Library

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "scans.jpg").write_bytes(progressive_jpeg(512, extra_scans=2 * MAX_JPEG_SCANS))
    Image.new("RGB", (40, 30), (200, 20, 20)).save(photos / "red.png")
    with Library(tmp_path / "lib", Encoder(tiny_vit, build_preprocess(32), name="t")) as library:
        report = library.add(photos, workers=0, progress=False)
        assert (report.added, report.failed) == (1, 1)
        failed = library.list_images(status="failed")
        assert len(failed) == 1 and f"more than {MAX_JPEG_SCANS} scans" in failed[0].error
