"""Thumbnails of phone photos (audit 64, findings 2, 5 and 6): a panorama's thumbnail decodes what its thumbnail
needs, not every pixel; a photo's embedded colour profile is applied (converted to sRGB) instead of dropped; a
transparent image is shown over white instead of showing the colours stored under alpha 0."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms

from clipforge.library import Library, thumbs


def _p3_like_profile() -> bytes:
    """An RGB matrix/TRC profile with Display P3's primaries (D50-adapted, as in Apple's profile) and sRGB's curve:
    lcms's own sRGB profile with its three colorant tags rewritten. A P3 value shown as sRGB looks washed out."""
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    colorants = {b"rXYZ": (0.5151, 0.2412, -0.0011), b"gXYZ": (0.2920, 0.6922, 0.0419),
                 b"bXYZ": (0.1571, 0.0666, 0.7841)}
    (count,) = struct.unpack(">I", data[128:132])
    for i in range(count):
        signature, offset, _ = struct.unpack(">4sII", data[132 + 12 * i:144 + 12 * i])
        if signature in colorants:
            data[offset + 8:offset + 20] = b"".join(struct.pack(">i", round(v * 65536)) for v in colorants[signature])
    return bytes(data)


P3 = _p3_like_profile()


def _to_srgb(colour: tuple[int, int, int], profile: bytes) -> np.ndarray:
    """What ImageCms makes of one colour of a photo tagged with `profile`."""
    pixel = Image.new("RGB", (1, 1), colour)
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    return np.asarray(ImageCms.profileToProfile(pixel, source, ImageCms.createProfile("sRGB")), int)[0, 0]


def _thumb(tmp_path, encoder, name: str, image: Image.Image, size: int, decoded: list[int] | None = None,
           **save) -> Image.Image:
    """The library's thumbnail (`size`) of `image` saved as photos/`name` with `save`'s options, indexed;
    `decoded` (`largest_jpeg_decode`) is reset once the photo is indexed, so it measures the thumbnail alone."""
    (tmp_path / "photos").mkdir()
    image.save(tmp_path / "photos" / name, **save)
    with Library(tmp_path / "lib", encoder) as library:
        assert library.add(tmp_path / "photos", workers=0, progress=False).added == 1
        if decoded is not None:
            decoded[0] = 0
        record = library.store.image_by_path(str(tmp_path / "photos" / name))
        data = library.thumbnail(record.id, size=size)
    thumb = Image.open(io.BytesIO(data))
    assert thumb.format == "JPEG" and thumb.mode == "RGB" and "icc_profile" not in thumb.info
    assert "exif" not in thumb.info and not thumb.getexif()
    return thumb


def _psnr(a: Image.Image, b: Image.Image) -> float:
    error = np.asarray(a.convert("RGB"), float) - np.asarray(b.convert("RGB"), float)
    return float(10 * np.log10(255 ** 2 / np.mean(error ** 2)))


def _at(thumb: Image.Image, x: int, y: int) -> np.ndarray:
    return np.asarray(thumb, int)[y, x]


# -- finding 2: a panorama decodes what its thumbnail needs -----------------------------------------------------

def test_the_draft_size_follows_the_thumbnail_of_a_panorama_and_stays_the_class_for_an_ordinary_photo():
    assert thumbs.thumbnail_draft_size(256, 4032, 3024) == 256  # 4:3, 3:2, 2:1, square: the class, as before
    assert thumbs.thumbnail_draft_size(1024, 6000, 4000) == 1024
    assert thumbs.thumbnail_draft_size(512, 4000, 2000) == 512
    assert thumbs.thumbnail_draft_size(64, 500, 500) == 64
    assert thumbs.thumbnail_draft_size(1024, 30000, 3000) == 206  # the audit's panorama: twice its 102.4-pixel short side
    assert thumbs.thumbnail_draft_size(1024, 3000, 30000) == 206  # upright or not
    assert thumbs.thumbnail_draft_size(256, 6000, 600) == 52
    assert thumbs.thumbnail_draft_size(256, 4001, 2000) == 2 * 128  # just past 2:1: twice ceil(127.97)
    assert thumbs.thumbnail_draft_size(256, None, None) == 256  # no size recorded: the class
    assert thumbs.thumbnail_draft_size(256, 0, 600) == 256


def test_a_panoramas_thumbnail_decodes_at_the_scale_its_thumbnail_needs(tmp_path, tiny_encoder, largest_jpeg_decode,
                                                                         shared_data):
    """A 6000x600 panorama's 256-pixel thumbnail (256x26) decoded all 3.6 M pixels: the draft kept both sides
    >= 1.5 x 256, which its 600-pixel side cannot give. Now the short side is kept >= 1.5 x twice the thumbnail's
    (52 pixels: a request of 78), so 1/4 scale: 1500x150, each side >= 5.7 x the thumbnail's. The thumbnail is
    what the whole decode gives, within 0.5 dB of the loss of its own JPEG encoding."""
    from clipforge.image import load_image

    photo = sorted((shared_data / "imagenet_sample" / "images").iterdir())[5]  # a real photo's detail
    pano = Image.open(photo).convert("RGB").resize((6000, 600), Image.Resampling.BICUBIC)
    request = math.ceil(1.5 * min(256, 2 * math.ceil(256 * 600 / 6000)))  # twice the short side 25.6, times 1.5
    scale = next(s for s in (8, 4, 2, 1) if min(6000 // request, 600 // request) >= s)
    assert (request, scale) == (78, 4)
    largest = largest_jpeg_decode
    thumb = _thumb(tmp_path, tiny_encoder, "pano.jpg", pano, 256, largest, quality=90)
    assert largest[0] == (6000 // scale) * (600 // scale) == 1500 * 150, f"decoded {largest[0]:,} pixels"
    whole = load_image(str(tmp_path / "photos" / "pano.jpg"))
    whole.thumbnail((256, 256))
    assert thumb.size == whole.size == (256, 26)
    assert 1500 >= 1.5 * 256 and 150 >= 1.5 * 26  # the quality rule, on each side of what was produced
    encoded = io.BytesIO()
    whole.save(encoded, format="JPEG", quality=85)  # what the thumbnail's own JPEG loses (34 dB on so few rows)
    assert _psnr(thumb, whole) > _psnr(Image.open(encoded), whole) - 0.5


def test_an_ordinary_photos_thumbnail_decodes_as_before(tmp_path, tiny_encoder, largest_jpeg_decode):
    """A 4:3 12-megapixel phone photo's 256 class keeps both sides >= 1.5 x 256 (384): 1/4 scale, 1008x756, not
    1/8 (504x378), exactly as before the panorama rule."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((4032, 3024))
    largest = largest_jpeg_decode
    thumb = _thumb(tmp_path, tiny_encoder, "IMG_0001.JPG", photo, 256, largest, quality=80)
    assert thumb.size == (256, 192)
    assert largest[0] == 1008 * 756, f"decoded {largest[0]:,} pixels"


# -- finding 5: the embedded colour profile is applied ----------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_display_p3_photos_thumbnail_shows_its_colours_in_srgb(tmp_path, tiny_encoder, fmt):
    """Two flat P3 patches: the thumbnail holds ImageCms's sRGB conversion of each (within the JPEG's rounding),
    not the P3 numbers read as sRGB (17-40 levels away: washed out)."""
    colours = [(200, 60, 40), (40, 170, 90)]
    image = Image.new("RGB", (128, 64), colours[0])
    image.paste(colours[1], (64, 0, 128, 64))
    thumb = _thumb(tmp_path, tiny_encoder, f"p3.{fmt.lower()}", image, 128, format=fmt, icc_profile=P3,
                   **({"quality": 95} if fmt == "JPEG" else {}))
    with Image.open(tmp_path / "photos" / f"p3.{fmt.lower()}") as original:
        stored = [tuple(int(v) for v in original.convert("RGB").getpixel((x, 32))) for x in (32, 96)]
    for colour, x in zip(stored, (32, 96), strict=True):
        expected = _to_srgb(colour, P3)
        assert np.abs(expected - np.asarray(colour)).max() >= 17  # the conversion shows
        assert np.abs(_at(thumb, x, 32) - expected).max() <= 2, (colour, _at(thumb, x, 32), expected)


@pytest.mark.parametrize("profile", [b"not a colour profile at all", P3 + b"\0" * (2 << 20),
                                     ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()],
                         ids=["unparsable", "over-64-KiB", "not-an-RGB-profile"])
def test_a_profile_that_cannot_be_applied_is_ignored(tmp_path, tiny_encoder, profile):
    """A profile that does not parse, one over the 64 KiB bound (this one parses: the bound alone ignores it) or one
    for another colour space: the thumbnail is made as before, the stored numbers read as sRGB, with no error."""
    if len(profile) > 1 << 16:
        assert np.abs(_to_srgb((200, 60, 40), profile) - (200, 60, 40)).max() >= 17
    thumb = _thumb(tmp_path, tiny_encoder, "odd.jpg", Image.new("RGB", (64, 64), (200, 60, 40)), 64,
                   icc_profile=profile, quality=95)
    assert np.abs(_at(thumb, 32, 32) - (200, 60, 40)).max() <= 2


def _with_pipeline(profile: bytes, stages: int) -> bytes:
    """`profile` with a D2B0 tag added: an `mpet` pipeline of `stages` matrix stages that each swap red and green
    (all pointing at one element). lcms prefers such a pipeline to the primaries and curves, and building it costs
    per stage: 30,000 stages in a 241 KB profile took 84 s of CPU for one thumbnail (review 64)."""
    element = b"matf" + b"\0" * 4 + struct.pack(">HH", 3, 3) + struct.pack(">9f", 0, 1, 0, 1, 0, 0, 0, 0, 1)
    element += struct.pack(">3f", 0, 0, 0)
    body = b"mpet" + b"\0" * 4 + struct.pack(">HHI", 3, 3, stages)
    body += struct.pack(">II", 16 + 8 * stages, len(element)) * stages + element
    (count,) = struct.unpack(">I", profile[128:132])
    entries = [struct.unpack(">4sII", profile[132 + 12 * i:144 + 12 * i]) for i in range(count)]
    data = profile[132 + 12 * count:]
    shift = 12  # the table grows by one entry
    table = b"".join(struct.pack(">4sII", sig, offset + shift, size) for sig, offset, size in entries)
    new_offset = 132 + 12 * (count + 1) + len(data)
    table += struct.pack(">4sII", b"D2B0", new_offset, len(body))
    out = bytearray(profile[:128] + struct.pack(">I", count + 1) + table + data + body)
    out[:4] = struct.pack(">I", len(out))
    return bytes(out)


def test_a_profile_with_a_pipeline_is_not_applied(tmp_path, tiny_encoder):
    """Only plain matrix/TRC profiles are applied: a profile carrying an A2B/D2B pipeline (here one stage swapping
    red and green, which ImageCms does apply) is ignored, so no request pays for building a crafted pipeline."""
    hostile = _with_pipeline(P3, 1)
    assert tuple(_to_srgb((200, 60, 40), hostile)) != tuple(_to_srgb((200, 60, 40), P3))  # lcms runs the pipeline
    thumb = _thumb(tmp_path, tiny_encoder, "piped.png", Image.new("RGB", (64, 64), (200, 60, 40)), 64,
                   icc_profile=hostile)
    assert np.abs(_at(thumb, 32, 32) - (200, 60, 40)).max() <= 2


# -- finding 6: transparency is shown over white ------------------------------------------------------------

def _transparent(mode: str) -> tuple[Image.Image, dict, tuple[int, int, int]]:
    """A 128x128 image whose border is transparent over "erased" green (or palette index 0) and whose centre
    64x64 is opaque or half-transparent; (image, save options, the centre's colour over white)."""
    if mode == "RGBA":
        image = Image.new("RGBA", (128, 128), (10, 200, 30, 0))
        image.paste((255, 0, 0, 200), (32, 32, 96, 96))
        return image, {}, (255, 55, 55)
    if mode == "LA":
        image = Image.new("LA", (128, 128), (0, 0))
        image.paste((100, 255), (32, 32, 96, 96))
        return image, {}, (100, 100, 100)
    image = Image.new("P", (128, 128), 0)
    image.putpalette([10, 200, 30, 255, 0, 0] + [0] * 762)
    image.paste(1, (32, 32, 96, 96))
    return image, {"transparency": 0}, (255, 0, 0)


@pytest.mark.parametrize(("mode", "name"), [("RGBA", "screenshot.png"), ("LA", "grey.png"), ("P", "sticker.gif"),
                                            ("P", "palette.png")])
def test_a_transparent_images_thumbnail_is_shown_over_white(tmp_path, tiny_encoder, mode, name):
    """The transparent border was the green stored under alpha 0 ("erased" content shown) and a 200/255 red was
    shown opaque; now both are composited over white, in a class file and in a size served from one (100)."""
    image, save, centre = _transparent(mode)
    thumb = _thumb(tmp_path, tiny_encoder, name, image, 128, **save)
    assert np.abs(_at(thumb, 4, 4) - (255, 255, 255)).max() <= 2, _at(thumb, 4, 4)
    assert np.abs(_at(thumb, 64, 64) - centre).max() <= 3, _at(thumb, 64, 64)
    with Library(tmp_path / "lib", tiny_encoder) as library:
        record = library.store.image_by_path(str(tmp_path / "photos" / name))
        smaller = Image.open(io.BytesIO(library.thumbnail(record.id, size=100)))
    assert smaller.size == (100, 100)
    assert np.abs(_at(smaller, 3, 3) - (255, 255, 255)).max() <= 2, _at(smaller, 3, 3)


def test_a_transparent_p3_image_is_composited_then_converted(tmp_path, tiny_encoder):
    """White stays white (P3's white is sRGB's) and the half-transparent colour is converted after compositing."""
    image = Image.new("RGBA", (64, 64), (10, 200, 30, 0))
    image.paste((200, 60, 40, 255), (16, 16, 48, 48))
    thumb = _thumb(tmp_path, tiny_encoder, "p3.png", image, 64, icc_profile=P3)
    assert np.abs(_at(thumb, 2, 2) - (255, 255, 255)).max() <= 2, _at(thumb, 2, 2)
    assert np.abs(_at(thumb, 32, 32) - _to_srgb((200, 60, 40), P3)).max() <= 2, _at(thumb, 32, 32)


# -- finding 3 (what docs/security.md says): originals keep their metadata, thumbnails carry none ---------------

def test_an_original_is_served_with_its_gps_and_serials_and_its_thumbnail_without(tmp_path, tiny_encoder):
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    exif.get_ifd(0x8825).update({1: "N", 2: (40.0, 41.0, 0.0), 3: "W", 4: (73.0, 59.0, 0.0)})
    exif.get_ifd(0x8769).update({0xA431: "SN-CAM-0042", 0xA435: "LENS-SN-7"})
    (tmp_path / "photos").mkdir()
    path = tmp_path / "photos" / "IMG_0001.JPG"
    Image.new("RGB", (64, 48), (90, 120, 200)).save(path, exif=exif, icc_profile=P3)
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        record = library.store.image_by_path(str(path))
        original, _ = library.image_bytes(record.id)
        thumb = Image.open(io.BytesIO(library.thumbnail(record.id, size=64)))
    assert original == path.read_bytes()
    served = Image.open(io.BytesIO(original)).getexif()
    assert served.get_ifd(0x8825)[2] == (40.0, 41.0, 0.0) and served.get_ifd(0x8769)[0xA431] == "SN-CAM-0042"
    assert set(thumb.info) <= {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi"}, thumb.info
    assert not thumb.getexif() and thumb.applist == [("APP0", thumb.applist[0][1])]
