"""Files crafted to cost minutes to decode or seconds to parse are refused from their structure, wherever
images are read (`clipforge.image.costly`).

*Scans*: each scan of a progressive JPEG walks every block of the picture, and an end-of-band run codes up
to 32,767 empty blocks in a few bits, so a scan over a 16-megapixel grey picture is ~31 bytes: a 187 KB
file of 4,000 such scans took 4.4 s to decode (draft or not; measured here), a 20 MB one would take
minutes of a core, for one anonymous `/api/search` (libjpeg-turbo's LJT-01-003; decoders such as NVIDIA
DALI cap the scans). *Segments*: 4-byte comment segments are parsed one by one by Pillow in Python and again
by libjpeg (4 MB of them: 1.6 s). GIF: Pillow walks blocks in Python and joins comments quadratically (a
5 MB GIF of a million 1-byte comments: 22 s to open). PNG: Pillow reads every chunk in Python (12 MB of a
million empty chunks: 2.5 s). `load_image` and every reader built on it walk the structure first.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from clipforge.image import ImageLoadError, load_image
from clipforge.image.costly import refusal, source_refusal
from clipforge.image.costly.jpeg import MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS, count_markers


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
    baseline = _baseline()
    repeated = baseline[:-2] + baseline[baseline.index(b"\xff\xda"):-2] * 500 + baseline[-2:]
    assert count_markers(repeated).scans == 1  # a sequential file ends at its first scan (libjpeg refuses more)
    with pytest.raises(ImageLoadError):
        load_image(repeated)
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


class _Pipe(io.RawIOBase):
    """A stream that cannot seek (a pipe, a socket): read whole first, then checked like any other."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer) -> int:
        chunk = self._data.read(len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def test_a_stream_that_cannot_seek_is_checked_too(progressive_jpeg):
    with pytest.raises(ImageLoadError, match=f"JPEG with more than {MAX_JPEG_SCANS} scans"):
        load_image(io.BufferedReader(_Pipe(progressive_jpeg(512, extra_scans=2 * MAX_JPEG_SCANS))))
    assert load_image(io.BufferedReader(_Pipe(_baseline()))).size == (64, 64)


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


def _gif(extension_blocks: bytes = b"", side: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (side, side)).save(buffer, "GIF")
    data = buffer.getvalue()
    at = data.index(b",")  # the image descriptor
    return data[:at] + extension_blocks + data[at:]


def _png(extra_chunks: int = 0) -> bytes:
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buffer, "PNG")
    data = buffer.getvalue()
    at = data.index(b"IDAT") - 4
    empty = struct.pack(">I", 0) + b"abCd" + struct.pack(">I", zlib.crc32(b"abCd"))
    return data[:at] + empty * extra_chunks + data[at:]


@pytest.mark.parametrize(("name", "crafted", "why"), [
    ("gif comments", lambda: _gif(b"\x21\xfe\x01x\x00" * 20_000), "extension blocks"),
    ("gif sub-blocks", lambda: _gif(b"\x21\xfe" + b"\x01x" * 20_000 + b"\x00"), "short data blocks"),
    ("gif long comments", lambda: _gif((b"\x21\xfe" + b"\xff" + b"c" * 255 + b"\x00") * 300), "bytes of comments"),
    ("gif junk", lambda: _gif(b"\x00" * 100_000), "bytes between its blocks"),
    ("png chunks", lambda: _png(70_000), "chunks"),
])
def test_crafted_gifs_and_pngs_are_refused_before_pillow_parses_them(name, crafted, why, monkeypatch):
    from PIL import GifImagePlugin, PngImagePlugin

    data = crafted()
    parsed: list[str] = []
    for plugin in (GifImagePlugin.GifImageFile, PngImagePlugin.PngImageFile):
        monkeypatch.setattr(plugin, "_open", lambda self: parsed.append(name) or 1 / 0)
    assert why in refusal(data)
    with pytest.raises(ImageLoadError, match=why):
        load_image(data)
    assert not parsed


def test_ordinary_gifs_and_pngs_still_load():
    frames = [Image.new("P", (64, 48), i) for i in range(5)]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:], comment=b"x" * 3000, loop=0)
    assert refusal(animated.getvalue()) is None and load_image(animated.getvalue()).size == (64, 48)
    noisy = Image.effect_noise((600, 400), 80).convert("P")  # image data in full 255-byte sub-blocks
    big = io.BytesIO()
    noisy.save(big, "GIF")
    assert len(big.getvalue()) > 100_000 and refusal(big.getvalue()) is None
    assert refusal(_gif(b"\x21\xfe\x01x\x00" * 9_000)) is None  # under the limit: still an image
    assert load_image(_gif(b"\x21\xfe\x01x\x00" * 9_000)).size == (8, 8)
    assert refusal(_png(60_000)) is None and load_image(_png(60_000)).size == (8, 8)
    apng = io.BytesIO()
    Image.new("RGB", (32, 32)).save(apng, "PNG", save_all=True,
                                    append_images=[Image.new("RGB", (32, 32), (i, 0, 0)) for i in range(30)])
    assert refusal(apng.getvalue()) is None and load_image(apng.getvalue()).size == (32, 32)
