"""open_clip's names that training scripts and model pickers call, through ``import clipforge as open_clip``.

`list_openai_models`, `list_pretrained_models_by_tag`, `SimpleTokenizer`, `get_cast_dtype`,
`get_input_dtype` and `load_checkpoint` were AttributeErrors. Each is checked against open_clip's own
module where it imports without torchvision (`pretrained`, `tokenizer`, `model`, loaded as
`tests/core/test_zoo_parity.py` does), and `load_checkpoint` by the features of a model it loaded: an
open_clip CLIP's checkpoint, saved as open_clip's training saves it, loaded into clipforge's model gives
open_clip's features.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import clipforge as open_clip
from clipforge.models import create_model_from_config, get_config
from tests.core.test_zoo_open_clip_surface import _open_clip_file
from tests.core.test_zoo_parity import (
    _open_clip_json,
    _open_clip_model,
    _random_state,
    _relative,
    _token_batch,
)


def _open_clip_pretrained():
    _open_clip_model()  # registers open_clip's folder as a bare package (no __init__, no torchvision)
    return importlib.import_module("_open_clip_reference.pretrained")


@pytest.mark.parametrize("tag", ["openai", "laion2b_s34b_b79k", "LAION2B-S34B-B79K", "datacomp_xl_s13b_b90k"])
def test_models_by_tag_are_open_clips(tag: str) -> None:
    theirs = _open_clip_pretrained().list_pretrained_models_by_tag(tag)
    ours = open_clip.list_pretrained_models_by_tag(tag)
    assert len(ours) == len(set(ours)) and ours, ours
    if tag == "openai":  # all of OpenAI's releases are registered; other tags: those clipforge has pinned
        assert set(ours) == set(theirs) == set(open_clip.list_openai_models())
    else:
        assert set(ours) <= set(theirs)
    assert all(open_clip.get_pretrained_cfg(name, tag) for name in ours)


def test_simple_tokenizer_is_open_clips_and_refuses_what_it_cannot_do(tmp_path) -> None:
    reference = _open_clip_file("tokenizer")
    texts = ["a photo of a cat, 猫!", "x " * 100]
    for kwargs in ({}, {"context_length": 32}, {"bpe_path": reference.default_bpe()}):
        ours, theirs = open_clip.SimpleTokenizer(**kwargs), reference.SimpleTokenizer(**kwargs)
        assert torch.equal(ours(texts), theirs(texts))
        assert ours.decode(ours(texts)[0]) == theirs.decode(theirs(texts)[0].tolist())
    other = tmp_path / "other_vocab.txt.gz"
    import gzip

    with gzip.open(other, "wt") as out:
        out.write("#version: 0.2\na b\n")
    with pytest.raises(ValueError, match="other_vocab.txt.gz.*CLIP's own BPE"):
        open_clip.SimpleTokenizer(bpe_path=other)
    for option in ({"clean": "whitespace"}, {"reduction_mask": "simple"}, {"additional_special_tokens": ["<x>"]}):
        with pytest.raises(NotImplementedError, match=next(iter(option))):
            open_clip.SimpleTokenizer(**option)


@pytest.mark.parametrize("precision", ["amp", "amp_bf16", "bf16", "fp16", "pure_bf16", "pure_fp16", "fp32"])
def test_precision_dtypes_are_open_clips(precision: str) -> None:
    reference = _open_clip_model()
    assert open_clip.get_cast_dtype(precision) == reference.get_cast_dtype(precision)
    assert open_clip.get_input_dtype(precision) == reference.get_input_dtype(precision)


@pytest.mark.parametrize("layout", ["open_clip_training", "plain"])
def test_load_checkpoint_loads_an_open_clip_checkpoint_into_our_model(layout: str, tmp_path) -> None:
    """open_clip's training saves {"epoch", "name", "state_dict" (DDP's "module." names), "optimizer"};
    a plain state dict is the other common file. Loaded into a clipforge model built with other weights,
    the features become open_clip's on the checkpoint's weights; a wrong architecture is refused."""
    cfg = _open_clip_json("ViT-B-32")
    cfg["vision_cfg"]["layers"] = cfg["text_cfg"]["layers"] = 2
    config = get_config("ViT-B-32") | {"vision_layers": 2, "transformer_layers": 2, "activation": "gelu"}
    with torch.device("meta"):
        theirs = _open_clip_model().CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])
    state = _random_state(theirs, seed=3)
    theirs.load_state_dict(state, strict=True, assign=True)
    theirs.attn_mask = torch.full((77, 77), float("-inf")).triu_(1)
    path = tmp_path / "epoch_1.pt"
    if layout == "open_clip_training":
        torch.save({"epoch": 1, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()},
                    "optimizer": {"state": {}, "param_groups": []}}, path)
    else:  # with the 1-element logit_scale of older open_clip checkpoints
        torch.save({**state, "logit_scale": state["logit_scale"].reshape(1)}, path)

    torch.manual_seed(0)
    ours = create_model_from_config(config).eval()
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        before = ours.encode_image(pixels)  # the fast path's packed weights exist before the load
    result = open_clip.load_checkpoint(ours, path)
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    theirs.eval()
    with torch.inference_mode():
        image, their_image = ours.encode_image(pixels), theirs.encode_image(pixels)
        text, their_text = ours.encode_text(_token_batch()), theirs.encode_text(_token_batch())
    assert _relative(image, their_image) <= 1e-5 and _relative(text, their_text) <= 1e-5
    assert _relative(before, their_image) > 0.1  # the load changed the model

    bigger = create_model_from_config(config | {"transformer_layers": 3})
    with pytest.raises(RuntimeError, match="resblocks.2"):
        open_clip.load_checkpoint(bigger, path)
    assert "resblocks.2" in str(open_clip.load_checkpoint(bigger, path, strict=False).missing_keys)
