"""Every place handed a model without a preprocess uses the preprocessing its weights record
(`model.preprocess_cfg`), not OpenAI's: weights trained with Inception mean/std (open_clip's
ViT-L-14 laion2b_s32b_b82k) would otherwise give silently wrong features in some commands."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

INCEPTION = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "resize_mode": "shortest"}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """test-vit-tiny saved with Inception mean/std in its metadata, loaded back through the one loader."""
    from clipforge.api import load_model
    from clipforge.models import create_model_from_config, get_config
    from clipforge.weights import save_safetensors

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "inception.safetensors"
    save_safetensors(create_model_from_config(get_config("test-vit-tiny")), path, preprocess=INCEPTION)
    return load_model(str(path), "cpu")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "p.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(path)
    return path


def test_the_loader_and_every_fallback_agree_on_the_weights_preprocessing(saved_model, photo) -> None:
    from clipforge.data.files import encode_files
    from clipforge.inference.encoder import BatchEncoder
    from clipforge.library import Encoder
    from clipforge.zeroshot import ZeroShotClassifier

    model = saved_model.model
    assert model.preprocess_cfg["mean"] == INCEPTION["mean"]
    assert saved_model.preprocess.mean == (0.5, 0.5, 0.5)
    assert Encoder(model).preprocess.mean == (0.5, 0.5, 0.5)
    assert BatchEncoder(model).normalizer.mean == (0.5, 0.5, 0.5)
    assert ZeroShotClassifier(model, ["a", "b"], "a photo of a {}.", progress=False).preprocess.mean == (0.5, 0.5, 0.5)

    # And the numbers: the reader crops, the encoder normalises; its default is Inception's, not OpenAI's.
    from clipforge.image import Preprocess, build_preprocess

    default = encode_files([photo], BatchEncoder(model, "fp32"), workers=0).vectors
    inception = Preprocess(32, mean=INCEPTION["mean"], std=INCEPTION["std"])
    explicit = encode_files([photo], BatchEncoder(model, "fp32", normalizer=inception), workers=0).vectors
    openai = encode_files([photo], BatchEncoder(model, "fp32", normalizer=build_preprocess(32)), workers=0).vectors
    np.testing.assert_allclose(default, explicit, atol=1e-6)
    assert not np.allclose(default, openai, atol=1e-3)
