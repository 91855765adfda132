"""An ONNX export of a Hugging Face folder whose processor crops says where its centre crop starts (stop 50: the
crop offset of such folders became transformers' floor; the export's JSON still described torchvision's rounding,
so a user following it cut 12% of photos a pixel off the model's own preprocessing)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from PIL import Image

from clipforge.inference.onnx_usage import usage_meta
from clipforge.weights.preprocessing import WeightsPreprocess


def _meta(preprocess) -> dict:
    loaded = SimpleNamespace(preprocess=preprocess, tokenizer=None, scoring=None, model=None)
    from clipforge.api import load_model

    real = load_model("test-vit-tiny", "cpu")
    loaded.tokenizer, loaded.scoring = real.tokenizer, real.scoring
    return usage_meta(loaded, real.model)[0]["preprocessing"]


def test_the_recorded_offset_is_the_one_the_model_crops_at() -> None:
    floor = _meta(WeightsPreprocess(32, crop_offset="floor"))
    assert floor["crop_offset"] == "floor" and "((side - 32) // 2)" in floor["resize"]
    plain = _meta(WeightsPreprocess(32))
    assert plain["crop_offset"] == "round" and "CenterCrop(32)" in plain["resize"]
    assert _meta(WeightsPreprocess(32, resize_mode="squash"))["crop_offset"] is None
    # the JSON's rule, followed with PIL, gives the model's own pixels on an odd margin (35 -> 32: 1.5)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (32, 35, 3), dtype=np.uint8))
    left = (35 - 32) // 2
    ours = WeightsPreprocess(32, crop_offset="floor", draft=False).pixels(photo)
    assert np.array_equal(ours, np.asarray(photo)[:, left:left + 32])
    assert not np.array_equal(WeightsPreprocess(32, draft=False).pixels(photo), ours)  # torchvision's: 2, not 1
