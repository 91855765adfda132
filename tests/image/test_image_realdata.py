"""Real ImageNet JPEGs from ../shared/data/imagenet_sample (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.image import MEAN, STD, build_preprocess, decode_image, load_image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
IMAGES = SHARED_DATA / "imagenet_sample" / "images"
GRAYSCALE = "n04090263_rifle.JPEG"

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def images() -> Path:
    if not IMAGES.is_dir():
        pytest.skip(f"real data {IMAGES} is absent (tests using ../shared/data skip without it)")
    return IMAGES


def numpy_reference(image: Image.Image, n: int) -> np.ndarray:
    """Resize shortest side (PIL bicubic, torchvision's size rule), centre crop, /255, normalise."""
    w, h = image.size
    size = (n, int(n * h / w)) if w <= h else (int(n * w / h), n)
    arr = np.asarray(image.resize(size, Image.BICUBIC).convert("RGB"))
    top, left = int(round((arr.shape[0] - n) / 2.0)), int(round((arr.shape[1] - n) / 2.0))
    x = arr[top : top + n, left : left + n].astype(np.float32) / np.float32(255)
    return ((x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)).transpose(2, 0, 1)


def test_real_images_match_reference_including_grayscale(images: Path) -> None:
    names = sorted(p.name for p in images.iterdir())[:4] + [GRAYSCALE]
    pre = build_preprocess(224, draft=False)
    for name in names:
        path = images / name
        with Image.open(path) as raw:
            raw_mode = raw.mode
            reference = numpy_reference(raw.convert("RGB"), 224)
            direct = pre(raw)  # reference order on the file's own mode (L stays L until the crop)
        loaded = load_image(path)
        assert loaded.mode == "RGB"
        ours = pre.load(path)
        np.testing.assert_allclose(ours.numpy(), reference, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(direct.numpy(), reference, atol=1e-6, err_msg=name)
        if name == GRAYSCALE:
            assert raw_mode == "L"
            pixels = pre.pixels(path)
            assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_real_large_images_draft_close_to_exact(images: Path) -> None:
    sized = []
    for path in sorted(images.iterdir()):
        with Image.open(path) as im:
            sized.append((min(im.size), path))
    largest = [path for _, path in sorted(sized)[-3:]]
    for path in largest:
        decoded = decode_image(path, draft_size=224)
        assert decoded.drafted and min(decoded.image.size) >= 224
        drafted = build_preprocess(224).load(path)
        exact = build_preprocess(224, draft=False).load(path)
        cos = torch.nn.functional.cosine_similarity(drafted.flatten(), exact.flatten(), dim=0).item()
        assert cos > 0.99, (path.name, cos)
