"""audit60 pyapi finding 5: common tensor mistakes at `encode_image` / `encode_text` are one line naming the shape.

Under no_grad the fast path's oneDNN kernels said "could not create a primitive descriptor for the convolution
forward propagation primitive" (1 or 4 channels) or "required rank 4 tensor to use channels_last format" (a 3-D
tensor), while the same call with grad gave torch's own message; now both say the same.
"""

from __future__ import annotations

import pytest
import torch

import clipforge
from clipforge.inference import enable_fast_forward

IMAGE = "encode_image expects a float tensor [batch, 3, H, W]; got "
TEXT = "encode_text expects token ids [batch, context] (an integer tensor from the model's tokenizer); got "


@pytest.fixture(scope="module", params=["clipforge-tiny", "test-vit-tiny"])
def fast_model(request) -> torch.nn.Module:
    if request.param == "clipforge-tiny":  # the shipped ResNet, on the fast path as `load` gives it
        return clipforge.load("clipforge-tiny", device="cpu")[0]
    torch.manual_seed(0)
    return enable_fast_forward(clipforge.create_model("test-vit-tiny").eval())


@pytest.mark.parametrize(("shape", "dtype", "said"), [
    ((1, 4, 32, 32), torch.float32, "[1, 4, 32, 32] (RGBA: convert to RGB first, e.g. Image.convert('RGB'))"),
    ((2, 1, 32, 32), torch.float32, "[2, 1, 32, 32] (grayscale: convert to RGB first)"),
    ((3, 32, 32), torch.float32, "[3, 32, 32] (one image without its batch dimension: image.unsqueeze(0))"),
    ((1, 3, 32, 32), torch.uint8, "[1, 3, 32, 32] of dtype torch.uint8 (preprocess gives normalised floats)"),
])
@pytest.mark.parametrize("grad", [False, True])
def test_image_mistakes_are_one_line_with_grad_on_and_off(fast_model, shape, dtype, said, grad):
    image = torch.zeros(shape, dtype=dtype)
    with torch.set_grad_enabled(grad), pytest.raises(ValueError) as info:
        fast_model.encode_image(image)
    assert str(info.value) == IMAGE + said


@pytest.mark.parametrize(("make", "said"), [
    (lambda t: t[0], "[77] (one text without its batch dimension: tokens.unsqueeze(0))"),
    (lambda t: t[None], "[1, 2, 77]"),
    (lambda t: t.float(), "[2, 77] of dtype torch.float32"),
])
@pytest.mark.parametrize("grad", [False, True])
def test_text_mistakes_are_one_line_with_grad_on_and_off(fast_model, make, said, grad):
    tokens = make(clipforge.tokenize(["a cat", "a dog"]))
    with torch.set_grad_enabled(grad), pytest.raises(ValueError) as info:
        fast_model.encode_text(tokens)
    assert str(info.value) == TEXT + said


def test_right_inputs_still_encode(fast_model):
    with torch.no_grad():
        assert fast_model.encode_image(torch.zeros(2, 3, 32, 32)).shape[0] == 2
        assert fast_model.encode_text(clipforge.tokenize(["a cat"])).shape[0] == 1
        assert fast_model.encode_text(clipforge.tokenize(["a cat"]).int()).shape[0] == 1


def test_texts_instead_of_tokens_are_named_under_no_grad_too() -> None:
    """The fast path read `.device` of the list first: AttributeError: 'list' object has no attribute 'device'."""
    model, _ = clipforge.load("clipforge-tiny")
    with torch.no_grad(), pytest.raises(TypeError) as error:
        model.encode_text(["a cat"])
    assert "tokenize first: clipforge.tokenize(texts)" in str(error.value)
