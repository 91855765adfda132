"""A transformers SigLIP folder loads with its own tokenizer, not OpenAI's BPE.

`save_hf` writes ``spiece.model`` beside a SigLIP folder's weights (as transformers' own SigLIP folders carry
it), but the loader built the model from ``config.json`` with no tokenizer config: texts were tokenized with
CLIP's BPE (ids up to 49,407 into SigLIP's vocabulary: an IndexError, or wrong text features). The folder's
texts must tokenize, and encode, exactly as the model it was saved from.
"""

from __future__ import annotations

import pytest
import torch

from clipforge.api import load_model
from clipforge.text.families import TokenizerUnavailableError
from clipforge.weights.hf import save_hf


def test_a_siglip_folder_tokenizes_as_the_model_it_was_saved_from(family_checkpoints, tmp_path) -> None:
    pytest.importorskip("sentencepiece")
    loaded = load_model(family_checkpoints["siglip"], "cpu")
    folder = save_hf(loaded.model, tmp_path / "hf")
    again = load_model(folder, "cpu")
    prompts = ["This is a photo of a cat.", "A DOG, running!"]
    assert again.model.tokenizer_cfg["kind"] == "sentencepiece"
    assert torch.equal(again.tokenize(prompts), loaded.tokenize(prompts))
    with torch.no_grad():
        assert torch.allclose(again.model.encode_text(again.tokenize(prompts)),
                              loaded.model.encode_text(loaded.tokenize(prompts)), atol=1e-6)

    (folder / "spiece.model").unlink()  # no tokenizer file: images still embed, a text names the missing file
    bare = load_model(folder, "cpu")
    image = torch.randn(1, 3, *bare.model.visual.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(bare.model.encode_image(image), loaded.model.encode_image(image), atol=1e-6)
    with pytest.raises(TokenizerUnavailableError) as raised:  # it tokenized with OpenAI's BPE
        bare.tokenize(prompts)
    assert "'spiece.model' was not found in" in str(raised.value) and str(folder) in str(raised.value)


def test_a_siglip_folder_with_a_gemma_tokenizer_json_uses_it(family_checkpoints, tmp_path) -> None:
    """SigLIP 2's first transformers folders were ``SiglipModel`` folders carrying Gemma's ``tokenizer.json``
    instead of ``spiece.model``: such a folder tokenizes with that file (here: the tiny SigLIP 2's, whose
    vocabulary fits the tiny SigLIP's 512 embeddings), as SigLIP 2's own config does."""
    import shutil

    pytest.importorskip("tokenizers")
    loaded = load_model(family_checkpoints["siglip"], "cpu")
    gemma_like = load_model(family_checkpoints["siglip2"], "cpu")
    folder = save_hf(loaded.model, tmp_path / "hf")
    (folder / "spiece.model").unlink()
    shutil.copy(family_checkpoints["siglip2"].parent / "tokenizer.json", folder / "tokenizer.json")
    again = load_model(folder, "cpu")
    assert again.model.tokenizer_cfg["kind"] == "hf-json"
    prompts = ["This is a photo of a cat.", "A DOG, running!"]
    assert torch.equal(again.tokenize(prompts), gemma_like.tokenize(prompts))
