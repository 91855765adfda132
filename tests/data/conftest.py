"""Small helpers for the dataset tests: tiny image files and the path to ../shared/data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write_image(path: Path, color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (12, 10)) -> Path:
    """A solid-colour image; the format follows the suffix (.jpg/.JPEG/.png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", size, color).save(path, fmt)
    return path


@pytest.fixture()
def make_image() -> Callable[..., Path]:
    return write_image


@pytest.fixture()
def shared() -> Callable[[str], Path]:
    """`shared("imagenet_sample")` -> that folder of ../shared/data, or skip saying it is absent."""

    def locate(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.exists():
            pytest.skip(f"real data {path} is absent (tests using ../shared/data skip without it)")
        return path

    return locate
