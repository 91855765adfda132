"""audit65 citizen finding 1: an image batch of another size at `encode_image` is one ValueError naming the model's
input resolution, for every family the loader builds, with grad on and off.

A ResNet (clipforge-tiny, the shipped default, reads 32x32) given a 224x224 batch made by another model's preprocess
failed 11 frames deep with torch's "The size of tensor a (50) must match the size of tensor b (2)", on the plain and
the fast path; OpenAI's ViT said so only on the fast path (no grad). `tensor_checks.check_image_batch` now knows the
tower's resolution and its grid: what a tower reads as its own grid (extra pixels its strided convolution leaves
unread, as the reference does) still encodes.
"""

from __future__ import annotations

import pytest
import torch

import clipforge
from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip


def _chinese(arch: str, **vision: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_chinese_clip(chinese_clip_config(
        arch, embed_dim=32, text_num_hidden_layers=1, text_hidden_size=64, text_num_attention_heads=1,
        text_intermediate_size=128, **vision))


_BUILDERS = {  # every image tower the loader builds, tiny: (model, whether it reads a few extra pixels on both paths)
    "clipforge-tiny": lambda: clipforge.load_model("clipforge-tiny").model,  # ModifiedResNet, fast path
    "test-rn-tiny": lambda: clipforge.load_model("random:test-rn-tiny").model,  # ModifiedResNet at 64
    "test-vit-tiny": lambda: clipforge.load_model("random:test-vit-tiny").model,  # OpenAI's ViT, fast path
    "test-siglip-tiny": lambda: clipforge.load_model("random:test-siglip-tiny").model,  # MAP head (SigLIP)
    "test-clipa-tiny": lambda: clipforge.load_model("random:test-clipa-tiny").model,  # mean of patches (CLIPA)
    "test-xlmr-tiny": lambda: clipforge.load_model("random:test-xlmr-tiny").model,  # a transformers text tower
    "cn-vit": lambda: _chinese("cn-ViT-B-16", vision_layers=1, vision_width=64, image_resolution=32),
    "cn-rn": lambda: _chinese("cn-RN50", vision_layers=[1, 1, 1, 1], vision_width=16, image_resolution=64),
}


@pytest.fixture(scope="module", params=list(_BUILDERS))
def model(request) -> torch.nn.Module:
    if request.param == "test-xlmr-tiny":
        pytest.importorskip("transformers")
    return _BUILDERS[request.param]()


@pytest.mark.parametrize("grad", [False, True])
def test_another_size_is_one_line_naming_the_resolution(model, grad) -> None:
    side = int(model.visual.input_resolution)
    for shape in ((1, 3, 2 * side, 2 * side), (2, 3, side, 2 * side), (0, 3, 224, 224), (1, 3, side // 2, side)):
        with torch.set_grad_enabled(grad), pytest.raises(ValueError) as error:
            model.encode_image(torch.zeros(shape))
        assert type(error.value) is ValueError
        assert str(error.value) == f"expected images of {side}x{side}, got {shape[2]}x{shape[3]}"


@pytest.mark.parametrize("grad", [False, True])
def test_the_resolution_and_its_own_grid_still_encode(model, grad) -> None:
    side = int(model.visual.input_resolution)
    with torch.set_grad_enabled(grad):
        assert tuple(model.encode_image(torch.zeros(2, 3, side, side)).shape)[0] == 2
        assert tuple(model.encode_image(torch.zeros(0, 3, side, side)).shape)[0] == 0
        fast_vit = not grad and type(model.visual).__name__ == "InferenceVisionTransformer"
        if not fast_vit:  # (OpenAI's fast ViT takes its resolution exactly: its own check, same words)
            # one pixel more: the same grid (the reference's strided convolution leaves it unread), as before
            assert tuple(model.encode_image(torch.zeros(1, 3, side + 1, side + 1)).shape)[0] == 1


def test_the_check_without_a_tower_knows_no_size() -> None:
    """Callers that know no model (`evaluate.features`) keep the shape and dtype checks only."""
    from clipforge.models.tensor_checks import check_image_batch

    check_image_batch(torch.zeros(1, 3, 17, 99))
    with pytest.raises(ValueError, match=r"^expected images of 32x32, got 17x99$"):
        check_image_batch(torch.zeros(1, 3, 17, 99), tower=clipforge.load_model("clipforge-tiny").model.visual)
