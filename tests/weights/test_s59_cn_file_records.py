"""A Chinese-CLIP safetensors file keeps what clipforge recorded in it (review of stop 50): a model trained from a
cropping ChineseCLIPModel folder came back squashed (`_finish`'s cn_clip default won over the file's
preprocessing), and a file recording zh, en came back as zh only."""

from __future__ import annotations

import torch

from clipforge.api import load_model
from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip
from clipforge.weights import save_safetensors
from clipforge.weights.cn_clip import OPENAI_MEAN, OPENAI_STD
from clipforge.zeroshot.languages import model_languages

CROP = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic", "resize_mode": "shortest",
        "crop_offset": "floor"}


def test_a_saved_chinese_clip_reloads_with_its_preprocessing_and_languages(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_chinese_clip(chinese_clip_config("cn-ViT-B-16", vision_layers=1, text_num_hidden_layers=1,
                                                    image_resolution=32))
    path = save_safetensors(model, tmp_path / "cn.safetensors", preprocess=CROP, languages=["zh", "en"])
    loaded = load_model(path, "cpu")
    assert loaded.model.preprocess_cfg == CROP
    assert model_languages(loaded) == ("zh", "en")
    bare = save_safetensors(model, tmp_path / "plain.safetensors")  # records nothing of its own: cn_clip's
    plain = load_model(bare, "cpu")
    assert plain.model.preprocess_cfg["resize_mode"] == "squash" and model_languages(plain) == ("zh",)
