"""Lossless WebP streams crafted to cost far more memory than their pixels are refused before libwebp reads them.

libwebp allocates the prefix-code tables of every group a VP8L stream's prefix-code image names, up front
(~5.7 KB a group, at most 65,536 groups): measured here, a 295 KB lossless WebP of a 1024 x 1024 picture took
373 MB of peak memory and 0.7-1.8 s to load (a normal 1-megapixel WebP: ~16 MB), and the same stream as a lossy
WebP's alpha plane, or as an animation's first frame, 374 and 372 MB. libwebp's encoder writes at most 2,600
groups; `clipforge.image.costly.vp8l` counts them first and refuses more than 4,096. A decoded WebP no longer
keeps libwebp's two canvases alive with the image it returns (13 bytes a pixel held -> 4, as a JPEG).
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from clipforge.image import ImageLoadError, load_image
from clipforge.image.costly import refusal
from tests.image import webp_craft as craft
from tests.image.peak_memory import load_peak

_GROUPS = "groups of prefix codes, more than 4,096"


def test_a_webp_naming_65536_code_groups_costs_little_memory(tmp_path):
    path = tmp_path / "groups.webp"
    path.write_bytes(craft.lossless_webp(craft.groups_stream(256)))  # 1024 x 1024, 295 KB
    assert path.stat().st_size < 300_000
    result = load_peak(path)
    assert _GROUPS in result["outcome"]
    assert result["mb"] < 64, result  # 373 MB when libwebp built the tables


@pytest.mark.parametrize("kind", ["lossless", "alpha plane", "first frame"])
def test_a_crafted_webp_is_refused_naming_the_file_and_the_reason(kind, tmp_path):
    data = {
        "lossless": lambda: craft.lossless_webp(craft.groups_stream(128)),
        "alpha plane": lambda: craft.alpha_webp(128),
        "first frame": lambda: craft.animated_webp(craft.chunk(b"VP8L", craft.groups_stream(128)), 3, 512),
    }[kind]()
    path = tmp_path / "evil.webp"
    path.write_bytes(data)
    with pytest.raises(ImageLoadError, match="16,384 " + _GROUPS) as info:
        load_image(path)
    assert "evil.webp" in str(info.value)
    assert ("alpha plane" in info.value.reason) == (kind == "alpha plane")
    assert refusal(data) == info.value.reason  # the server's header check says the same


def test_a_stream_too_fine_to_walk_cheaply_is_refused():
    data = craft.lossless_webp(craft.fine_predictor_stream(2048))  # 262,144 predictor pixels, 1 bit each
    assert len(data) < 40_000
    with pytest.raises(ImageLoadError, match=r"more than 131,072 steps to read"):
        load_image(data)
    small = craft.lossless_webp(craft.fine_predictor_stream(256))  # within the walk's budget: decoded
    assert load_image(small).size == (256, 256)


@pytest.mark.parametrize("options", [
    {"lossless": True, "method": 0}, {"lossless": True, "method": 4}, {"lossless": True, "method": 6},
    {"lossless": True, "method": 6, "palette": True}, {"lossless": True, "alpha": True},
    {"quality": 80, "alpha": True}, {"quality": 80},
])
def test_encoded_webps_are_walked_and_load_as_pillow_decodes_them(options):
    options = dict(options)
    size = (640, 480)
    picture = Image.radial_gradient("L").resize(size).convert("RGB")
    picture = Image.merge("RGB", (picture.getchannel(0), picture.getchannel(0).rotate(90), picture.getchannel(0)))
    if options.pop("palette", False):
        picture = picture.quantize(12).convert("RGB")
    if options.pop("alpha", False):
        picture = picture.convert("RGBA")
        picture.putalpha(Image.linear_gradient("L").resize(size))
    buffer = io.BytesIO()
    picture.save(buffer, "WEBP", **options)
    data = buffer.getvalue()
    assert refusal(data) is None
    if data[12:16] == b"VP8L":
        from clipforge.image.costly import vp8l
        from clipforge.image.costly.prefix_codes import BitReader

        walk = vp8l._Walk(BitReader(data[20:], position=40), 10**9)  # past the signature and the size
        assert 1 <= walk.groups(*size) <= 2600  # what libwebp's encoder writes
    with Image.open(io.BytesIO(data)) as reference:
        expected = reference.convert("RGB").tobytes()
    assert load_image(data).tobytes() == expected


def test_a_decoded_webp_does_not_hold_libwebps_canvases():
    buffer = io.BytesIO()
    Image.new("RGB", (1000, 1000), (10, 20, 30)).save(buffer, "WEBP", lossless=True)
    image = load_image(buffer.getvalue())
    assert not hasattr(image, "_decoder")  # a copy: the decoder (and its two canvases) went with the file
    assert image.getpixel((500, 500)) == (10, 20, 30)
