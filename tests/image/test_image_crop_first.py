"""Fast decoding resamples only the part of the picture the centre crop keeps (`crop_region`).

The exact path resizes the whole picture and crops, as OpenAI's reference does; with `draft` the
crop's region is resampled straight to n x n. Same geometry, so the pixels agree to a level or two
in a handful of values; a region one resized pixel off shifts the whole crop and is far from that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.image import build_preprocess
from clipforge.image import geometry as geometry_module
from clipforge.image.geometry import crop_region
from clipforge.weights.preprocessing import WeightsPreprocess

IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "imagenet_sample" / "images"


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    if not IMAGES.is_dir():
        pytest.skip(f"{IMAGES} not found")
    paths = sorted(IMAGES.iterdir())
    return paths[::25]  # 40 photos: landscape, portrait, square, greyscale among them


def _compare(fast, exact, paths: list[Path]) -> tuple[int, int, int]:
    """(values that differ, all values, largest difference) of fast vs exact crops of the same decodes."""
    differ = total = worst = 0
    for path in paths:
        decoded = fast.decode(path)
        a = fast.decoded_pixels(decoded).astype(int)
        # the exact resize of the very same decode: only the resampling differs, not the draft
        b = exact._resized_pixels(decoded.image, decoded.source_size, decoded.box).astype(int)
        assert a.shape == b.shape == (fast.n_px, fast.n_px, 3), path.name
        diff = np.abs(a - b)
        differ, total, worst = differ + int((diff > 0).sum()), total + diff.size, max(worst, int(diff.max()))
    return differ, total, worst


def test_crop_region_geometry() -> None:
    # 500x375 -> 298x224: the crop starts at round(74 / 2) = 37 resized pixels, 37 * 500 / 298 source pixels
    left, top, right, bottom = crop_region((0, 0, 500, 375), (298, 224), 224)
    assert (top, bottom) == (0, 375)
    assert left == pytest.approx(37 * 500 / 298) and right == pytest.approx(261 * 500 / 298)
    # a drafted JPEG's region (the picture ends half a pixel early) maps through the same scale
    assert crop_region((0, 0, 250.5, 187.5), (298, 224), 224)[2] == pytest.approx(261 * 250.5 / 298)
    assert crop_region((0, 0, 100, 100), (100, 100), 224) is None  # would need padding: not this path


def test_crop_first_matches_resize_then_crop_on_real_photos(photos: list[Path]) -> None:
    differ, total, worst = _compare(build_preprocess(224), build_preprocess(224, draft=False), photos)
    assert worst <= 2 and differ < total * 1e-3, (differ, total, worst)


def test_crop_first_with_bilinear_and_squash(photos: list[Path]) -> None:
    for mode in ("shortest", "squash"):
        fast = WeightsPreprocess(224, interpolation="bilinear", resize_mode=mode)
        exact = WeightsPreprocess(224, interpolation="bilinear", resize_mode=mode, draft=False)
        differ, total, worst = _compare(fast, exact, photos[:10])
        assert worst <= 2 and differ < total * 1e-3, (mode, differ, total, worst)


def test_exact_path_resizes_the_whole_picture(photos: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    resize = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        calls.append(tuple(size))
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    path = next(p for p in photos if Image.open(p).size == (500, 375))
    build_preprocess(224, draft=False).pixels(path)
    build_preprocess(224).pixels(path)
    assert calls == [(298, 224), (224, 224)]


def test_a_crop_one_pixel_off_is_caught(photos: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # positive control for the tolerance above: the same shortcut with the crop one resized pixel aside
    real = geometry_module.crop_region

    def shifted(region, resized, crop, *rounding):
        box = real(region, resized, crop, *rounding)
        step = (region[2] - region[0]) / resized[0]
        if box is None or resized[0] == crop:  # nothing beside the crop to shift into
            return box
        step = -step if box[0] >= step else step
        return (box[0] + step, box[1], box[2] + step, box[3])

    monkeypatch.setattr("clipforge.image.preprocess.crop_region", shifted)
    differ, total, worst = _compare(build_preprocess(224), build_preprocess(224, draft=False), photos[:10])
    assert worst > 2 and differ > total * 1e-3


@pytest.mark.parametrize("draft", [False, True])
def test_an_extreme_aspect_ratio_never_resizes_the_whole_picture(tmp_path: Path, draft: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 x 5000 PNG (a few KB) resized whole is a 224 x 1,120,000 image (2.4 GB); the exact path resizes the
    whole picture only up to `EXACT_RESIZE_PIXELS`, then resamples just the crop. Below the bound it stays
    exact: a 3 x 500 strip resizes whole (224 x 37,333)."""
    from clipforge.image.preprocess import EXACT_RESIZE_PIXELS, Preprocess

    sizes: list[tuple] = []
    resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, *a, **kw: sizes.append(tuple(size)) or
                        resize(self, size, *a, **kw))
    thin = tmp_path / "thin.png"
    Image.new("RGB", (1, 5000), (200, 10, 10)).save(thin)
    pre = Preprocess(224, draft=draft)
    assert pre.pixels(thin).shape == (224, 224, 3)
    assert pre(Image.open(thin)).shape == (3, 224, 224)  # a PIL image given directly: bounded too
    assert sizes == [(224, 224), (224, 224)]
    sizes.clear()
    assert 224 * 37_333 < EXACT_RESIZE_PIXELS < 224 * 1_120_000
    Image.new("RGB", (3, 500), (200, 10, 10)).save(thin)
    Preprocess(224, draft=False).pixels(thin)
    assert sizes == [(224, 37_333)]
