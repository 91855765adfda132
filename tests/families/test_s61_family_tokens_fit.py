"""A family model's text tower refuses ids it cannot read in one line, on the reference and the fast path alike
(review 61): a MetaCLIP 2 worldwide prompt of 22 positions for a 16-position model, or a SigLIP row wider than its
64 positions, ended in "The size of tensor a (22) must match the size of tensor b (16)", and a transformers tower
(XLM-R, NLLB) given ids past its vocabulary in "index out of range in self"; OpenAI-shaped models
already said `TokensError` (`tensor_checks.check_tokens_fit`, now shared)."""

from __future__ import annotations

import pytest
import torch
from family_fixtures import save_family_checkpoint

from clipforge.models.tensor_checks import TokensError


@pytest.mark.parametrize("arch", ["test-worldwide-tiny", "test-siglip-tiny", "test-xlmr-tiny", "test-nllb-siglip-tiny"])
@pytest.mark.parametrize("grad", [False, True])
def test_ids_wider_than_the_context_or_past_the_vocabulary_are_one_tokens_error(tmp_path, arch, grad):
    from clipforge.api import load_model

    model = load_model(str(save_family_checkpoint(tmp_path / arch, arch)), "cpu").model
    context = int(model.context_length)
    row = torch.full((1, context + 8), 4, dtype=torch.long)
    row[0, context + 5] = 2  # an end token past the context
    with torch.set_grad_enabled(grad), pytest.raises(TokensError, match=f"it reads {context} positions"):
        model.encode_text(row)
    vocab = (model.text.transformer.get_input_embeddings() if model.text is not None else model.token_embedding)
    past = torch.full((1, context), int(vocab.num_embeddings), dtype=torch.long)
    with torch.set_grad_enabled(grad), pytest.raises(TokensError, match="ids below"):
        model.encode_text(past)
    with torch.set_grad_enabled(grad):  # an empty batch is an empty answer (transformers' towers failed on it)
        assert model.encode_text(row[:0, :context]).shape == (0, model.embed_dim)
