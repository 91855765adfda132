"""`save_hf` of a state dict whose architecture has no transformers `CLIPModel` form is refused, as `save_hf` of
the model itself is: a CLIPA state dict was written as a CLIPModel folder that transformers loaded with
`pre_layrnorm` missing (image features at cosine 0.25-0.63 to ours)."""

from __future__ import annotations

import pytest
import torch

from clipforge.errors import UserError
from clipforge.models import create_model_from_config, get_config
from clipforge.weights.hf import save_hf


def test_a_clipa_state_dict_is_refused_and_nothing_is_written(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model_from_config(get_config("test-clipa-tiny")).eval()
    with pytest.raises(UserError) as raised:
        save_hf(model.state_dict(), tmp_path / "hf")
    assert str(raised.value) == (
        "this model has no Hugging Face CLIPModel form (no visual.ln_pre, as in CLIPA's image tower): save it with "
        "save_safetensors"
    )
    with pytest.raises(
        UserError,
        match=r"form \(vision_pool='avg', vision_ln_pre=False, text_causal=False, "
        r"text_pool='last', tokenizer=",
    ):
        save_hf(model.state_dict(), tmp_path / "hf", config=model.arch_config)
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").iterdir())
