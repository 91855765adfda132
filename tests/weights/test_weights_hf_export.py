"""`save_hf` folders are whole models to Hugging Face: tokenizer, processor and the zero-shot
pipeline work on them and agree with clipforge."""

from __future__ import annotations

import csv
import html
import json

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.models import create_model_from_config, get_config
from clipforge.text import tokenize
from clipforge.weights import save_hf
from clipforge.zoo import build_weights_preprocess

transformers = pytest.importorskip("transformers")

FILES = ["config.json", "merges.txt", "model.safetensors", "preprocessor_config.json", "special_tokens_map.json",
         "tokenizer_config.json", "vocab.json"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    config = get_config("test-vit-tiny") | {"activation": "gelu", "image_resolution": 64}
    model = create_model_from_config(config).eval()
    model.logit_scale.data.fill_(4.6)  # exp = 100, as trained CLIPs: probabilities far from uniform
    directory = save_hf(model, tmp_path_factory.mktemp("hf") / "model")
    return model, directory


def test_save_hf_writes_the_files_hf_needs(folder):
    _, directory = folder
    assert sorted(p.name for p in directory.iterdir()) == FILES
    assert json.loads((directory / "config.json").read_text())["vision_config"]["hidden_act"] == "gelu"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert len(tokenizer) == 49408  # not the 2-token vocabulary of a folder without vocab.json
    processor = transformers.CLIPProcessor.from_pretrained(str(directory))
    ids = processor(text=["a photo of a dog"], return_tensors="pt")["input_ids"][0].tolist()
    assert ids == [49406, 320, 1125, 539, 320, 1929, 49407]
    from clipforge.weights import load_checkpoint

    back = load_checkpoint(directory)  # and back: the activation and preprocessing come along
    assert back.config["activation"] == "gelu" and back.preprocess["interpolation"] == "bicubic"


def test_zero_shot_pipeline_on_the_folder_agrees_with_clipforge(folder):
    model, directory = folder
    classify = transformers.pipeline("zero-shot-image-classification", model=str(directory), device="cpu")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    labels = ["cat", "dog", "car", "tree"]
    template = "This is a photo of {}."  # the pipeline's default hypothesis_template
    result = classify(image, candidate_labels=labels)
    theirs = {r["label"]: r["score"] for r in result}
    with torch.inference_mode():
        pixels = build_weights_preprocess(64)(image).unsqueeze(0)
        logits, _ = model(pixels, tokenize([template.format(label) for label in labels]))
    ours = dict(zip(labels, logits.softmax(dim=-1)[0].tolist(), strict=True))
    assert max(abs(ours[k] - theirs[k]) for k in labels) < 3e-5
    assert max(ours.values()) > 0.3  # not a uniform distribution that would agree by accident


def _corpus(shared_data) -> list[str]:
    prompts = shared_data / "prompts"
    classes = json.loads((prompts / "openai_imagenet_classes.json").read_text())
    templates = json.loads((prompts / "openai_imagenet_templates.json").read_text())
    texts = [templates[i % len(templates)].format(c) for i, c in enumerate(classes)] + list(classes)
    with (shared_data / "flickr8k_1k" / "captions.txt").open(encoding="utf-8", newline="") as fh:
        texts += [row["caption"] for row in csv.DictReader(fh)]
    texts += ["Tom &amp; Jerry", "fish &lt;3 chips", "caf\u00e9 na\u00efve", "emoji \U0001F600 ok", "  many   spaces  "]
    return texts


@pytest.mark.data
def test_token_ids_agree_with_hf_tokenizer(folder, shared_data):
    """>= 5,000 real strings. The one known difference: HF does not unescape HTML entities
    (``&amp;``), OpenAI's tokenizer (and clipforge's) does; those strings are the only ones allowed
    to differ, and they must be the ones that do."""
    _, directory = folder
    texts = _corpus(shared_data)
    assert len(texts) >= 5000
    hf = transformers.CLIPTokenizerFast.from_pretrained(str(directory))
    theirs = hf(texts)["input_ids"]
    ours = tokenize(texts, truncate=True)
    differ = []
    for text, row, hf_ids in zip(texts, ours.tolist(), theirs, strict=True):
        if row[: row.index(49407) + 1] != hf_ids[:77]:
            differ.append(text)
    assert all(html.unescape(t) != t for t in differ), [t for t in differ if html.unescape(t) == t][:5]
    assert "Tom &amp; Jerry" in differ and "fish &lt;3 chips" in differ
    assert len(differ) <= 5
