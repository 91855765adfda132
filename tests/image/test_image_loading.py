"""load_image: every PIL mode to RGB, EXIF orientation, first frames, limits and error messages."""

from __future__ import annotations

import builtins
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from clipforge.image import (
    IMAGE_EXTENSIONS,
    ImageLoadError,
    build_preprocess,
    is_image_path,
    load_image,
)


def gradient(size: tuple[int, int] = (48, 32)) -> np.ndarray:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float64)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float64)[:, None].repeat(w, 1)
    return np.stack([x, y, 255 - x], axis=-1).round().astype(np.uint8)


def roundtrip(tmp_path: Path, image: Image.Image, name: str, **save_args) -> Image.Image:
    path = tmp_path / name
    image.save(path, **save_args)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == image.size
    return loaded


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "png"), ("LA", "png"), ("P", "png"), ("RGBA", "png"), ("CMYK", "jpg"), ("1", "png"),
     ("RGB", "jpg"), ("L", "jpg"), ("RGBA", "webp"), ("I", "tiff"), ("F", "tiff"), ("YCbCr", "jpg"), ("LA", "tiff"), ("I;16", "tiff"),
     ("RGB", "bmp"), ("L", "pgm")],
)
def test_modes_convert_like_reference(tmp_path: Path, mode: str, fmt: str) -> None:
    rgb = Image.fromarray(gradient())
    image = rgb.convert(mode) if mode not in ("I", "F", "I;16") else rgb.convert("L").convert(mode)
    path = tmp_path / f"img.{fmt}"
    image.save(path)
    with Image.open(path) as stored:
        stored.load()
        stored_mode = stored.mode
        as_rgb = np.asarray(stored.convert("RGB"))
    loaded = np.asarray(load_image(path))
    assert loaded.shape == (32, 48, 3) and loaded.dtype == np.uint8
    grey = np.asarray(rgb.convert("L"))
    if stored_mode in ("I", "F"):  # 32-bit holding 0..255 keeps its values
        np.testing.assert_array_equal(loaded[..., 0], grey)
    elif stored_mode == "I;16":  # 16-bit: scaled by 255/65535 (these values are all dark)
        np.testing.assert_array_equal(loaded[..., 0], np.rint(grey * (255 / 65535)).astype(np.uint8))
    else:  # everything else: exactly Pillow's convert("RGB"), as the reference
        np.testing.assert_array_equal(loaded, as_rgb)


def test_rgba_alpha_dropped_by_default_or_composited(tmp_path: Path) -> None:
    data = np.zeros((10, 10, 4), np.uint8)
    data[..., 0] = 200  # red where fully transparent
    image = Image.fromarray(data, "RGBA")
    assert (np.asarray(roundtrip(tmp_path, image, "a.png")) == [200, 0, 0]).all()
    path = tmp_path / "a.png"
    white = load_image(path, alpha_background=(255, 255, 255))
    assert (np.asarray(white) == 255).all()


def test_palette_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    path = tmp_path / "p.png"
    image.save(path, transparency=0)
    assert (np.asarray(load_image(path)) == [0, 255, 0]).all()
    assert (np.asarray(load_image(path, alpha_background=(255, 255, 255))) == 255).all()


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 32 * 16).reshape(16, 32).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as stored:
        assert stored.mode.startswith("I")
    loaded = np.asarray(load_image(path))[..., 0]
    np.testing.assert_array_equal(loaded, np.rint(values * (255 / 65535)).astype(np.uint8))
    assert 120 < loaded.mean() < 135  # clipping would make it almost white


def test_exif_orientation_six_rotates_clockwise(tmp_path: Path) -> None:
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.size == (32, 64)
    top, bottom = np.asarray(loaded)[5, 16], np.asarray(loaded)[58, 16]
    assert top[0] > 200 and top[2] < 50, top  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 50, bottom
    assert loaded.getexif().get(0x0112, 1) == 1  # tag removed: preprocess must not rotate again
    tensor = build_preprocess(32).load(path)
    np.testing.assert_allclose(tensor.numpy(), build_preprocess(32)(loaded).numpy(), atol=0)


def test_animated_gif_and_webp_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 12), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(gif) as check:
        assert check.n_frames == 3
    assert (np.asarray(load_image(gif)) == [255, 0, 0]).all()
    if features.check("webp"):
        webp = tmp_path / "anim.webp"
        frames[1].save(webp, save_all=True, append_images=[frames[2], frames[0]], duration=50, lossless=True)
        assert (np.asarray(load_image(webp)) == [0, 255, 0]).all()


def test_file_objects_and_bytes(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(gradient()).save(buffer, "PNG")
    data = buffer.getvalue()
    expected = gradient()
    np.testing.assert_array_equal(np.asarray(load_image(io.BytesIO(data))), expected)
    np.testing.assert_array_equal(np.asarray(load_image(data)), expected)
    named = io.BytesIO(b"not an image at all")
    named.name = "member/photo.jpg"
    with pytest.raises(ImageLoadError, match="member/photo.jpg.*not an image"):
        load_image(named)


def _error(source, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(source, **kwargs)
    assert isinstance(info.value, ValueError)
    return info.value


def test_error_missing(tmp_path: Path) -> None:
    err = _error(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(err) and "file not found" in str(err) and err.reason == "file not found"


def test_error_zero_bytes(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty.png" in str(err := _error(tmp_path / "empty.png")) and "empty (0 bytes)" in str(err)
    assert "empty (0 bytes)" in str(_error(io.BytesIO(b"")))


def test_error_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("hello, I am text")
    err = _error(tmp_path / "notes.jpg")
    assert "notes.jpg" in str(err) and "not an image" in str(err)


def test_error_directory(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    err = _error(tmp_path / "folder.jpg")
    assert "folder.jpg" in str(err) and "directory" in str(err)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_error_truncated(tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    err = _error(path)
    assert f"cut.{fmt.lower()}" in str(err) and "truncated" in str(err)


def test_error_too_many_pixels_is_independent_of_pillow_global(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(path)
    err = _error(path, max_pixels=10_000)
    assert "big.png" in str(err) and "too many pixels" in str(err) and "200x100" in str(err)
    # Pillow's global limit neither refuses (set tiny) nor lets through (set None) on our behalf
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert load_image(path).size == (200, 100)
    assert Image.MAX_IMAGE_PIXELS == 100
    assert load_image(io.BytesIO(path.read_bytes())).size == (200, 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert "too many pixels" in str(_error(path, max_pixels=19_999))
    assert load_image(path, max_pixels=None).size == (200, 100)


def test_error_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):  # root ignores chmod: simulate what a user would get
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    err = _error(path)
    assert "secret.png" in str(err) and "permission denied" in str(err)


def test_decoded_is_independent_of_file(tmp_path: Path) -> None:
    path = tmp_path / "x.gif"
    Image.new("P", (5, 5)).save(path)
    image = load_image(path)
    path.unlink()
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (0, 0, 0)


def test_extensions() -> None:
    for ext in (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"):
        assert ext in IMAGE_EXTENSIONS
    assert ".pdf" not in IMAGE_EXTENSIONS and ".txt" not in IMAGE_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)
    assert is_image_path("a/B.JPG") and not is_image_path("notes.txt") and not is_image_path("jpg")


def test_extensions_behave_as_the_frozenset_they_stand_for() -> None:
    """`IMAGE_EXTENSIONS` is filled on first read (importing clipforge no longer runs `Image.init()`), and
    is still what it was for code that uses it: equal, hashable, and usable in set operations."""
    plain = frozenset(IMAGE_EXTENSIONS)
    assert IMAGE_EXTENSIONS == plain and plain == IMAGE_EXTENSIONS and hash(IMAGE_EXTENSIONS) == hash(plain)  # noqa: SIM300 (both directions on purpose)
    assert IMAGE_EXTENSIONS | {".x"} == plain | {".x"} and isinstance(IMAGE_EXTENSIONS | {".x"}, frozenset)
    assert IMAGE_EXTENSIONS - {".jpg"} == plain - {".jpg"} and IMAGE_EXTENSIONS & {".jpg", ".x"} == {".jpg"}
    assert {".png", ".x"} & IMAGE_EXTENSIONS == {".png"} and sorted(IMAGE_EXTENSIONS) == sorted(plain)
