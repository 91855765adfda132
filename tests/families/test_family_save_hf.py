"""`save_hf` for SigLIP: a folder transformers' own pipeline accepts, giving our probabilities.

The folder holds ``SiglipModel`` weights and config, ``SiglipTokenizer`` files (the model's own
SentencePiece file) and a ``SiglipImageProcessor`` config. transformers'
``pipeline("zero-shot-image-classification")`` reads it with nothing else, and its scores (sigmoid
of scale·cos + bias, prompts "This is a photo of {}.") equal clipforge's within 1e-4.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from clipforge.api import load_model
from clipforge.weights import save_hf

LABELS = ["red", "green", "blue"]


def test_siglip_folder_works_in_transformers_pipeline(family_checkpoints, tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("sentencepiece")
    loaded = load_model(family_checkpoints["siglip"], "cpu")
    folder = save_hf(loaded.model, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "spiece.model", "preprocessor_config.json"} <= {
        p.name for p in folder.iterdir()}
    size = loaded.model.image_size
    image = Image.new("RGB", (size, size), (200, 30, 40))  # no resize: both sides see the same pixels
    classifier = transformers.pipeline("zero-shot-image-classification", model=str(folder), device="cpu")
    got = {r["label"]: r["score"] for r in classifier(image, candidate_labels=LABELS)}

    prompts = [f"This is a photo of {label}." for label in LABELS]
    with torch.no_grad():
        img = torch.nn.functional.normalize(loaded.model.encode_image(loaded.preprocess(image).unsqueeze(0)), dim=-1)
        txt = torch.nn.functional.normalize(loaded.model.encode_text(loaded.tokenize(prompts)), dim=-1)
    scoring = loaded.scoring
    ours = scoring.probabilities(scoring.logits(img, txt))[0]
    assert scoring.kind == "sigmoid"
    for label, p in zip(LABELS, ours.tolist(), strict=True):
        assert got[label] == pytest.approx(p, abs=1e-4)
    assert abs(sum(got.values()) - 1) > 1e-3  # sigmoid scores: they do not sum to 1

    # and the folder loads back through the one loader, same numbers
    again = load_model(folder, "cpu")
    with torch.no_grad():
        assert torch.allclose(again.model.encode_text(loaded.tokenize(prompts)),
                              loaded.model.encode_text(loaded.tokenize(prompts)), atol=1e-6)


def test_save_hf_refuses_a_family_clipmodel_cannot_express(family_checkpoints, tmp_path) -> None:
    """MetaCLIP 2 (XLM-V tokenizer, text read at the first EOS id 2): transformers' CLIPModel would
    read it at the argmax with CLIP's BPE files - a folder giving wrong numbers is refused, not written."""
    loaded = load_model(family_checkpoints["worldwide"], "cpu")
    with pytest.raises(ValueError, match="no CLIPModel form"):
        save_hf(loaded.model, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
