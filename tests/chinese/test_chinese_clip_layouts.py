"""Chinese-CLIP weights in both published layouts load through the one loader; save_hf folders load in transformers."""

from __future__ import annotations

import pytest
import torch

from clipforge.api import load_model
from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip
from clipforge.text.wordpiece import tokenize_chinese
from clipforge.weights.cn_clip import CN_CLIP_WEIGHTS, save_chinese_hf

pytest.importorskip("transformers")

TEXTS = ["一只猫", "海边的日落", "两只狗在草地上"]


def _small() -> torch.nn.Module:
    torch.manual_seed(3)
    return create_chinese_clip(chinese_clip_config("cn-ViT-B-16", vision_layers=1, text_num_hidden_layers=1,
                                                   image_resolution=64))


def _features(model, image, text):
    with torch.no_grad():
        return model.encode_image(image), model.encode_text(text)


def test_cn_clip_checkpoint_file_loads(tmp_path) -> None:
    model = _small()
    state = {f"module.{k}": v.half() for k, v in model.state_dict().items()}  # as cn_clip saves: fp16, DDP names
    state["module.bert.pooler.dense.weight"] = torch.zeros(768, 768, dtype=torch.half)  # theirs has a pooler
    path = tmp_path / "clip_cn_small.pt"
    torch.save({"epoch": 1, "step": 10, "name": "x", "state_dict": state}, path)
    loaded = load_model(str(path), device="cpu")
    assert loaded.model.languages == ("zh",) and loaded.weights == str(path.resolve())
    image, text = torch.randn(2, 3, 64, 64), tokenize_chinese(TEXTS)
    model.half().float()  # the same fp16 rounding the file holds
    for ours, ref in zip(_features(loaded.model, image, text), _features(model, image, text), strict=True):
        assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6)
    # squash resize, OpenAI mean/std, as cn_clip's image_transform
    assert loaded.model.preprocess_cfg["resize_mode"] == "squash"


def test_save_hf_folder_loads_in_transformers_and_back(tmp_path) -> None:
    from transformers import ChineseCLIPModel, ChineseCLIPProcessor

    from clipforge.weights.hf import save_hf

    model = _small()
    folder = save_hf(model, tmp_path / "hf")  # the one save_hf dispatches Chinese-CLIP to save_chinese_hf
    reference = ChineseCLIPModel.from_pretrained(folder).eval()
    processor = ChineseCLIPProcessor.from_pretrained(folder)
    batch = processor(text=TEXTS, padding="max_length", max_length=52, return_tensors="pt")
    assert torch.equal(batch["input_ids"], tokenize_chinese(TEXTS))  # the processor tokenizes as we do
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=image)
        logits = model(image, tokenize_chinese(TEXTS))[0]
    assert ((out.logits_per_image - logits).norm() / logits.norm()).item() < 1e-5
    back = load_model(str(folder), device="cpu").model  # the transformers layout through the one loader
    for ours, ref in zip(_features(back, image, tokenize_chinese(TEXTS)),
                         _features(model, image, tokenize_chinese(TEXTS)), strict=True):
        assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_registry_entries_and_random_names() -> None:
    assert set(CN_CLIP_WEIGHTS) == {"cn-RN50", "cn-ViT-B-16", "cn-ViT-L-14", "cn-ViT-L-14-336", "cn-ViT-H-14"}
    entry = CN_CLIP_WEIGHTS["cn-ViT-B-16"]
    assert entry.sources()[0].url.endswith("/OFA-Sys/chinese-clip-vit-base-patch16/resolve/main/clip_cn_vit-b-16.pt")
    # downloads: tests/chinese/test_chinese_registry.py (a local hub)
    assert entry.resize_mode == "squash" and entry.sha256 is None  # the hub's announced sha256 is checked
    loaded = load_model("random:cn-RN50", device="cpu")
    assert loaded.weights == "random (seed 0)" and loaded.model.image_size == 224
    assert loaded.model.tokenizer("一只猫").shape == (1, 52)


def test_saved_folder_runs_in_transformers_pipeline(tmp_path) -> None:
    from PIL import Image
    from transformers import pipeline

    model = _small()
    folder = save_chinese_hf(model, tmp_path / "hf")
    classify = pipeline("zero-shot-image-classification", model=str(folder), device="cpu")
    picture = Image.new("RGB", (80, 60), (200, 30, 30))
    out = classify(picture, candidate_labels=["猫", "狗"], hypothesis_template="一张{}的照片")
    assert {o["label"] for o in out} == {"猫", "狗"} and abs(sum(o["score"] for o in out) - 1) < 1e-4
    from clipforge.weights.cn_clip_load import _finish
    from clipforge.weights.preprocessing import preprocess_for

    _finish(model)
    pixels = preprocess_for(model, draft=False)(picture).unsqueeze(0)
    with torch.no_grad():
        probs = model(pixels, tokenize_chinese(["一张猫的照片", "一张狗的照片"]))[0].softmax(-1)[0]
    ours = {"猫": probs[0].item(), "狗": probs[1].item()}
    assert all(abs(o["score"] - ours[o["label"]]) < 1e-4 for o in out), (out, ours)
