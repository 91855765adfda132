"""Parity with OpenAI's reference `clip/model.py` on identical random weights.

No real checkpoint can be downloaded here, so this is the proof that one will behave: the
reference builds each of the nine architectures, its state dict goes through our
`build_model` (shape inference + strict load) and both models see the same inputs (the two largest:
shapes and the strict load only, their siblings' numbers compared; see `SHAPES_ONLY`; the next three: numbers
at full width with fewer blocks, shapes at full depth; see `FEWER_BLOCKS`).
"""

from __future__ import annotations

import gc

import pytest
import torch

from clipforge.models import (
    OPENAI_MODELS,
    build_model,
    config_from_state_dict,
    create_model_from_config,
    get_config,
)
from clipforge.models.skeleton import skeleton

BATCH_ONE: set[str] = set()
SHAPES_ONLY = {"RN50x64": "RN50x16", "ViT-L/14@336px": "ViT-L/14"}
"""The two largest run no forward pass (their random initialisation and two forwards took ~35 s of the suite):
each is its sibling's code at other widths or another resolution, whose numbers are compared here (at full width
with fewer blocks, `FEWER_BLOCKS`), and
its own state dict is built and loaded strictly from the reference's shapes (`_shapes_load_strictly`)."""
FEWER_BLOCKS = {"ViT-L/14": {"vision_layers": 2, "transformer_layers": 2},
                "RN50x4": {"vision_layers": (2, 2, 2, 2), "transformer_layers": 2},
                "RN50x16": {"vision_layers": (2, 2, 2, 2), "transformer_layers": 2}}
"""Compared at full width, resolution, heads and context but two blocks per tower (per stage for the ResNet: its
first block, which downsamples, and a plain one), which is every distinct code path of the full model (the other
blocks repeat the same arithmetic on other weights); the full-depth state dict's shapes infer the full config and
load strictly (`_shapes_load_strictly`). Their full-depth random init and forwards took ~21 s of the suite; RN50 and
RN101 (the same blocks at other widths) and ViT-B/32 and ViT-B/16 still run at full depth."""


def _text_batch(batch: int, context: int = 77) -> torch.Tensor:
    """Random token ids with EOT (49407) at different positions, one row using all 77."""
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, 49406, (batch, context), generator=gen)
    tokens[:, 0] = 49406
    eot_positions = [context - 1, 9, 30, 4][:batch]
    for row, pos in enumerate(eot_positions):
        tokens[row, pos] = 49407
        tokens[row, pos + 1:] = 0
    return tokens


def _forward_recording(model, images, text):
    """`model(images, text)` plus the features its encode_image/encode_text returned inside it."""
    recorded = {}

    def recording(name, method):
        def wrapper(x):
            recorded[name] = method(x)
            return recorded[name]
        return wrapper

    model.encode_image = recording("image", model.encode_image)
    model.encode_text = recording("text", model.encode_text)
    logits = model(images, text)
    return recorded["image"], recorded["text"], logits


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _shapes_load_strictly(name: str, reference_model_module) -> None:
    """The reference's state dict shapes (built on the meta device, no memory) infer `name`'s config and load
    strictly into our model (weights of those shapes expanded from one value each)."""
    config = get_config(name)
    with torch.device("meta"):
        reference = reference_model_module.CLIP(**config)
    state_dict = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in reference.state_dict().items()}
    inferred = config_from_state_dict(state_dict)
    layers = config["vision_layers"]
    assert {**inferred, "vision_layers": inferred["vision_layers"]} == {
        **config, "vision_layers": tuple(layers) if isinstance(layers, list) else layers}
    # `build_model`'s strict load without its fp32 copy of every tensor (RN50x64's 1.7 GB took 8 s of the suite);
    # the copy and the rest of `build_model` run on the sibling's full weights in the test below
    ours = skeleton(lambda **c: create_model_from_config(c), **inferred)
    ours.load_state_dict(state_dict, strict=True, assign=True)
    assert not [name for name, t in (*ours.named_parameters(), *ours.named_buffers()) if t.is_meta]
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape)
                                                                         for k, v in state_dict.items()}


@pytest.mark.parametrize("name", OPENAI_MODELS)
def test_matches_reference_on_identical_weights(name: str, reference_model_module) -> None:
    if name in SHAPES_ONLY:
        assert SHAPES_ONLY[name] in OPENAI_MODELS and SHAPES_ONLY[name] not in SHAPES_ONLY  # its numbers compared
        _shapes_load_strictly(name, reference_model_module)
        return
    if name in FEWER_BLOCKS:
        _shapes_load_strictly(name, reference_model_module)
    config = {**get_config(name), **FEWER_BLOCKS.get(name, {})}
    torch.manual_seed(0)
    reference = reference_model_module.CLIP(**config).eval()
    state_dict = reference.state_dict()

    inferred = config_from_state_dict(state_dict)
    assert {**inferred, "vision_layers": inferred["vision_layers"]} == {
        **config, "vision_layers": tuple(config["vision_layers"]) if isinstance(config["vision_layers"], list)
        else config["vision_layers"]}

    ours = build_model(state_dict)  # strict=True inside
    batch = 1 if name in BATCH_ONE else 2
    resolution = config["image_resolution"]
    images = torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(2))
    text = _text_batch(batch)

    with torch.no_grad():
        # One forward pass per model; the towers' outputs are recorded on the way through.
        ref_image, ref_text, (ref_logits_image, ref_logits_text) = _forward_recording(reference, images, text)
        del reference, state_dict
        gc.collect()
        our_image, our_text, (our_logits_image, our_logits_text) = _forward_recording(ours, images, text)

    assert our_image.shape == (batch, config["embed_dim"])
    torch.testing.assert_close(_unit(our_image), _unit(ref_image), atol=1e-5, rtol=0)
    torch.testing.assert_close(_unit(our_text), _unit(ref_text), atol=1e-5, rtol=0)
    # raw features agree relative to their own scale
    assert (our_image - ref_image).abs().max() <= 1e-5 * ref_image.abs().max()
    assert (our_text - ref_text).abs().max() <= 1e-5 * ref_text.abs().max()
    torch.testing.assert_close(our_logits_image, ref_logits_image, atol=1e-5, rtol=0)
    torch.testing.assert_close(our_logits_text, ref_logits_text, atol=1e-5, rtol=0)
