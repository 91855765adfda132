"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def caption_folders(tmp_path_factory) -> Path:
    """A `folder` dataset: 4 caption folders x 4 40x40 PNGs, coloured by caption (read-only: copy to change it)."""
    root = tmp_path_factory.mktemp("captions")
    rng = np.random.default_rng(5)
    for c in range(4):
        (root / f"caption_{c}").mkdir()
        for i in range(4):
            pixels = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
            pixels[..., c % 3] += 150
            Image.fromarray(pixels).save(root / f"caption_{c}" / f"{i}.png")
    return root
