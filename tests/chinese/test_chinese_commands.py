"""Chinese-CLIP in the commands: every task tokenizes with the model's own WordPiece tokenizer."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip
from clipforge.text.model_tokenizer import tokenize_for
from clipforge.text.wordpiece import tokenize_chinese

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model():
    from clipforge.weights.cn_clip_load import _finish

    torch.manual_seed(0)
    config = chinese_clip_config("cn-ViT-B-16", vision_layers=1, vision_width=64, image_resolution=32,
                                 text_num_hidden_layers=1)
    return _finish(create_chinese_clip(config))


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def test_tasks_use_the_models_tokenizer(model) -> None:
    assert torch.equal(tokenize_for(model, ["一只猫"]), tokenize_chinese(["一只猫"]))
    from clipforge.text import tokenize

    plain = torch.nn.Linear(1, 1)
    plain.context_length = 16
    assert torch.equal(tokenize_for(plain, ["一只猫"]), tokenize(["一只猫"], context_length=16, truncate=True))


def test_zero_shot_classifier_with_chinese_clip(model, tmp_path) -> None:
    from clipforge.zeroshot import ZeroShotClassifier

    classifier = ZeroShotClassifier(model, ["猫", "狗"], "simple", use_cache=False, progress=False)
    assert classifier.templates == ["一张{}的照片"]  # "simple" for Chinese labels is its Chinese twin
    with torch.no_grad():
        expected = _normalised(model.encode_text(tokenize_chinese(["一张猫的照片", "一张狗的照片"])))
    assert torch.allclose(classifier.class_embeddings.float().cpu(), expected, atol=1e-5)


def test_library_search_with_chinese_clip(model, tmp_path) -> None:
    from clipforge.image import build_preprocess
    from clipforge.library import Encoder, Library

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, colour in enumerate([(200, 20, 20), (20, 200, 20), (20, 20, 200)]):
        Image.new("RGB", (32, 32), colour).save(folder / f"颜色_{i}.png")
    library = Library(tmp_path / "lib", Encoder(model, build_preprocess(32), name="cn-test"))
    try:
        assert library.add(folder, workers=0, progress=False).added == 3
        hits = library.search("海边的日落", top_k=3)
        vectors = torch.from_numpy(library.encoder.encode_texts(["海边的日落"]))
        with torch.no_grad():
            direct = _normalised(model.encode_text(tokenize_chinese(["海边的日落"]))).float()
        assert len(hits) == 3 and torch.allclose(vectors, direct, atol=1e-5)
    finally:
        library.close()
