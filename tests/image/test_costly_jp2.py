"""JPEG 2000 files whose headers ask OpenJPEG for gigabytes or seconds of set-up are refused from their structure
(`clipforge.image.costly.jp2`), before Pillow opens them.

Measured before the fix (Pillow 12.3, OpenJPEG 2.5.4): a 108-byte 1024x1024 codestream of 2x2 precincts took
2.7 s and 1.7 GB; 65,535 layers over 128x128 precincts of 1024x1024, 2.4 s from 109 bytes; 65,535 one-pixel
tiles, 760 MB from 1.1 MB; a 3 KB JP2 of 1,000 components in 4,096 tiles, 4.3 GB. The files here are the same
shapes made small, so that running these tests against the code before the fix stays cheap.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, Jpeg2KImagePlugin

from clipforge.image import ImageLoadError, load_image
from clipforge.image.costly import refusal, source_refusal
from tests.image.refused import assert_refused_everywhere

# the walk's bounds (`MAX_SEGMENTS`, `MAX_TILE_PARTS`, `MAX_BOXES`), written out so that this module imports
# (and its refusal tests fail, not error) against the code before `jp2` existed
MAX_SEGMENTS, MAX_TILE_PARTS, MAX_BOXES = 65_536, 65_536, 4096

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def _siz(width: int, height: int, tile: tuple[int, int] | None = None, components: int = 3) -> bytes:
    tile_w, tile_h = tile or (width, height)
    return _segment(0xFF51, struct.pack(">HIIIIIIIIH", 0, width, height, 0, 0, tile_w, tile_h, 0, 0, components)
                    + b"\x07\x01\x01" * components)


def _cod(levels: int = 5, block: tuple[int, int] = (6, 6), layers: int = 1, precincts: list[int] | None = None,
         components: int = 3) -> bytes:
    """A COD segment: LRCP, `layers` layers, the colour transform for 3 components, `levels` 5/3 wavelet levels,
    code-blocks of 2**block, and each resolution's precincts (low nibble: width exponent) when given."""
    body = struct.pack(">BBHB", 1 if precincts else 0, 0, layers, components == 3)
    body += bytes([levels, block[0] - 2, block[1] - 2, 0, 1]) + bytes(precincts or [])
    return _segment(0xFF52, body)


def _qcd(levels: int = 5) -> bytes:
    return _segment(0xFF5C, bytes([2 << 5]) + bytes([10 << 3]) * (1 + 3 * levels))


def _tile_part(index: int, header: bytes = b"", data: bytes = b"\0") -> bytes:
    """SOT, the tile-part's own header segments, SOD and `data` (one empty packet: OpenJPEG decodes the rest of
    the tile as empty)."""
    length = 12 + len(header) + 2 + len(data)
    return _segment(0xFF90, struct.pack(">HIBB", index, length, 0, 1)) + header + b"\xff\x93" + data


def _codestream(width: int, height: int, *, tile: tuple[int, int] | None = None, components: int = 3,
                levels: int = 5, main: bytes = b"", tiles: int = 1, tile_header: bytes = b"", **cod) -> bytes:
    head = b"\xff\x4f" + _siz(width, height, tile, components)
    head += _cod(levels, components=components, **cod) + _qcd(levels) + main
    return head + b"".join(_tile_part(index, tile_header) for index in range(tiles)) + b"\xff\xd9"


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _jp2(codestream: bytes, width: int, height: int, components: int = 3, before: bytes = b"") -> bytes:
    """A JP2 file around `codestream` whose image header says `width` x `height` and `components`."""
    ihdr = _box(b"ihdr", struct.pack(">IIHBBBB", height, width, components, 7, 7, 0, 0))
    colr = _box(b"colr", struct.pack(">BBBI", 1, 0, 0, 16 if components >= 3 else 17))
    return (_box(b"jP  ", b"\r\n\x87\n") + _box(b"ftyp", b"jp2 \0\0\0\0jp2 ") + before + _box(b"jp2h", ihdr + colr)
            + _box(b"jp2c", codestream))


def _encoded(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG2000", **params)
    return buffer.getvalue()


# name -> (file, start of the refusal); each is a valid codestream OpenJPEG decodes (or sets up, then fails)
CRAFTED = {
    # 2x2 precincts make every code-block 1x1: 262,080 blocks and ~110 MB for 65,536 pixels
    "precincts-2x2": (_codestream(256, 256, precincts=[0x11] * 6), "JPEG 2000 codestream laid out in"),
    # code-blocks of 4x4 (the least the standard allows), 1 MB of structures per 16 KB of samples
    "code-blocks-4x4": (_codestream(1024, 1024, block=(2, 2)), "JPEG 2000 codestream laid out in"),
    # 65,535 layers over 40 precincts: 2.6 million packets, walked with no data
    "layers": (_codestream(256, 160, components=1, levels=0, layers=65535, precincts=[0x55]),
               "JPEG 2000 codestream of 2,621,400 packets"),
    # 4,096 tiles of one pixel: ~12 KB of set-up each
    "tiles": (_codestream(64, 64, tile=(1, 1), components=1, levels=0, tiles=4096),
              "JPEG 2000 codestream of 4,096 tiles of 1x1 pixels"),
    # the tiny precincts hidden in a tile-part header, after an honest main header
    "tile-part-cod": (_codestream(256, 256, tile_header=_cod(precincts=[0x11] * 6)),
                      "JPEG 2000 codestream laid out in"),
    # a JP2 whose header says 3 components and whose codestream says 5 (OpenJPEG sets them up per tile)
    "jp2-components": (_jp2(_codestream(64, 64, components=5, levels=0), 64, 64),
                       "JPEG 2000 codestream with 5 components"),
    "jp2-precincts": (_jp2(_codestream(256, 256, precincts=[0x11] * 6), 256, 256), "JPEG 2000 codestream laid out in"),
    # the tiny precincts inside an unknown segment: OpenJPEG ignores its length and reads on two bytes at a time
    "unknown-segment": (_codestream(256, 256, main=_segment(0xFF6F, b"\0\0" + _cod(precincts=[0x11] * 6))),
                        "JPEG 2000 codestream laid out in"),
    "segments": (_codestream(16, 16, components=1, levels=0, main=_segment(0xFF64, b"\0\1") * (MAX_SEGMENTS + 1)),
                 f"JPEG 2000 file with more than {MAX_SEGMENTS:,} header segments"),
    "tile-parts": (_codestream(16, 16, components=1, levels=0) [:-2]
                   + _tile_part(0, data=b"") * MAX_TILE_PARTS + b"\xff\xd9",
                   f"JPEG 2000 file with more than {MAX_TILE_PARTS:,} tile-parts"),
    "jp2-boxes": (_jp2(_codestream(16, 16, components=1, levels=0), 16, 16, 1,
                       before=_box(b"free", b"") * MAX_BOXES), "JP2 file with more than 4,096 boxes"),
}


@pytest.fixture()
def pillow_opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    original = Jpeg2KImagePlugin.Jpeg2KImageFile._open
    monkeypatch.setattr(Jpeg2KImagePlugin.Jpeg2KImageFile, "_open", lambda self: opened.append("open") or original(self))
    return opened


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_a_crafted_jpeg2000_is_refused_before_pillow_opens_it(name, tmp_path, pillow_opened):
    crafted, why = CRAFTED[name]
    assert len(crafted) < 2_000_000
    assert_refused_everywhere(crafted, why, tmp_path / f"evil-{name}.jp2")
    assert not pillow_opened, pillow_opened


def test_the_refusal_names_the_file(tmp_path):
    path = tmp_path / "photo.jp2"
    path.write_bytes(CRAFTED["precincts-2x2"][0])
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.path == str(path) and str(path) in str(info.value)
    assert "more than one per 24 samples" in info.value.reason


def test_the_layout_counts_what_openjpeg_sets_up():
    """Blocks are code-blocks plus half a block per precinct of each band; OpenJPEG's rule that a code-block is no
    larger than its band's precinct (half the resolution's) makes 2x2 precincts code-blocks of 1x1."""
    from clipforge.image.costly import jp2

    assert (jp2.MAX_SEGMENTS, jp2.MAX_TILE_PARTS, jp2.MAX_BOXES) == (MAX_SEGMENTS, MAX_TILE_PARTS, MAX_BOXES)
    plain = jp2.layout(_codestream(1024, 1024))
    assert (plain.pixels, plain.samples, plain.components, plain.tiles) == (1024 * 1024, 3 * 1024 * 1024, 3, 1)
    # code-blocks of 64x64: one in the lowest resolution's 32x32, then 1, 1, 4, 16 and 64 in each of 3 bands;
    # one precinct a resolution, in each of its bands (16 halves); a packet a resolution and component
    assert plain.blocks == 3 * (1 + 3 * (1 + 1 + 4 + 16 + 64) + 16 // 2) and plain.packets == 18
    tiny = jp2.layout(CRAFTED["precincts-2x2"][0])
    assert tiny.blocks > tiny.samples  # every sample of a high band in a code-block of its own, and more
    layered = jp2.layout(CRAFTED["layers"][0])
    assert layered.packets == 65535 * 8 * 5  # 256x160 in precincts of 32x32
    tiled = jp2.layout(_codestream(1024, 1024, tile=(256, 256), tiles=16))
    assert tiled.tiles == 16 and tiled.tile_parts == 16 and tiled.blocks > plain.blocks
    overridden = jp2.layout(CRAFTED["tile-part-cod"][0])
    assert overridden.blocks > jp2.layout(_codestream(256, 256)).blocks * 100
    assert jp2.layout(b"\xff\x4f\xff\x51\x00") is None and jp2.layout(b"not a jp2") is None
    assert refusal(_codestream(1024, 1024)[:60]) is None  # cut short: walked as far as it goes, nothing raised
    stream = io.BytesIO(CRAFTED["layers"][0])
    stream.seek(7)
    assert "packets" in source_refusal(stream) and stream.tell() == 7


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory read from /proc (Linux)")
def test_the_crafted_shapes_cost_what_the_fix_bounds(tmp_path):
    """Positive control, Pillow alone in a fresh interpreter: the 2x2-precinct file of 256x256 pixels costs
    ~100 MB more peak memory than an honest one of the same pixels (1-2 MB). The peak is the process's own
    (VmHWM): `ru_maxrss` starts at the parent's peak, which would hide it."""
    script = """
import io, json, sys
from PIL import Image
def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
data = open(sys.argv[1], "rb").read()
Image.init()
before = peak()
try:
    Image.open(io.BytesIO(data)).load()
except OSError:
    pass
print(json.dumps(peak() - before))
"""
    costs = []
    for name, data in (("crafted", CRAFTED["precincts-2x2"][0]),
                       ("honest", _encoded(Image.effect_noise((256, 256), 40).convert("RGB")))):
        path = tmp_path / f"{name}.j2k"
        path.write_bytes(data)
        done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, timeout=60, check=True)
        costs.append(json.loads(done.stdout))
    crafted_mb, honest_mb = costs
    assert crafted_mb > 50 and crafted_mb > 10 * max(honest_mb, 1), costs


def _photo(size: tuple[int, int] = (320, 240)) -> Image.Image:
    return Image.effect_mandelbrot(size, (-2, -1.5, 1, 1.5), 100).convert("RGB")


HONEST = {
    "default": {}, "lossy": {"quality_mode": "rates", "quality_layers": [20]},
    "layers": {"quality_mode": "rates", "quality_layers": [80, 40, 20, 10, 5]},
    "irreversible": {"irreversible": True}, "tiles-64": {"tile_size": (64, 64)}, "tiles-256": {"tile_size": (256, 256)},
    "code-blocks-8": {"codeblock_size": (8, 8)}, "code-blocks-32": {"codeblock_size": (32, 32)},
    "precincts-32": {"precinct_size": (32, 32)}, "precincts-128": {"precinct_size": (128, 128)},
    "rpcl": {"progression": "RPCL"}, "one-resolution": {"num_resolutions": 1}, "raw-codestream": {"no_jp2": True},
}


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_encodes_still_load(name):
    photo = _photo()
    data = _encoded(photo, **HONEST[name])
    assert refusal(data) is None, refusal(data)
    loaded = load_image(data)
    assert loaded.size == photo.size and loaded.mode == "RGB"
    grey = _encoded(photo.convert("L"), **HONEST[name])
    assert refusal(grey) is None and load_image(grey).size == photo.size


@pytest.mark.skipif(not (SHARED_DATA / "imagenet_sample").is_dir(), reason="shared sample photos not present")
def test_sample_photos_encoded_at_many_settings_are_far_under_the_bounds():
    """OpenJPEG's own encodes of a real photo (the first of the shared ImageNet sample) at the settings nearest the
    bounds sit under them: ~40 samples a block at worst (precincts of 32, which OpenJPEG halves at each lower
    resolution; the bound is 24) and ~30 a packet (the same with 8 layers; the bound is 2)."""
    from clipforge.image.costly import jp2

    paths = sorted((SHARED_DATA / "imagenet_sample").rglob("*.JPEG"))[:1]
    assert paths
    worst_block, worst_packet = float("inf"), float("inf")
    nearest = ({}, {"tile_size": (64, 64)}, {"codeblock_size": (8, 8)},
               {"precinct_size": (32, 32), "quality_mode": "rates", "quality_layers": [80, 40, 20, 10, 5, 3, 2, 1]})
    for path in paths:
        with Image.open(path) as image:
            photo = image.convert("RGB")
            photo.thumbnail((512, 512))
        for params in nearest:
            data = _encoded(photo, **params)
            counts = jp2.layout(data)
            assert refusal(data) is None, (path.name, params, refusal(data))
            worst_block = min(worst_block, counts.samples / counts.blocks)
            worst_packet = min(worst_packet, counts.samples / counts.packets)
    assert worst_block > 1.2 * jp2.BLOCK_SAMPLES and worst_packet > 5 * jp2.PACKET_SAMPLES
