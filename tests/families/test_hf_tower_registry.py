"""open_clip's transformers-text-tower models in the registry, and one end to end against a local
127.0.0.1 "hub" (HF_ENDPOINT): open_clip's weights file and the tokenizer's files (``tokenizer.json``
and ``tokenizer_config.json``), each through the verified downloader, into the one loader.

The fast case registers a tiny architecture with a hub entry for the test; the slow one serves
xlm-roberta-base-ViT-B-32's real shapes with every tensor expanded from one element (kilobytes
on the wire, the full model when built), as the SigLIP download test does.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import torch
from family_fixtures import CORPUS, build_json_tokenizer

import clipforge
from clipforge.models import create_model_from_config, get_config
from clipforge.models.configs import ARCH_CONFIGS
from clipforge.weights import registry

pytest.importorskip("transformers")

HF_PAIRS = {("roberta-ViT-B-32", "laion2b_s12b_b32k"), ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"),
            ("xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k"), ("nllb-clip-base", "v1"),
            ("nllb-clip-large", "v1"), ("nllb-clip-base-siglip", "v1"), ("nllb-clip-base-siglip", "mrl"),
            ("nllb-clip-large-siglip", "v1"), ("nllb-clip-large-siglip", "mrl")}


def test_every_hf_tower_pair_is_listed_with_its_scoring_preprocessing_and_activation() -> None:
    listed = set(clipforge.list_pretrained())
    assert listed >= HF_PAIRS
    for arch, tag in HF_PAIRS:
        entry = registry.get_pretrained(arch, tag)
        config = get_config(entry.name)
        assert config["text_hf"] is not None and entry.hf_repo and entry.sha256 is None  # open_clip publishes none
        siglip = arch.endswith("-siglip")
        assert (config.get("scoring") == "sigmoid") == siglip
        assert entry.resize_mode == ("squash" if siglip else "shortest") and (entry.mean[0] == 0.5) == siglip
        assert entry.activation == config["activation"]  # roberta-ViT-B-32's image tower is QuickGELU
    assert registry.get_pretrained("roberta-ViT-B-32", "laion2b_s12b_b32k").activation == "quick_gelu"
    assert registry.get_pretrained("xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k").imagenet_top1 == 76.95
    assert registry.get_pretrained("nllb-clip-base-siglip", "mrl").imagenet_top1 is None  # no row in the table
    assert registry.list_pretrained_tags_by_model("mt5-base-ViT-B-32") == []  # a config without weights


def test_models_all_lists_them() -> None:
    """`clipforge models --all`'s pretrained rows (the table is built from these; the full command
    also counts every architecture's parameters, seconds of work this test does not need)."""
    from clipforge.cli.models import summarize_pretrained

    rows = {r["name"]: r for r in summarize_pretrained()}
    for arch, tag in HF_PAIRS:
        row = rows[f"{arch}:{tag}"]
        assert row["builds"] == arch and row["url"].endswith(f"{registry.get_pretrained(arch, tag).hf_repo}"
                                                              "/resolve/main/open_clip_model.safetensors")


def _expanded_state(arch: str) -> dict[str, torch.Tensor]:
    """`arch`'s tensors, each one random value expanded to its shape (tiny when pickled)."""
    with torch.device("meta"):
        meta = create_model_from_config(get_config(arch))
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn((), generator=gen).mul(0.02).expand(v.shape) for k, v in meta.state_dict().items()}


def _torch_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _serve(local_hub, monkeypatch, tmp_path: Path, routes: dict[str, bytes]) -> list[str]:
    monkeypatch.setenv("CLIPFORGE_ALLOW_UNPINNED", "1")  # open_clip publishes no hash for hub files
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    return local_hub(routes)


def _tokenizer_files(tmp_path: Path) -> dict[str, bytes]:
    folder = tmp_path / "tok"
    build_json_tokenizer(folder, vocab_size=300)
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer"}))
    return {name: (folder / name).read_bytes() for name in ("tokenizer.json", "tokenizer_config.json")}


@pytest.mark.parametrize("base", ["test-xlmr-tiny", "test-nllb-siglip-tiny"])
def test_tiny_hf_tower_weights_and_tokenizer_files_download_verify_and_load(base, local_hub, monkeypatch, tmp_path) -> None:
    """XLM-R on a class-token ViT (open_clip's file is clipforge's layout), and NLLB on a SigLIP tower
    (open_clip's -siglip files: timm layout under visual.trunk.)."""
    arch, repo, tok_repo = "test-hub-xlmr", "laion/test-hub-xlmr", "FacebookAI/test-xlmr"
    config = copy.deepcopy(ARCH_CONFIGS[base])
    config["tokenizer"] = {**config["tokenizer"], "hub_repo": tok_repo, "extra_files": ["tokenizer_config.json"]}
    monkeypatch.setitem(ARCH_CONFIGS, arch, config)
    entry = registry.PretrainedWeights(name=arch, url="", sha256=None, filename=f"{repo.replace('/', '--')}--x",
                                       tag="hubtest", hf_repo=repo, activation=config["activation"], listed_as=arch)
    monkeypatch.setitem(registry.PRETRAINED, (arch, "hubtest"), entry)
    torch.manual_seed(0)
    weights = create_model_from_config(get_config(arch)).eval()
    state = weights.state_dict()
    if config.get("vision_pool") == "map":
        from clipforge.weights.family_layouts import to_open_clip_siglip

        state = to_open_clip_siglip(state)
        assert "visual.trunk.pos_embed" in state and "text.proj.weight" in state
    routes = {f"/{repo}/resolve/main/open_clip_pytorch_model.bin": _torch_bytes(state)}
    routes.update({f"/{tok_repo}/resolve/main/{name}": body for name, body in _tokenizer_files(tmp_path).items()})
    served = _serve(local_hub, monkeypatch, tmp_path, routes)

    loaded = clipforge.load_model(f"{arch}:hubtest", "cpu")
    assert sorted(p.rsplit("/", 1)[-1] for p in served) == ["open_clip_pytorch_model.bin", "tokenizer.json",
                                                           "tokenizer_config.json"]
    ids = loaded.tokenize(CORPUS[:4])
    assert ids.shape == (4, 77) and ids[0, -1].item() == 1  # padded with <pad>
    assert loaded.scoring.kind == ("sigmoid" if config.get("scoring") == "sigmoid" else "softmax")
    with torch.no_grad():
        assert torch.allclose(loaded.model.encode_text(ids), weights.encode_text(ids), rtol=1e-5, atol=1e-6)
        images = torch.randn(1, 3, 32, 32)
        assert torch.allclose(loaded.model.encode_image(images), weights.encode_image(images), rtol=1e-5, atol=1e-6)
    again = clipforge.load_model(f"{arch}:hubtest", "cpu")  # cached: nothing fetched twice
    assert len(served) == 3 and torch.equal(again.tokenize(CORPUS[:4]), ids)


def test_a_mirror_cannot_pass_other_shapes_off_as_the_entry(local_hub, monkeypatch, tmp_path) -> None:
    """Unpinned hub files are accepted only when their tensors are the entry's architecture."""
    arch, repo = "test-hub-xlmr2", "laion/test-hub-xlmr2"
    monkeypatch.setitem(ARCH_CONFIGS, arch, copy.deepcopy(ARCH_CONFIGS["test-xlmr-tiny"]))
    entry = registry.PretrainedWeights(name=arch, url="", sha256=None, filename="x", tag="hubtest", hf_repo=repo,
                                       activation="gelu", listed_as=arch)
    monkeypatch.setitem(registry.PRETRAINED, (arch, "hubtest"), entry)
    other = create_model_from_config(get_config("test-mt5-tiny")).state_dict()
    _serve(local_hub, monkeypatch, tmp_path, {f"/{repo}/resolve/main/open_clip_pytorch_model.bin": _torch_bytes(other)})
    with pytest.raises(Exception, match="does not hold|not fit|shapes"):
        clipforge.load_model(f"{arch}:hubtest", "cpu")


@pytest.mark.slow
def test_xlm_roberta_base_vit_b_32_from_the_hub_at_full_size(local_hub, monkeypatch, tmp_path) -> None:
    repo = "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k"
    routes = {f"/{repo}/resolve/main/open_clip_pytorch_model.bin": _torch_bytes(_expanded_state(
        "xlm-roberta-base-ViT-B-32"))}
    routes.update({f"/FacebookAI/xlm-roberta-base/resolve/main/{n}": b for n, b in _tokenizer_files(tmp_path).items()
                   if n == "tokenizer.json"})
    served = _serve(local_hub, monkeypatch, tmp_path, routes)
    loaded = clipforge.load_model("xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k", "cpu")
    assert len(served) == 2 and loaded.scoring.kind == "softmax"
    assert loaded.model.text.transformer.config.vocab_size == 250002
    ids = loaded.tokenize(["a photo of a cat", "一只猫的照片"])
    with torch.no_grad():
        features = loaded.model.encode_text(ids)
    assert features.shape == (2, 512) and torch.isfinite(features).all()


def test_a_plain_open_clip_file_is_built_as_the_architecture_its_shapes_name(monkeypatch, tmp_path) -> None:
    """A state dict with a transformers tower records no config: its shapes pick the registered
    architecture, whose activation it keeps (roberta-ViT-B-32's image tower is QuickGELU)."""
    import warnings

    hf = {**ARCH_CONFIGS["test-xlmr-tiny"]["text_hf"], "model_type": "roberta", "vocab_size": 600}
    config = {**copy.deepcopy(ARCH_CONFIGS["test-xlmr-tiny"]), "text_hf": hf, "vocab_size": 600,
              "activation": "quick_gelu"}
    monkeypatch.setitem(ARCH_CONFIGS, "test-roberta-quick", config)
    torch.manual_seed(0)
    model = create_model_from_config(config).eval()
    torch.save(model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing assumed, nothing to warn about
        loaded = clipforge.load_model(tmp_path / "open_clip_pytorch_model.bin", "cpu")
    assert loaded.model.activation == "quick_gelu" and loaded.model.text.transformer.config.model_type == "roberta"
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.model.encode_image(images), model.encode_image(images), rtol=1e-5, atol=1e-6)
