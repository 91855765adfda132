"""The export JSON's preprocessing is every step clipforge applies to a file, in order (audit 60, onnx 2 and 3).

It said size, resize, crop, interpolation, mean/std and ``"convert": "RGB"`` only: a pipeline following it skipped
the EXIF orientation (a phone photo came out rotated: top-1 flipped), clipped 16-bit greyscale to white (cos 0.75)
and, read as torchvision's order, resized palette/alpha files before converting them. Here a pipeline written from
the JSON's ``steps`` alone (PIL + numpy) must give clipforge's exact pixels (``draft=False``) on such files, and the
JSON must say that clipforge's default JPEG draft decode is not what the graphs' reference pixels are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from clipforge.cli.main import main

ORDER = ["decode", "exif_transpose", "to_8bit", "convert", "resize", "center_crop", "rescale", "normalize", "layout"]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx-pre")
    assert main(["export", "onnx", "--model", "test-vit-tiny", "--out", str(out), "--no-verify"]) == 0
    return out, json.loads((out / "clipforge_onnx.json").read_text())


def _photo(w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.uint8)


def _files(folder: Path) -> list[Path]:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display, as phones write
    Image.fromarray(_photo(60, 40)).save(folder / "exif6.jpg", exif=exif.tobytes(), quality=95)
    grey = (_photo(64, 48)[..., 0].astype(np.uint16) * 257).astype("<u2")
    Image.frombytes("I;16", (64, 48), grey.tobytes()).save(folder / "grey16.png")
    rgba = np.dstack([_photo(50, 70), (np.arange(50 * 70).reshape(70, 50) * 7 % 256).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    palette = Image.fromarray(_photo(45, 45)).quantize(16)
    palette.info["transparency"] = 3
    palette.save(folder / "palette.png", transparency=3)
    return [folder / n for n in ("exif6.jpg", "grey16.png", "alpha.png", "palette.png")]


def _json_pixels(path: Path, pre: dict) -> np.ndarray:
    """The JSON's steps, done with PIL and numpy only."""
    steps = {s["op"]: s for s in pre["steps"]}
    image = Image.open(path)
    image.seek(0)
    image = ImageOps.exif_transpose(image)  # exif_transpose
    if image.mode.startswith("I;16"):  # to_8bit: round(v * 255 / 65535)
        values = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.rint(values * 255 / 65535), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:  # convert, before resizing
        image = image.convert("RGBA")
    image = image.convert("RGB")
    size, resize = steps["resize"]["size"], steps["resize"]
    w, h = image.size
    target = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    assert resize["geometry"] == "shortest" and resize["interpolation"] == "bicubic"
    if target != image.size:
        image = image.resize(target, Image.Resampling.BICUBIC)
    assert steps["center_crop"]["offset"] == "round"
    left, top = int(round((target[0] - size) / 2.0)), int(round((target[1] - size) / 2.0))
    array = np.asarray(image.crop((left, top, left + size, top + size)), np.float32) / np.float32(255)
    mean, std = np.array(steps["normalize"]["mean"], np.float32), np.array(steps["normalize"]["std"], np.float32)
    return ((array - mean) / std).transpose(2, 0, 1)


def test_a_json_only_pipeline_gives_clipforges_pixels_on_exif_16bit_alpha_and_palette_files(export, tmp_path):
    from clipforge.api import load_model

    pre = export[1]["preprocessing"]
    assert [s["op"] for s in pre["steps"]] == ORDER
    assert "BEFORE resizing" in pre["steps"][3]["what"] and "65535" in pre["steps"][2]["what"]
    preprocess = load_model("test-vit-tiny", "cpu").preprocess
    preprocess.draft = False
    for path in _files(tmp_path):
        want = preprocess.load(path).numpy()
        np.testing.assert_array_equal(_json_pixels(path, pre), want, err_msg=path.name)
    # what the old JSON's fields alone gave (no EXIF step; 16-bit clipped by convert): other pixels
    unrotated = Image.open(tmp_path / "exif6.jpg")
    unrotated.getexif().clear()
    unrotated.save(tmp_path / "no_exif.jpg", quality=100)
    far = np.abs(_json_pixels(tmp_path / "no_exif.jpg", pre) - preprocess.load(tmp_path / "exif6.jpg").numpy())
    assert far.max() > 1.0
    assert np.asarray(Image.open(tmp_path / "grey16.png").convert("RGB")).mean() > 250  # clipped to white


def test_the_json_says_the_graphs_reference_pixels_are_the_exact_decode_not_clipforges_draft(export):
    pre = export[1]["preprocessing"]
    assert pre["jpeg_draft"] is False
    note = pre["jpeg_draft_note"]
    assert note.startswith("off: the graphs' reference pixels come from the full decode")
    assert "--exact-decode" in note and "2 x ceil(1.5 x image_size)" in note
