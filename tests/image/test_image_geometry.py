"""torchvision's size and crop arithmetic, checked by hand and against a padded-numpy version."""

from __future__ import annotations

import numpy as np
import pytest

from clipforge.image.geometry import center_crop_array, crop_offsets, resized_size


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1000, 667), (335, 224)), ((667, 1000), (224, 335)), ((3, 500), (224, 37333)), ((500, 3), (37333, 224)),
     ((225, 224), (225, 224)), ((1, 1), (224, 224)), ((224, 224), (224, 224)), ((640, 480), (298, 224))],
)
def test_resized_size_hand_checked(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert resized_size(*size, 224) == expected


def test_resized_size_rejects_empty() -> None:
    with pytest.raises(ValueError, match="positive"):
        resized_size(0, 5, 224)


def test_crop_offsets_round_half_to_even() -> None:
    assert crop_offsets(225, 224) == (0, 0)  # round(0.5) == 0
    assert crop_offsets(227, 224) == (0, 2)  # round(1.5) == 2
    assert crop_offsets(229, 224) == (0, 2)  # round(2.5) == 2
    assert crop_offsets(335, 224) == (0, 56)  # round(55.5) == 56
    assert crop_offsets(220, 224) == (2, 0)
    assert crop_offsets(221, 224) == (1, 0)  # odd padding: the extra zero row goes after


def torchvision_center_crop(array: np.ndarray, crop: int) -> np.ndarray:
    h, w = array.shape[:2]
    pads = [(max(crop - h, 0) // 2, (max(crop - h, 0) + 1) // 2), (max(crop - w, 0) // 2, (max(crop - w, 0) + 1) // 2)]
    array = np.pad(array, pads + [(0, 0)] * (array.ndim - 2))
    h, w = array.shape[:2]
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return array[top : top + crop, left : left + crop]


@pytest.mark.parametrize("shape", [(5, 5, 3), (3, 9, 3), (9, 3), (2, 2, 3), (11, 6, 3), (8, 7), (1, 30, 3)])
def test_center_crop_pads_with_zeros_like_torchvision(shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(sum(shape)).integers(1, 256, size=shape, dtype=np.uint8)
    ours = center_crop_array(array, 6)
    assert ours.shape == (6, 6) + shape[2:]
    np.testing.assert_array_equal(ours, torchvision_center_crop(array, 6))
