"""The multilingual families say so: `clipforge models`, the notice for a query in another script, and
`eval zeroshot`'s default prompts read the architecture config's ``languages``, which a saved checkpoint keeps."""

from __future__ import annotations

import torch

import clipforge
from clipforge.models import create_model_from_config, get_config
from clipforge.weights import save_safetensors
from clipforge.zeroshot.languages import MULTILINGUAL, default_template_set, model_languages, query_notice

MULTILINGUAL_NAMES = ("ViT-H-14-worldwide:metaclip2_worldwide", "ViT-B-16-SigLIP2", "ViT-B-16-SigLIP-i18n-256:webli",
                      "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k", "nllb-clip-base-siglip:v1", "mt5-base-ViT-B-32")
ENGLISH_NAMES = ("ViT-B-32:laion2b_s34b_b79k", "ViT-B-16-SigLIP:webli", "roberta-ViT-B-32", "ViT-B/32")


def test_multilingual_architectures_are_listed_as_such_and_english_ones_are_not() -> None:
    for name in MULTILINGUAL_NAMES:
        assert model_languages(name) == ("en", MULTILINGUAL), name
        assert query_notice("一只猫的照片", name) is None, name  # no "not trained for zh" warning
        assert default_template_set("cifar10", model_languages(name), "cifar10") == "cifar10"  # English prompts
    for name in ENGLISH_NAMES:
        assert model_languages(name) == ("en",), name
        assert "trained for en only" in query_notice("一只猫的照片", name), name


def test_a_loaded_family_model_and_its_saved_checkpoint_keep_their_languages(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model_from_config(get_config("test-worldwide-tiny")).eval()
    assert model_languages(model) == ("en", MULTILINGUAL)
    path = save_safetensors(model, tmp_path / "model.safetensors")
    (tmp_path / "tokenizer.json").write_text("{}")  # never read here: only the languages are checked
    loaded = clipforge.load_model(path, "cpu")
    assert model_languages(loaded) == ("en", MULTILINGUAL)
    assert query_notice("一只猫", loaded) is None
