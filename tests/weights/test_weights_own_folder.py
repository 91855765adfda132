"""A clipforge model folder loads from wherever it is copied.

`--model ./my-tiny` (a copy of a shipped model's folder: config.json, model.safetensors with its config in the
metadata, languages.json) was read as a Hugging Face CLIPModel folder and refused: "unexpected tensor
'visual.bn1.num_batches_tracked' in a Hugging Face CLIPModel checkpoint"."""

from __future__ import annotations

import shutil

import pytest
import torch

from clipforge.api import SHIPPED_MODELS_DIR, load_model


@pytest.mark.parametrize("name", ["clipforge-tiny", "clipforge-tiny-zh"])
def test_a_copied_shipped_model_folder_loads_as_the_shipped_model(tmp_path, name):
    copy = shutil.copytree(SHIPPED_MODELS_DIR / name, tmp_path / "我的模型")
    ours, shipped = load_model(str(copy), device="cpu"), load_model(name, device="cpu")
    theirs = shipped.model.state_dict()
    assert ours.model.state_dict().keys() == theirs.keys()
    assert all(torch.equal(value, theirs[key]) for key, value in ours.model.state_dict().items())
    from clipforge.zeroshot.languages import model_languages

    assert model_languages(ours) == model_languages(shipped)  # languages.json travels with the folder
    text = ours.tokenizer(["一只猫", "a cat"], int(ours.model.context_length))
    assert torch.equal(text, shipped.tokenizer(["一只猫", "a cat"], int(shipped.model.context_length)))


def test_a_hugging_face_folder_is_still_read_as_one(tmp_path):
    """A folder whose model.safetensors has no clipforge config stays the Hugging Face reader's: its refusal."""
    from safetensors.torch import save_file

    from clipforge.weights import CheckpointFormatError

    (tmp_path / "config.json").write_text('{"model_type": "clip"}')
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointFormatError, match="Hugging Face CLIPModel"):
        load_model(str(tmp_path), device="cpu")
