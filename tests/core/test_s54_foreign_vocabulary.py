"""A plain state dict whose text tower has fewer token embeddings than OpenAI's BPE gives ids is refused at load
time, in one line naming the file and the remedy (session 54). It loaded, and the first text it encoded ended in
torch's "IndexError: index out of range in self" (`clipforge classify --model siglip_state_dict.pt`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import clipforge
from clipforge.models import create_model_from_config, get_config
from clipforge.weights import CheckpointFormatError


def _state(rows: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = create_model_from_config(get_config("test-vit-tiny")).state_dict()
    state["token_embedding.weight"] = state["token_embedding.weight"][:rows].clone()
    return state


def test_a_smaller_vocabulary_than_the_tokenizer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "siglip_state_dict.pt"
    torch.save(_state(512), path)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # the activation assumed for a plain state dict: said, not tested here
        with pytest.raises(CheckpointFormatError) as err:
            clipforge.load_model(path, "cpu")
    assert str(err.value) == (
        f"{path}: its text tower has 512 token embeddings, but a file that records no tokenizer is read with "
        "OpenAI's BPE (49,408 ids): a plain state dict of another family (SigLIP, CLIPA, a multilingual tower) "
        f"cannot say which; load it as ARCH:{path} (`clipforge models --all` lists them)"
    )


def test_the_full_vocabulary_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "openai_shape.pt"
    torch.save(_state(49408), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = clipforge.load_model(path, "cpu")
    assert loaded.tokenize(["a photo of a cat"]).max().item() == 49407
    assert loaded.model.encode_text(loaded.tokenize(["a photo of a cat"])).shape[0] == 1
