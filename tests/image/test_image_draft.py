"""JPEG draft (DCT-domain) decoding: when it happens, the size it keeps, and how close it stays."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageChops

from clipforge.image import DRAFT_MARGIN, Preprocess, build_preprocess, decode_image, load_image
from clipforge.image.geometry import transpose_box


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth structure at several scales plus grain: closer to a photo than pure noise.
    Built small and upsampled, with Pillow's C noise, so big test images cost milliseconds."""
    rng = np.random.default_rng(seed)
    sw, sh = max(width // 8, 2), max(height // 8, 2)
    y, x = np.mgrid[0:sh, 0:sw].astype(np.float32)
    img = np.full((sh, sw, 3), 128, np.float32)
    for c in range(3):
        for _ in range(5):
            fx, fy = rng.uniform(0.5, 40, 2) / max(sw, sh)
            img[..., c] += rng.uniform(20, 45) * np.sin(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 6))
    base = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    grain = Image.merge("RGB", [Image.effect_noise((width, height), 6)] * 3)
    return ImageChops.add(base, grain, scale=1.0, offset=-128)


def save_jpeg(tmp_path: Path, image: Image.Image, name: str, orientation: int = 1) -> Path:
    path = tmp_path / name
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(path, "JPEG", quality=90, exif=exif)
    return path


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_jpeg(tmp_path_factory.mktemp("draft"), photo(1800, 1201), "big.jpg")


def test_draft_keeps_shortest_side_and_stays_close(big_jpeg: Path) -> None:
    decoded = decode_image(big_jpeg, draft_size=224)
    assert decoded.drafted
    assert decoded.image.mode == "RGB" and decoded.source_size == (1800, 1201)
    assert min(decoded.image.size) >= 224 and decoded.image.size[0] < 1800
    # request ceil(1.5 * 224) = 336: min(1800 // 336, 1201 // 336) = 3 -> scale 1/2
    assert decoded.image.size == (900, 601)
    assert decoded.box == (0, 0, 900.0, 600.5)
    drafted = build_preprocess(224).load(big_jpeg)
    exact = build_preprocess(224, draft=False).load(big_jpeg)
    assert drafted.shape == exact.shape == (3, 224, 224)
    assert cosine(drafted, exact) > 0.99
    assert not torch.equal(drafted, exact)  # it really took the other path


@pytest.mark.parametrize(
    ("size", "drafted"),
    [((192, 300), (96, 150)), ((191, 300), None), ((450, 400), (113, 100)), ((800, 790), (100, 99)),
     ((300, 150), None), ((64, 64), None)],
)
def test_draft_only_with_room_to_spare(tmp_path: Path, size: tuple[int, int], drafted: tuple | None) -> None:
    # target 64: drafted iff the shortest side >= 2 * ceil(DRAFT_MARGIN * 64) = 192, at the largest
    # scale in 1/2, 1/4, 1/8 that keeps the shortest side >= 96
    assert DRAFT_MARGIN == 1.5
    path = save_jpeg(tmp_path, photo(*size), "s.jpg")
    decoded = decode_image(path, draft_size=64)
    assert decoded.drafted is (drafted is not None)
    assert decoded.image.size == (drafted or size)
    assert min(decoded.image.size) >= 96 or drafted is None


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_draft_geometry_follows_exif_orientation(tmp_path: Path, orientation: int) -> None:
    image = photo(1001, 673, seed=2)  # odd size: the drafted picture ends half a pixel before the edge
    path = save_jpeg(tmp_path, image, "o.jpg", orientation)
    decoded = decode_image(path, draft_size=224)
    assert decoded.drafted
    expected_size = (673, 1001) if orientation in (5, 6, 7, 8) else (1001, 673)
    assert decoded.source_size == expected_size
    assert load_image(path).size == expected_size
    drafted = build_preprocess(224).load(path)
    exact = build_preprocess(224, draft=False).load(path)
    assert cosine(drafted, exact) > 0.999
    # Geometry check: with the box mapped through the orientation the mean pixel difference is ~1
    # level for every orientation; ignoring the partial edge or mis-mapping it gives 5.7 to 11.
    diff = np.abs(build_preprocess(224).pixels(path).astype(int) - Preprocess(224, draft=False).pixels(path).astype(int))
    assert diff.mean() < 2.0, diff.mean()


def test_transpose_box_matches_pixel_transposes() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (5, 7), dtype=np.uint8))  # width 7, height 5
    box = (1, 2, 5, 4)
    for method in Image.Transpose:
        moved = tuple(int(v) for v in transpose_box(box, image.size, method))
        after = np.asarray(image.transpose(method).crop(moved))
        before = np.asarray(image.crop(box).transpose(method))
        np.testing.assert_array_equal(after, before, err_msg=str(method))


def test_non_jpeg_is_never_drafted(tmp_path: Path) -> None:
    image = photo(600, 480)
    for fmt in ("PNG", "WEBP", "BMP"):
        path = tmp_path / f"big.{fmt.lower()}"
        image.save(path, fmt)
        decoded = decode_image(path, draft_size=224)
        assert not decoded.drafted and decoded.image.size == (600, 480), fmt
        # not drafted; the fast path still resamples only the crop (a level or two apart at most)
        fast = build_preprocess(224).pixels(path).astype(int)
        exact = build_preprocess(224, draft=False).pixels(path).astype(int)
        assert np.abs(fast - exact).max() <= 2, fmt


def test_exact_load_equals_call_on_load_image(big_jpeg: Path) -> None:
    pre = build_preprocess(224, draft=False)
    assert torch.equal(pre.load(big_jpeg), pre(load_image(big_jpeg)))
    assert load_image(big_jpeg).size == (1800, 1201)  # no draft unless asked


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_draft_other_jpeg_modes(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"{mode}.jpg"
    photo(1400, 1000).convert(mode).save(path, "JPEG", quality=90)
    decoded = decode_image(path, draft_size=224)
    assert decoded.drafted and decoded.image.mode == "RGB" and min(decoded.image.size) >= 224
    assert cosine(build_preprocess(224).load(path), Preprocess(224, draft=False).load(path)) > 0.99


def test_draft_from_file_object(big_jpeg: Path) -> None:
    decoded = decode_image(io.BytesIO(big_jpeg.read_bytes()), draft_size=224)
    assert decoded.drafted and min(decoded.image.size) >= 224


def test_mpo_first_frame_is_drafted(tmp_path: Path) -> None:
    path = tmp_path / "camera.mpo"
    first, second = photo(1000, 700, seed=1), Image.new("RGB", (1000, 700), (255, 0, 0))
    first.save(path, "MPO", save_all=True, append_images=[second], quality=90)
    with Image.open(path) as check:
        assert check.format == "MPO" and check.n_frames == 2
    decoded = decode_image(path, draft_size=224)
    assert decoded.drafted and decoded.image.size == (500, 350)
    exact = Preprocess(224, draft=False).load(path)
    assert cosine(build_preprocess(224).load(path), exact) > 0.99
    assert cosine(exact, build_preprocess(224)(second)) < 0.9  # really the first frame
