"""A ChineseCLIPModel folder is preprocessed as its own image processor says (audit 57, families finding 4).

`cn_clip_load._finish` gave every Chinese-CLIP cn_clip's squash. A folder transformers 5's default
``ChineseCLIPProcessor`` saved (``processor_config.json``: shortest side 224 + centre crop) was squashed where
transformers resizes and crops (image-feature cosine 0.9955). The hub's OFA-Sys files (size {height, width},
``do_center_crop`` false) squash, and a folder without a processor file keeps cn_clip's transform.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clipforge.api import load_model
from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip
from clipforge.weights import CheckpointFormatError
from clipforge.weights.cn_clip import OPENAI_MEAN, OPENAI_STD, save_chinese_hf

transformers = pytest.importorskip("transformers")

SIDE = 64
CN_SQUASH = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic", "resize_mode": "squash"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A small Chinese-CLIP (ViT, one layer per tower, 64 px) as save_hf writes it (hub-shaped processor)."""
    torch.manual_seed(3)
    model = create_chinese_clip(chinese_clip_config("cn-ViT-B-16", vision_layers=1, text_num_hidden_layers=1,
                                                    image_resolution=SIDE))
    return save_chinese_hf(model, tmp_path_factory.mktemp("cn") / "saved")


def _folder(saved: Path, tmp_path: Path, processor: dict | None, name: str) -> Path:
    """`saved`'s weights and tokenizer; its image processor replaced by `processor` (None: no processor file)."""
    folder = tmp_path / name
    folder.mkdir()
    for file in saved.iterdir():
        if file.name != "preprocessor_config.json":
            (folder / file.name).symlink_to(file)
    if processor is not None:
        (folder / "processor_config.json").write_text(json.dumps({"image_processor": processor,
                                                                  "processor_class": "ChineseCLIPProcessor"}))
    return folder


def _images() -> list:
    """Noise images whose centre crops transformers and clipforge place alike (an even margin after the resize)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(1)
    return [Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8).numpy())
            for w, h in ((256, 128), (96, 192), (100, 100))]


def _same_pixels(folder: Path) -> None:
    loaded = load_model(folder, "cpu")
    processor = transformers.ChineseCLIPImageProcessor.from_pretrained(str(folder))
    for image in _images():
        ours = loaded.preprocess(image)
        theirs = torch.as_tensor(processor(images=image, return_tensors="pt")["pixel_values"][0])
        assert ours.shape == theirs.shape == (3, SIDE, SIDE)
        assert (ours - theirs).abs().max().item() < 1e-5, image.size


def test_a_transformers5_processor_folder_resizes_and_crops_as_transformers(saved, tmp_path) -> None:
    """ChineseCLIPProcessor's defaults (shortest_edge + do_center_crop), written by transformers 5's
    save_pretrained (processor_config.json only)."""
    image = transformers.ChineseCLIPImageProcessor(size={"shortest_edge": SIDE},
                                                   crop_size={"height": SIDE, "width": SIDE})
    folder = _folder(saved, tmp_path, image.to_dict(), "tf5")
    assert image.to_dict()["do_center_crop"] is True
    loaded = load_model(folder, "cpu")
    assert loaded.model.preprocess_cfg == {**CN_SQUASH, "resize_mode": "shortest", "crop_offset": "floor"}
    _same_pixels(folder)


def test_the_hub_shape_still_squashes(saved, tmp_path) -> None:
    """OFA-Sys's preprocessor_config.json (old feature_extractor_type, size {height, width}, no crop), and
    save_hf's own: squash, pixel for pixel transformers'."""
    hub = _folder(saved, tmp_path, None, "hub")
    (hub / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": SIDE, "do_center_crop": False, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "ChineseCLIPFeatureExtractor", "image_mean": list(OPENAI_MEAN),
        "image_std": list(OPENAI_STD), "resample": 3, "size": {"height": SIDE, "width": SIDE}}))
    for folder in (hub, saved):
        assert load_model(folder, "cpu").model.preprocess_cfg == CN_SQUASH
        _same_pixels(folder)


def test_a_folder_without_a_processor_keeps_cn_clips_transform(saved, tmp_path) -> None:
    folder = _folder(saved, tmp_path, None, "bare")
    assert load_model(folder, "cpu").model.preprocess_cfg == CN_SQUASH


def test_cn_arch_colon_folder_reads_the_processor_too(monkeypatch, tmp_path) -> None:
    """``cn-ARCH:PATH`` of a folder (an architecture registered for the test, as test_s56_cn_arch_path does)."""
    from clipforge.models import chinese_configs

    monkeypatch.setitem(chinese_configs.CN_TEXT_TOWERS, "test-bert-tiny", {
        "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128})
    monkeypatch.setitem(chinese_configs.CHINESE_CLIP_CONFIGS, "cn-test-tiny", {
        "embed_dim": 32, "image_resolution": 32, "vision_layers": 1, "vision_width": 64, "vision_patch_size": 16,
        "vision_head_width": 32, "text": "test-bert-tiny"})
    torch.manual_seed(0)
    saved = save_chinese_hf(create_chinese_clip("cn-test-tiny"), tmp_path / "saved")
    assert load_model(f"cn-test-tiny:{saved}", "cpu").model.preprocess_cfg == CN_SQUASH
    crop = _folder(saved, tmp_path, {"image_processor_type": "ChineseCLIPImageProcessor", "size": {
        "shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}, "crop")
    assert load_model(f"cn-test-tiny:{crop}", "cpu").model.preprocess_cfg == {**CN_SQUASH, "resize_mode": "shortest",
                                                                              "crop_offset": "floor"}


def test_a_processor_clipforge_cannot_reproduce_is_one_line(saved, tmp_path) -> None:
    folder = _folder(saved, tmp_path, {"image_processor_type": "ChineseCLIPImageProcessor", "size": {
        "shortest_edge": 2 * SIDE}, "crop_size": {"height": 2 * SIDE, "width": 2 * SIDE}}, "big")
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert str(raised.value) == (f"{folder / 'processor_config.json'} is not a usable image processor config: "
                                 f"field 'image_processor.size' gives {2 * SIDE} x {2 * SIDE} images, but the model takes "
                                 f"{SIDE} x {SIDE}")
