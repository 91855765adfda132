"""Weights changed through `.data` (an EMA, a model soup, weight averaging written the old way) reach the fast path.

`p.data.copy_(new)` and `p.data.mul_(d).add_(q.data, alpha=1 - d)` change a parameter without moving its version
counter, and the packed copies are keyed by it: the model kept computing with its old weights (audit 60, pyapi 1:
`encode_image` off by 143.8 with a state dict equal to a fresh load's; a ZeroShotClassifier cached class embeddings
of the old weights under the new weights' fingerprint). The packed copies now also check a few elements of
every source parameter, so such updates rebuild them; the result equals a model loaded with the new weights.
"""

from __future__ import annotations

import pytest
import torch

from clipforge.api import load_model
from clipforge.models import create_model_from_config, get_config


def _plain(name: str, state: dict) -> torch.nn.Module:
    plain = create_model_from_config(get_config(name)).eval()
    plain.load_state_dict(state)
    return plain


def _inputs(model) -> tuple[torch.Tensor, torch.Tensor]:
    r = model.visual.input_resolution
    images = torch.randn(2, 3, r, r, generator=torch.Generator().manual_seed(3))
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, 0], tokens[0, 1:4], tokens[1, 1:7] = 49406, 500, 600
    tokens[0, 4], tokens[1, 7] = 49407, 49407
    return images, tokens


@pytest.mark.parametrize("name", ["test-vit-tiny", "test-rn-tiny"])
@pytest.mark.parametrize("update", ["copy", "ema"])
def test_updates_through_data_reach_the_fast_path(name: str, update: str) -> None:
    model = load_model(name, "cpu").model.eval()
    other = create_model_from_config(get_config(name))  # other random weights
    images, tokens = _inputs(model)
    with torch.no_grad():
        model.encode_image(images), model.encode_text(tokens)  # the packed copies of the old weights
        for p, q in zip(model.parameters(), other.parameters(), strict=True):
            if update == "copy":
                p.data.copy_(q.data)
            else:
                p.data.mul_(0.5).add_(q.data, alpha=0.5)
        reference = _plain(name, {k: v.clone() for k, v in model.state_dict().items()})
        torch.testing.assert_close(model.encode_image(images), reference.encode_image(images), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.encode_text(tokens), reference.encode_text(tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("between", ["nothing", "a conversion that changes nothing"])
def test_unchanged_weights_keep_their_packed_copies(between: str) -> None:
    """Not rebuilt on every call; nor after `model.to("cpu")` before each batch (a common habit), which emptied
    every cache so that each call packed its weights again (review: encode_image of one image 3.9 -> 16.7 ms)."""
    model = load_model("test-vit-tiny", "cpu").model.eval()
    images, _ = _inputs(model)
    block = model.visual.transformer.resblocks[0]
    with torch.no_grad():
        model.encode_image(images)
        packed = block._cf_packed(torch.float32, block.fused)
        if between != "nothing":
            model.to("cpu")
            model.float()
        model.encode_image(images)
        assert block._cf_packed(torch.float32, block.fused) is packed


@pytest.mark.parametrize("convert", ["half", "bfloat16", "to_double"])
def test_a_conversion_drops_the_packed_copies_and_the_weights_they_hold(convert: str) -> None:
    """`.half()` / `.to(...)` gives every parameter new storage: the packed copies of the old weights (and the probe
    views, which hold the old storage itself) were kept for ever by entries no call would use again (review: 22 of
    clipforge-tiny's 35 MB of fp32 weights stayed after `.half()`). A conversion empties every cache."""
    from clipforge.inference._packing import InferenceModule

    model = load_model("test-vit-tiny", "cpu").model.eval()
    images, _ = _inputs(model)
    with torch.no_grad():
        model.encode_image(images)
    cached = [m for m in model.modules() if isinstance(m, InferenceModule) and m.__dict__.get("_cf_cache")]
    assert cached  # the fast path packed its weights
    if convert == "to_double":
        model.to(torch.float64)
    else:
        getattr(model, convert)()
    assert not [m for m in model.modules() if isinstance(m, InferenceModule) and m.__dict__.get("_cf_cache")]
