"""Preprocess vs an independent numpy computation of torchvision's Resize/CenterCrop/ToTensor/Normalize."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.image import MEAN, STD, Preprocess, build_preprocess

MEAN32 = np.array(MEAN, dtype=np.float32)
STD32 = np.array(STD, dtype=np.float32)


def reference_preprocess(image: Image.Image, n: int) -> np.ndarray:
    """torchvision's CLIP pipeline written out independently: PIL bicubic resize (as torchvision
    does for PIL inputs), then crop with zero padding / round-half-even, RGB, /255, -mean, /std."""
    w, h = image.size
    if w <= h:
        new_w, new_h = n, int(n * h / w)
    else:
        new_w, new_h = int(n * w / h), n
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    arr = np.asarray(image.convert("RGB"))
    h, w = arr.shape[:2]
    if h < n or w < n:
        pad_t, pad_l = max(n - h, 0) // 2, max(n - w, 0) // 2
        pad_b, pad_r = (max(n - h, 0) + 1) // 2, (max(n - w, 0) + 1) // 2
        arr = np.pad(arr, ((pad_t, pad_b), (pad_l, pad_r), (0, 0)))
        h, w = arr.shape[:2]
    top, left = int(round((h - n) / 2.0)), int(round((w - n) / 2.0))
    arr = arr[top : top + n, left : left + n]
    x = arr.astype(np.float32) / np.float32(255)
    x = (x - MEAN32) / STD32
    return x.transpose(2, 0, 1)


def noise_image(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    channels = len(Image.new(mode, (1, 1)).getbands())
    data = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    return Image.fromarray(data[..., 0] if channels == 1 else data, mode=mode)


@pytest.mark.parametrize(
    "size",
    [(1, 1), (3, 500), (500, 3), (225, 224), (224, 225), (1000, 667), (667, 1000), (224, 224),
     (100, 50), (7, 9), (300, 301), (451, 224)],
)
def test_matches_independent_numpy_reference(size: tuple[int, int]) -> None:
    image = noise_image(size, seed=sum(size))
    ours = build_preprocess(224)(image)
    assert ours.shape == (3, 224, 224) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), reference_preprocess(image, 224), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_px", [32, 64, 336])
def test_other_resolutions(n_px: int) -> None:
    image = noise_image((123, 77), seed=n_px)
    np.testing.assert_allclose(build_preprocess(n_px)(image).numpy(), reference_preprocess(image, n_px), atol=1e-6)


def test_crop_window_hand_checked() -> None:
    # 1000x667 -> Resize(224) gives 335x224 (int(224*1000/667) = 335); the crop starts at
    # round(111 / 2) = round(55.5) = 56 (half to even). Mark column 56 and 55 of the resized image.
    resized = np.zeros((224, 335, 3), dtype=np.uint8)
    resized[:, 56] = 255
    resized[:, 55] = 128
    pixels = build_preprocess(224).pixels(Image.fromarray(resized))
    assert (pixels[:, 0] == 255).all()
    assert (pixels[:, 1:] == 0).all()
    # 225x224 at 224: offset round(0.5) = 0 -> the first column is kept, the last one dropped
    resized = np.zeros((224, 225, 3), dtype=np.uint8)
    resized[:, 0] = 200
    pixels = build_preprocess(224).pixels(Image.fromarray(resized))
    assert (pixels[:, 0] == 200).all()


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (10, 200, 30), (128, 64, 250)])
def test_solid_colour_gives_exact_normalised_value(colour: tuple[int, int, int]) -> None:
    out = build_preprocess(224)(Image.new("RGB", (640, 480), colour))
    for c in range(3):
        expected = (colour[c] / 255 - MEAN[c]) / STD[c]
        assert torch.allclose(out[c], torch.full((224, 224), expected), atol=1e-6, rtol=0)


def test_smaller_than_crop_is_upsampled_not_padded() -> None:
    out = build_preprocess(224)(Image.new("RGB", (20, 10), (255, 0, 0)))
    red = (1 - MEAN[0]) / STD[0]
    assert torch.allclose(out[0], torch.full((224, 224), red), atol=1e-6)


@pytest.mark.parametrize(
    "mode",
    ["1", "L", "LA", "P", "RGBA", "CMYK", "YCbCr", "RGBX", "HSV"],
)
def test_modes_follow_reference_order(mode: str) -> None:
    # Reference: resize in the image's own mode (Pillow: NEAREST for "1"/"P", premultiplied
    # for RGBA/LA), crop, then convert("RGB").
    image = noise_image((97, 61), seed=3, mode="RGB" if mode in ("P", "1") else mode)
    if mode == "P":
        image = image.quantize(colors=16)
    if mode == "1":
        image = image.convert("1")
    assert image.mode == mode
    np.testing.assert_allclose(build_preprocess(32)(image).numpy(), reference_preprocess(image, 32), atol=1e-6)


def test_palette_with_transparency_keeps_palette_colours() -> None:
    image = Image.new("P", (50, 40), 1)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.info["transparency"] = b"\x00\x00"  # both entries transparent
    out = build_preprocess(32)(image)
    green = [(c / 255 - m) / s for c, m, s in zip((0, 255, 0), MEAN, STD, strict=True)]
    assert torch.allclose(out[:, 5, 5], torch.tensor(green), atol=1e-6)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("I;16", 65535, 255), ("I;16", 32768, 128), ("I;16B", 257 * 40, 40), ("I", 65535, 255),
     ("I", 100, 100), ("F", 0.5, 128), ("F", 200.0, 200)],
)
def test_high_bit_depth_is_rescaled_not_clipped(mode: str, value: float, expected: int) -> None:
    grid = np.zeros((30, 40), dtype=np.float64)
    grid[:, :20] = value  # left half at `value`, right half 0 so the range is known
    if mode.startswith("I;16"):
        dtype = ">u2" if mode.endswith("B") else "<u2"
        image = Image.frombytes(mode, (40, 30), grid.astype(dtype).tobytes())
    elif mode == "I":
        image = Image.fromarray(grid.astype(np.int32), mode="I")
    else:
        image = Image.fromarray(grid.astype(np.float32), mode="F")
    pixels = build_preprocess(40).pixels(image)
    assert pixels.shape == (40, 40, 3)
    assert (pixels[20, 5] == expected).all(), pixels[20, 5]
    assert (pixels[20, 35] == 0).all()


def test_exif_orientation_in_call_and_switch() -> None:
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.info["exif"] = exif.tobytes()
    upright = build_preprocess(32).pixels(image)
    # orientation 6: rotate 90 degrees clockwise -> the left (red) half ends up on top
    assert (upright[2, 16] == [255, 0, 0]).all() and (upright[29, 16] == [0, 0, 255]).all()
    raw = Preprocess(32, exif_transpose=False).pixels(image)
    np.testing.assert_allclose(
        Preprocess(32, exif_transpose=False)(image).numpy(), reference_preprocess(image, 32), atol=1e-6
    )
    assert (raw[16, 2] == [255, 0, 0]).all()


def test_batch_equals_single_and_accepts_paths(tmp_path) -> None:
    images = [noise_image((50 + 7 * i, 90 - 5 * i), seed=i) for i in range(4)]
    path = tmp_path / "one.png"
    images[0].save(path)
    pre = build_preprocess(48)
    batch = pre.batch([*images, path])
    assert batch.shape == (5, 3, 48, 48) and batch.is_contiguous()
    for i, image in enumerate(images):
        assert torch.equal(batch[i], pre(image))
    assert torch.equal(batch[4], batch[0])
    assert pre.batch([]).shape == (0, 3, 48, 48)


def test_normalize_matches_torchvision_float_ops() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    out = build_preprocess(224).normalize(pixels)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255)
    x = x.sub(torch.tensor(MEAN).view(1, 3, 1, 1)).div(torch.tensor(STD).view(1, 3, 1, 1))
    assert torch.equal(out, x)
    assert torch.equal(build_preprocess(224).normalize(torch.from_numpy(pixels[1])), x[1])
    # the torch path used for accelerator tensors computes the same values (checked here on CPU)
    assert torch.equal(build_preprocess(224)._normalize_on_device(torch.from_numpy(pixels)), out)
    with pytest.raises(ValueError, match="uint8"):
        build_preprocess(224).normalize(pixels.astype(np.float32))


def test_bad_arguments_and_pickling() -> None:
    with pytest.raises(TypeError, match="PIL.Image.Image"):
        build_preprocess(32)(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="positive integer"):
        build_preprocess(0)
    pre = build_preprocess(32, draft=False)
    clone = pickle.loads(pickle.dumps(pre))
    assert clone.n_px == 32 and clone.draft is False
    image = noise_image((40, 33), seed=9)
    assert torch.equal(clone(image), pre(image))
    assert "Resize(32, bicubic)" in repr(pre)
