"""Decoding ahead for the weights' own preprocessing (`WeightsPreprocess`: squash, bilinear, transformers' floor crop).

`clipforge.data.prefetch` once keyed only `clipforge.image.Preprocess` itself, so a SigLIP model, a CLIPA model or a
Hugging Face folder never had its photos decoded ahead. These tests prove the crops it now decodes for them are
the reader's own, byte for byte, taken only under the very same key, and that a hint file is still checked field
by field. Fixtures and helpers are the prefetch tests' own (`tests/data/test_data_prefetch.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.data import prefetch
from clipforge.data.files import ImageFileReader
from clipforge.image import DEFAULT_MAX_PIXELS, Preprocess
from clipforge.weights.preprocessing import WeightsPreprocess
from tests.data import test_data_prefetch as prefetch_tests
from tests.data.test_data_prefetch import _cli, _counting_reads, _decoded_ahead, _same, _vectors

photos = prefetch_tests.photos  # the prefetch tests' fixtures: 3 photos + 2 bad files, 18 photos + 2 bad files
album = prefetch_tests.album


@pytest.fixture(scope="module")
def odd_margin(tmp_path_factory) -> Path:
    """350 x 320: resized to 35 x 32 for a 32 px crop, a margin of 3 that torchvision's round (1.5 -> 2) and
    transformers' floor (1) cut a pixel apart."""
    path = tmp_path_factory.mktemp("odd-margin") / "odd.png"
    Image.fromarray(np.random.default_rng(11).integers(0, 255, (320, 350, 3), dtype=np.uint8)).save(path)
    return path


VARIANTS = {
    "squash-bicubic": dict(interpolation="bicubic", resize_mode="squash"),
    "squash-bilinear": dict(interpolation="bilinear", resize_mode="squash"),
    "floor": dict(crop_offset="floor"),
    "floor-exact": dict(crop_offset="floor", draft=False),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_weights_preprocess_rebuilt_from_its_hint_decodes_the_readers_own_crops(
        name, photos, odd_margin, tmp_path, monkeypatch) -> None:
    files = [odd_margin, *photos]  # 4 photos, then an empty file and a text file
    reader_preprocess = WeightsPreprocess(32, mean=(0.5,) * 3, std=(0.5,) * 3, **VARIANTS[name])  # the model's
    assert not np.array_equal(reader_preprocess.pixels(odd_margin), Preprocess(32).pixels(odd_margin))
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path))
    prefetch.save_hint("embed", prefetch.pixel_key(reader_preprocess))  # what the last run's reader left
    rebuilt = prefetch.load_hint("embed")  # what `clipforge embed` decodes ahead with, before torch is imported
    assert type(rebuilt) is WeightsPreprocess and prefetch.pixel_key(rebuilt) == prefetch.pixel_key(reader_preprocess)
    plain = [ImageFileReader(files, reader_preprocess, hash=True)[i] for i in range(len(files))]
    ahead = _decoded_ahead(rebuilt, files)
    assert ahead.count() == 4
    monkeypatch.setattr(prefetch, "_ACTIVE", ahead)
    reads = _counting_reads(monkeypatch)
    taken = [ImageFileReader(files, reader_preprocess, hash=True)[i] for i in range(len(files))]
    assert all(_same(a, b) for a, b in zip(plain, taken, strict=True)), (plain, taken)  # pixels byte for byte
    assert reads == ["d-empty.jpg", "e-text.jpg"] and ahead.taken() == 4


def test_floor_and_round_crops_differ_and_neither_takes_the_others(odd_margin, monkeypatch) -> None:
    floor, round_ = WeightsPreprocess(32, crop_offset="floor"), WeightsPreprocess(32)
    assert not np.array_equal(floor.pixels(odd_margin), round_.pixels(odd_margin))
    ahead = _decoded_ahead(floor, [odd_margin])
    monkeypatch.setattr(prefetch, "_ACTIVE", ahead)
    reads = _counting_reads(monkeypatch)
    for other in (round_, Preprocess(32)):
        assert np.array_equal(ImageFileReader([odd_margin], other)[0].pixels.numpy(), other.pixels(odd_margin))
    assert reads == ["odd.png", "odd.png"] and ahead.taken() == 0


class _Subclass(WeightsPreprocess):
    """Same parameters as its parent, but a subclass: it may resize its own way."""


def _mutated(**attributes: object) -> WeightsPreprocess:
    preprocess = WeightsPreprocess(32, crop_offset="floor", resize_mode="squash")
    for name, value in attributes.items():
        setattr(preprocess, name, value)
    return preprocess


MISMATCHES = {
    "n_px": lambda: WeightsPreprocess(48, crop_offset="floor", resize_mode="squash"),
    "draft": lambda: WeightsPreprocess(32, crop_offset="floor", resize_mode="squash", draft=False),
    "exif": lambda: WeightsPreprocess(32, crop_offset="floor", resize_mode="squash", exif_transpose=False),
    "max_pixels": lambda: WeightsPreprocess(32, crop_offset="floor", resize_mode="squash", max_pixels=10_000_000),
    "interpolation": lambda: WeightsPreprocess(32, crop_offset="floor", resize_mode="squash",
                                               interpolation="bilinear"),
    "resize_mode": lambda: WeightsPreprocess(32, crop_offset="floor"),
    "crop_offset": lambda: WeightsPreprocess(32, resize_mode="squash"),
    "class": lambda: Preprocess(32),
    "subclass": lambda: _Subclass(32, crop_offset="floor", resize_mode="squash"),
    "resample changed on the instance": lambda: _mutated(resample=Image.Resampling.BILINEAR),
    "_target replaced on the instance": lambda: _mutated(_target=lambda width, height: (32, 32)),
}


def test_a_key_that_differs_in_any_one_parameter_is_never_taken(photos, monkeypatch) -> None:
    base = WeightsPreprocess(32, crop_offset="floor", resize_mode="squash")
    assert prefetch.pixel_key(base) == ("WeightsPreprocess", 32, True, True, DEFAULT_MAX_PIXELS, "bicubic", "squash",
                                        "floor")
    ahead = _decoded_ahead(base, photos[:3])
    assert ahead.count() == 3
    monkeypatch.setattr(prefetch, "_ACTIVE", ahead)
    reads = _counting_reads(monkeypatch)
    for name, build in MISMATCHES.items():
        other = build()
        assert prefetch.pixel_key(other) != prefetch.pixel_key(base), name
        out = [ImageFileReader(photos[:3], other)[i] for i in range(3)]
        assert all(np.array_equal(item.pixels.numpy(), other.pixels(path)) for item, path in zip(
            out, photos[:3], strict=True)), name
    assert len(reads) == 3 * len(MISMATCHES) and ahead.taken() == 0
    for name in ("subclass", "resample changed on the instance", "_target replaced on the instance"):
        assert prefetch.pixel_key(MISMATCHES[name]()) is None, name  # nor decoded ahead for itself
    with pytest.raises(ValueError, match="only clipforge.image.Preprocess and the weights' WeightsPreprocess"):
        prefetch.Prefetch(MISMATCHES["subclass"](), 4)


GOOD = ["WeightsPreprocess", 224, True, True, 1_000_000, "bilinear", "squash", "floor"]
TAMPERED = [
    *([*GOOD[:1], value, *GOOD[2:]] for value in (8, 5000, "224", 224.0, True, None)),  # n_px
    *([*GOOD[:2], value, *GOOD[3:]] for value in ("yes", 1, None)),  # draft
    *([*GOOD[:3], value, *GOOD[4:]] for value in (0, None)),  # exif
    *([*GOOD[:4], value, *GOOD[5:]] for value in (None, 0, -5, True, 1.5, DEFAULT_MAX_PIXELS + 1, 10 ** 30)),  # limit
    *([*GOOD[:5], value, *GOOD[6:]] for value in ("lanczos", "nearest", 3, None)),  # interpolation
    *([*GOOD[:6], value, GOOD[7]] for value in ("stretch", None, ["squash"])),  # resize mode
    *([*GOOD[:7], value] for value in ("ceil", None, 0, {"x": 1})),  # crop offset
    ["Evil", *GOOD[1:]], ["Preprocess", *GOOD[1:]], GOOD[:5], [*GOOD, "extra"], GOOD[:7], [], {"key": GOOD}, 7,
]


def test_a_tampered_hint_is_refused_field_by_field_and_both_good_forms_load(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path))
    hints = tmp_path / "prefetch-hints.json"
    for bad in TAMPERED:
        hints.write_text(json.dumps({"embed": bad}))
        assert prefetch.load_hint("embed") is None, bad
    hints.write_text(json.dumps({"embed": GOOD}))
    loaded = prefetch.load_hint("embed")
    assert type(loaded) is WeightsPreprocess and prefetch.pixel_key(loaded) == tuple(GOOD)
    assert (loaded.max_pixels, loaded.interpolation, loaded.resize_mode, loaded.crop_offset) == (
        1_000_000, "bilinear", "squash", "floor")
    old = ["Preprocess", 224, False, True, 1_000_000]  # what every hint file held before
    hints.write_text(json.dumps({"embed": old}))
    assert type(prefetch.load_hint("embed")) is Preprocess
    assert prefetch.pixel_key(prefetch.load_hint("embed")) == tuple(old)


def test_a_squash_models_second_embed_decodes_ahead_with_the_same_embeddings(album, tmp_path) -> None:
    """test-siglip-tiny's preprocessing is SigLIP's squash resize (a `WeightsPreprocess`), as its real weights'."""
    cache = tmp_path / "cache"
    runs = {}
    for name in ("first", "second"):
        done = _cli(["embed", str(album), "--model", "test-siglip-tiny", "--out", str(tmp_path / name), "--float32",
                     "--quiet"], cache)
        assert done.returncode == 0, done.stderr
        runs[name] = done.stderr
    assert "decoded ahead" not in runs["first"]
    assert "decoded ahead: 18 photos before the reader started (32 px crops), 18 taken by the reader" in runs["second"]
    assert json.loads((cache / "prefetch-hints.json").read_text()).popitem()[1][0] == "WeightsPreprocess"
    first, second = _vectors(tmp_path / "first"), _vectors(tmp_path / "second")
    assert sorted(first) == sorted(second) == [f"p{i:02d}.png" for i in range(18)]
    assert all(np.array_equal(first[k], second[k]) for k in first)


def test_rebuilding_a_weights_preprocess_from_its_hint_never_imports_torch() -> None:
    """`load_hint` runs before torch is imported (that is the whole point): the weights' module must stay torch-free."""
    import subprocess
    import sys

    probe = (f"import sys; from clipforge.data import prefetch; p = prefetch._preprocess_from_key({GOOD!r}); "
             "print(type(p).__name__, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=prefetch_tests.ROOT, timeout=60)
    assert done.stdout.split() == ["WeightsPreprocess", "False"], done.stderr
