"""`Encoder.encode_images` of a list encodes it in batches (audit 66, memory: a list of photos ran one forward pass
per photo, ~29 images/s of tiny JPEGs where `index add` reads 220-450 files/s), with each row what that image alone
gives, in order, whatever mix of paths, bytes and PIL images the list holds."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipforge.image import ImageLoadError
from clipforge.library import encoder as encoder_module
from clipforge.library import resolve_encoder


@pytest.fixture(scope="module")
def encoder():
    return resolve_encoder("clipforge-tiny")


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        path = tmp_path / f"p{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_a_list_is_encoded_in_batches_each_row_as_that_image_alone(encoder, photos, monkeypatch) -> None:
    items = [str(photos[0]), photos[1].read_bytes(), Image.open(photos[2]), photos[3], photos[4].read_bytes(),
             str(photos[5]), str(photos[6])]
    alone = np.concatenate([encoder.encode_images(item) for item in items])
    calls = []
    real = encoder.batch_encoder.images
    monkeypatch.setattr(encoder.batch_encoder, "images", lambda pixels: calls.append(len(pixels)) or real(pixels))
    monkeypatch.setattr(encoder_module, "ENCODE_IMAGES_BATCH", 3)
    together = encoder.encode_images(items)
    assert together.shape == (7, encoder.embed_dim)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # paths and bytes give uint8 crops, a PIL image a float tensor: a batch holds one kind, in order
    assert calls == [2, 1, 3, 1]


def test_the_first_bad_image_of_a_list_raises_naming_it(encoder, photos, tmp_path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageLoadError, match=r"bad\.jpg: "):
        encoder.encode_images([photos[0], bad, photos[1]])
    assert encoder.encode_images([]).shape == (0, encoder.embed_dim)
