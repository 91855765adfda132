"""Shape and dtype checks at a model's public `encode_image` / `encode_text`: one line naming the expected shape.

Why here and not left to torch: the inference fast path (`clipforge.inference`) runs packed oneDNN kernels under
`no_grad`, and a common tensor mistake reached them as gibberish ("could not create a primitive descriptor for the
convolution forward propagation primitive", "required rank 4 tensor to use channels_last format", "too many indices
for tensor of dimension 3"), while the same call with grad on gave torch's own message. The check runs before either
path, so the message is the same with grad on and off. Only attributes are read (ndim, shape, dtype): no data is
touched and nothing is synchronised with a GPU; a trace (ONNX export, TorchScript) skips them (its shapes are
the example's, recorded as constants).

Mistakes it names: a grayscale (1 channel) or RGBA (4 channel) image, an image without its batch dimension
(``[3, H, W]``: ``image.unsqueeze(0)``), integer pixels, images of another size than the model reads (a batch made
by another model's preprocess: clipforge-tiny reads 32x32, most others 224x224), token ids without their batch
dimension (``[77]``), a batch of tokenized batches (``[1, 2, 77]``), float "token ids", and a list of strings instead
of tokens.

The size is the image tower's own (`input_resolution`; `check_image_batch`'s `tower`), read as the tower reads it:
what gives its grid of features is its size. A ViT's grid is a side // its patch (a few extra pixels are left
unread by the strided convolution, as open_clip's, timm's and SigLIP-384's 378-of-384 pixels are), a ResNet's a
side halved by its stride-2 stem (rounded up) then by 16 (an average pool and three strided stages). Another grid
failed deep inside with "The size of tensor a (50) must match the size of tensor b (2)" (audit 65 citizen #1).
"""

from __future__ import annotations

from typing import Any

import torch

from clipforge.errors import UserError

__all__ = ["TokensError", "check_image_batch", "check_token_batch", "check_tokens_fit"]


def _shape(x: torch.Tensor) -> str:
    return "[" + ", ".join(str(int(n)) for n in x.shape) + "]"


def _grid(tower: torch.nn.Module, side: int) -> int:
    """Rows (or columns) of features `tower` makes of `side` pixels (module docstring)."""
    patch = getattr(tower, "patch_size", None)
    return side // int(patch) if patch else (side + 1) // 2 // 16  # a ViT's patches; else a ModifiedResNet


def check_image_batch(image: Any, what: str = "encode_image", channels: int = 3,
                      tower: torch.nn.Module | None = None) -> None:
    """Raise a ValueError (TypeError for a non-tensor) unless `image` is a float tensor [batch, channels, H, W] and,
    given the image `tower`, of the size it reads: its `input_resolution` or another of the same grid (module
    docstring), in the words the towers' own check uses (`layers.check_image_grid`, the fast ViT's)."""
    if torch.jit.is_tracing():  # a trace (ONNX, TorchScript) would record the comparison: its input is fixed
        return
    expected = f"{what} expects a float tensor [batch, {channels}, H, W]"
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{expected}; got {type(image).__name__} (preprocess images first: "
                        "torch.stack([preprocess(im) for im in images]))")
    if image.ndim != 4 or image.shape[1] != channels:
        hint = ""
        if image.ndim == 3 and image.shape[0] == channels:
            hint = " (one image without its batch dimension: image.unsqueeze(0))"
        elif image.ndim == 4 and image.shape[1] in (1, 4):
            hint = (" (grayscale: convert to RGB first)" if image.shape[1] == 1
                    else " (RGBA: convert to RGB first, e.g. Image.convert('RGB'))")
        raise ValueError(f"{expected}; got {_shape(image)}{hint}")
    if not image.is_floating_point():
        raise ValueError(f"{expected}; got {_shape(image)} of dtype {image.dtype} (preprocess gives normalised floats)")
    side = getattr(tower, "input_resolution", None)
    if side is not None:
        height, width = int(image.shape[2]), int(image.shape[3])
        grid = _grid(tower, int(side))
        if _grid(tower, height) != grid or _grid(tower, width) != grid:
            raise ValueError(f"expected images of {side}x{side}, got {height}x{width}")


def check_token_batch(text: Any, what: str = "encode_text") -> None:
    """Raise a ValueError (TypeError for a non-tensor) unless `text` is an integer tensor [batch, context]."""
    if torch.jit.is_tracing():
        return
    expected = f"{what} expects token ids [batch, context] (an integer tensor from the model's tokenizer)"
    if not isinstance(text, torch.Tensor):
        hint = " (tokenize first: clipforge.tokenize(texts))" if isinstance(text, (str, list, tuple)) else ""
        raise TypeError(f"{expected}; got {type(text).__name__}{hint}")
    if text.ndim != 2:
        hint = " (one text without its batch dimension: tokens.unsqueeze(0))" if text.ndim == 1 else ""
        raise ValueError(f"{expected}; got {_shape(text)}{hint}")
    if text.is_floating_point() or text.is_complex() or text.dtype == torch.bool:
        raise ValueError(f"{expected}; got {_shape(text)} of dtype {text.dtype}")


class TokensError(UserError, ValueError):
    """Token ids a model cannot read (from another tokenizer): the message says how to tokenize for it."""


def check_tokens_fit(text: torch.Tensor, length: int, context: int, vocab: int) -> None:
    """Raise `TokensError` unless a text tower of `context` positions and `vocab` ids can read `text`, of which it
    runs the first `length` positions. Ids from another tokenizer (OpenAI's 77-position BPE given to a 16-position
    model, ids past the vocabulary) failed deep inside with "The size of tensor a (22) must match the size of
    tensor b (16)" or "index out of range in self"."""
    if not text.numel():
        return
    top = int(text.max().item())
    if length > context or top >= vocab or int(text.min().item()) < 0:
        raise TokensError(
            f"the text tokens do not fit this model ({length} positions and ids up to {top}; it reads "
            f"{context} positions of ids below {vocab}): tokenize with the model's own "
            "tokenizer, clipforge.load_model(NAME).tokenize(texts) or clipforge.get_tokenizer(NAME)(texts)")
