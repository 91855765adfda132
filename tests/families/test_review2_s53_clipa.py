"""Review of the CLIPA family (session 53): what the loader reads as CLIPA, and images of another size.

- `config_from_state_dict` read every class-token ViT without ``visual.ln_pre`` as CLIPA's avg-pool tower. An
  OpenAI file that lost its ``ln_pre`` tensors then loaded silently (image tower averaged, text tower OpenAI's)
  where it was refused naming the missing keys; a CLIPA of no registered shape got OpenAI's causal text tower.
  CLIPA is now read only where a registered CLIPA architecture has the shapes.
- A CLIPA image tower given images of another size failed deep inside ("The size of tensor a (65) must match
  the size of tensor b (17)"), on the plain model and the fast path alike: now one line naming both sizes.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

import clipforge
from clipforge.inference.precision import prepare
from clipforge.models import config_from_state_dict, create_model_from_config, get_config
from clipforge.weights.errors import CheckpointFormatError


def _state(name: str, **changes: object) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model_from_config({**get_config(name), **changes}).state_dict()


def test_an_openai_file_without_ln_pre_is_refused_naming_it_not_read_as_clipa(tmp_path: Path) -> None:
    damaged = {k: v for k, v in _state("test-vit-tiny").items() if not k.startswith("visual.ln_pre.")}
    assert "vision_pool" not in config_from_state_dict(damaged)
    torch.save(damaged, tmp_path / "damaged.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the plain file's "assumed quick_gelu"
        with pytest.raises(
            CheckpointFormatError, match=r'Missing key\(s\) in state_dict: "visual\.ln_pre\.weight"'
        ):
            clipforge.load(str(tmp_path / "damaged.pt"), device="cpu")


def test_a_clipa_of_no_registered_shape_is_not_half_read_as_clipa() -> None:
    """Its text tower's knobs (bidirectional, read last, GELU, WordPiece) come only with a registered shape."""
    config = config_from_state_dict(_state("test-clipa-tiny", embed_dim=48))
    assert not {"vision_pool", "vision_ln_pre", "text_causal", "text_pool"} & set(config)


@pytest.mark.parametrize("fast", [False, True])
def test_clipa_images_of_another_grid_are_one_line(fast: bool) -> None:
    torch.manual_seed(0)
    model = create_model_from_config(get_config("test-clipa-tiny")).eval()
    model = prepare(copy.deepcopy(model), "fp32") if fast else model
    with torch.no_grad():
        for shape, got in (((2, 3, 64, 64), "64x64"), ((1, 3, 32, 40), "32x40"), ((2, 3, 16, 16), "16x16")):
            with pytest.raises(ValueError) as error:
                model.encode_image(torch.randn(*shape))
            assert str(error.value) == f"expected images of 32x32, got {got}"
        with pytest.raises(ValueError) as error:
            model.encode_image(torch.randn(3, 32, 32))
        assert str(error.value) == ("encode_image expects a float tensor [batch, 3, H, W]; got [3, 32, 32] (one image "
                                    "without its batch dimension: image.unsqueeze(0))")  # s60: models.tensor_checks
        # a pixel the strided convolution leaves unread, as open_clip's does
        images = torch.randn(2, 3, 33, 33)
        assert torch.allclose(
            model.encode_image(images), model.encode_image(images[..., :32, :32]), atol=1e-5
        )
