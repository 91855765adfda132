"""A Hugging Face folder whose image processor crops is cropped where transformers crops (audit 59, chinese 2).

transformers' ``center_crop`` (CLIPImageProcessor, ChineseCLIPImageProcessor) starts the crop at
``(size - crop) // 2``; torchvision's ``CenterCrop`` (OpenAI's and open_clip's reference) at
``round((size - crop) / 2)``, half to even. Where the resized long side exceeds the crop by 4k + 3 pixels the two
are a pixel apart, and clipforge used torchvision's for every model: a ChineseCLIPModel folder saved with
transformers 5's default processor (shortest edge + centre crop) got the shifted crop on 124 of the 1,000
ImageNet sample photos at 224 px (image features 2% off). The photos below are real ones whose margin is 4k + 3
at 32, 64 and 224 px (the tests assert it), so each of them fails under the old rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.api import load_model
from clipforge.image.geometry import crop_offsets, resized_size
from clipforge.weights.preprocess_cfg import PreprocessConfigError, validate_preprocess
from clipforge.weights.preprocessing import build_weights_preprocess

transformers = pytest.importorskip("transformers")

IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "imagenet_sample" / "images"
# found by scanning the sample's sizes (47 of 1,000 part at all of 32, 64 and 224 px): two landscape, one portrait
ODD = ["n03255030_dumbbell.JPEG", "n07831146_carbonara.JPEG", "n03692522_loupe.JPEG"]


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    if not IMAGES.is_dir():
        pytest.skip(f"the ImageNet sample is not at {IMAGES}")
    out = []
    for name in ODD:
        image = Image.open(IMAGES / name).convert("RGB")
        for side in (32, 64, 224):
            sides = resized_size(*image.size, side)
            assert any((s - side) // 2 != round((s - side) / 2) for s in sides), name
        out.append(image)
    return out


def _same_as_transformers(folder: Path, processor: object, photos: list[Image.Image]) -> None:
    loaded = load_model(folder, "cpu")
    side = loaded.preprocess.n_px
    for image in photos:
        ours = loaded.preprocess(image)
        theirs = torch.as_tensor(processor(images=image, return_tensors="pt")["pixel_values"][0])
        assert ours.shape == theirs.shape == (3, side, side)
        assert (ours - theirs).abs().max().item() < 1e-5, image.size
        # the fast path's crop-only resample (big pictures, draft decodes) cuts the same region
        fast = loaded.preprocess.normalize(loaded.preprocess._resized_pixels(image, crop_first=True))
        assert (fast - theirs).abs().max().item() < 0.1, image.size
    assert loaded.preprocess.crop_offset == "floor"


def test_a_chinese_clip_folder_with_transformers5_processor_crops_as_transformers(photos, tmp_path) -> None:
    from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip
    from clipforge.weights.cn_clip import save_chinese_hf

    torch.manual_seed(3)
    model = create_chinese_clip(chinese_clip_config("cn-ViT-B-16", vision_layers=1, text_num_hidden_layers=1,
                                                    image_resolution=64))
    folder = save_chinese_hf(model, tmp_path / "cn")
    (folder / "preprocessor_config.json").unlink()
    image = transformers.ChineseCLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    (folder / "processor_config.json").write_text(json.dumps({"image_processor": image.to_dict(),
                                                              "processor_class": "ChineseCLIPProcessor"}))
    _same_as_transformers(folder, transformers.ChineseCLIPImageProcessor.from_pretrained(str(folder)), photos)
    assert load_model(folder, "cpu").model.preprocess_cfg["crop_offset"] == "floor"


def test_a_clip_folder_save_hf_wrote_is_read_as_transformers_reads_it(photos, tmp_path) -> None:
    """save_hf writes CLIPImageProcessor (shortest edge + crop): transformers and clipforge now agree on it."""
    from clipforge.weights.hf import save_hf

    clip = load_model("random:test-vit-tiny", "cpu")
    folder = save_hf(clip.model, tmp_path / "clip")
    _same_as_transformers(folder, transformers.CLIPImageProcessor.from_pretrained(str(folder)), photos)


def test_openai_and_open_clip_weights_keep_torchvisions_rounding(photos) -> None:
    """Registry/OpenAI-style weights: torchvision's CenterCrop, pixel for pixel (and not transformers' crop)."""
    loaded = load_model("random:test-vit-tiny", "cpu")
    side = loaded.preprocess.n_px
    assert "crop_offset" not in (getattr(loaded.model, "preprocess_cfg", None) or {})
    assert loaded.preprocess.crop_offset == "round"
    for image in photos:
        width, height = resized_size(*image.size, side)
        resized = image.resize((width, height), Image.Resampling.BICUBIC)
        left, top = round((width - side) / 2), round((height - side) / 2)  # torchvision's CenterCrop
        reference = loaded.preprocess.normalize(np.asarray(resized.crop((left, top, left + side, top + side))))
        assert torch.equal(loaded.preprocess(image), reference), image.size
        floor = build_weights_preprocess(side, {"crop_offset": "floor"})(image)
        assert not torch.equal(floor, reference)  # these photos are where the two rules part


def test_the_field_is_checked_and_only_kept_where_it_matters() -> None:
    from clipforge.image.geometry import CROP_OFFSETS
    from clipforge.weights import preprocess_cfg

    assert preprocess_cfg.CROP_OFFSETS == CROP_OFFSETS
    assert "crop_offset" not in validate_preprocess({"crop_offset": "round"})  # torchvision's: the four fields
    assert "crop_offset" not in validate_preprocess({"crop_offset": "floor", "resize_mode": "squash"})  # no crop
    assert validate_preprocess({"crop_offset": "floor"})["crop_offset"] == "floor"
    with pytest.raises(PreprocessConfigError) as raised:
        validate_preprocess({"crop_offset": "ceil"})
    assert str(raised.value) == ("field 'crop_offset' must be one of round, floor (torchvision's or transformers' "
                                 "centre crop), got 'ceil'")
    assert crop_offsets(227, 224) == (0, 2) and crop_offsets(227, 224, "floor") == (0, 1)
    assert crop_offsets(229, 224, "floor") == (0, 2) == crop_offsets(229, 224)


def test_a_fine_tuned_copy_keeps_the_floor_crop(photos, tmp_path) -> None:
    """The field is saved with the weights (safetensors metadata), so a checkpoint trained from such a folder
    keeps transformers' crop."""
    from clipforge.weights.save import save_safetensors

    loaded = load_model("random:test-vit-tiny", "cpu")
    loaded.model.preprocess_cfg = validate_preprocess({"crop_offset": "floor"})
    path = save_safetensors(loaded.model, tmp_path / "tuned.safetensors")
    again = load_model(path, "cpu")
    assert again.model.preprocess_cfg["crop_offset"] == "floor" and again.preprocess.crop_offset == "floor"
