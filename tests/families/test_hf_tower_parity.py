"""open_clip's transformers-text-tower models: parity with open_clip's own classes on identical random
weights (image features, text features, logits, <= 1e-5 relative).

The reference is open_clip's ``CustomTextCLIP`` and ``HFTextEncoder`` (open-clip-torch 3.3, imported
without its package ``__init__``, which needs torchvision: `test_zoo_parity._open_clip_model`), built
from open_clip's own ``model_configs/<name>.json`` as its ``create_model(name, pretrained=None)``
does. ``HFTextEncoder`` reads the encoder's config with ``AutoConfig.from_pretrained(hf_model_name)``,
a hub call: the test writes that ``config.json`` into a folder and points ``hf_model_name`` there
(with ``hf_model_pretrained`` false, which ``create_model`` sets when a checkpoint follows).

Size: every tower keeps its real width, heads, head width and MLP/FFN sizes; depth is cut to one
block per tower and the vocabulary to 4096 rows (neither changes a block's arithmetic; the full
sizes need 1-9 GB per copy). The weights travel as open_clip's state dict through clipforge's
open_clip-layout loader (`load_checkpoint`, then `build_model`). The ``-siglip`` twins' image
tower is timm's, which cannot be imported here (timm needs torchvision): their text tower is
compared with open_clip's ``HFTextEncoder``, their image tower is the SigLIP tower proven against
transformers in `test_family_siglip_parity`, and their timm-layout file loads to the same model.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from clipforge.models import build_model, create_model_from_config, get_config
from clipforge.models.family_configs import HF_TOWER_CONFIGS
from clipforge.models.skeleton import skeleton
from clipforge.weights import load_checkpoint
from clipforge.weights.family_layouts import to_open_clip_siglip

pytest.importorskip("transformers")

LAYERS, VOCAB, RTOL = 1, 4096, 1e-5
CLIP_ARCHS = [n for n in HF_TOWER_CONFIGS if not n.endswith("-siglip")]
SIGLIP_ARCHS = [n for n in HF_TOWER_CONFIGS if n.endswith("-siglip")]
_LAYER_FIELD = {"xlm-roberta": "num_hidden_layers", "roberta": "num_hidden_layers", "m2m_100": "encoder_layers",
                "mt5": "num_layers"}
_DECODER_FIELD = {"m2m_100": "decoder_layers", "mt5": "num_decoder_layers"}  # built by open_clip, then dropped


def _zoo_parity():
    """tests/core/test_zoo_parity.py (its open_clip import without torchvision), by path."""
    key = "_cf_test_zoo_parity"
    if key not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "core" / "test_zoo_parity.py"
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _small_hf(hf: dict, layers: int = LAYERS) -> dict:
    out = {**hf, "vocab_size": VOCAB, _LAYER_FIELD[hf["model_type"]]: layers}
    if hf["model_type"] in _DECODER_FIELD:
        out[_DECODER_FIELD[hf["model_type"]]] = 1
    return out


def _ours(name: str, text_layers: int = LAYERS) -> dict:
    config = get_config(name)
    config["text_hf"] = _small_hf(config["text_hf"], text_layers)
    config.update(vision_layers=LAYERS, transformer_layers=LAYERS, vocab_size=VOCAB)
    return config


def _open_clip_cfg(name: str, folder: Path, ours: dict) -> dict:
    """open_clip's JSON for `name`, depth cut, its HF config written to `folder` (no hub)."""
    cfg = _zoo_parity()._open_clip_json(name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(ours["text_hf"]))
    cfg["text_cfg"] = {**cfg["text_cfg"], "hf_model_name": str(folder), "hf_model_pretrained": False}
    cfg["vision_cfg"] = {**cfg["vision_cfg"], "layers": LAYERS}
    return cfg


def _random_state(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values for every float tensor (norm gains near 1), integer buffers kept."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            state[name] = t.clone()
            continue
        if name.endswith("logit_scale"):
            state[name] = torch.full(t.shape, math.log(1 / 0.07))
        elif name.endswith("logit_bias"):
            state[name] = torch.full(t.shape, -2.0)
        elif ("norm" in name.lower() or ".ln_" in name or name.startswith("ln_")) and name.endswith("weight"):
            state[name] = torch.empty(t.shape).normal_(1.0, 0.1, generator=gen)
        else:
            std = math.prod(t.shape[1:]) ** -0.5 if t.dim() > 1 else 0.02
            state[name] = torch.empty(t.shape).normal_(0.0, std, generator=gen)
    return state


def _ids(pad: int, first: int | None = None) -> torch.Tensor:
    """Three rows of random ids ending early, mid-way and at the last slot, padded with `pad`."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.full((3, 77), pad, dtype=torch.long)
    for row, length in enumerate((4, 31, 77)):
        ids[row, :length] = torch.randint(3, VOCAB, (length,), generator=gen)
        if first is not None:
            ids[row, 0] = first
    return ids


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _loaded_through_open_clip_layout(state: dict[str, torch.Tensor], path: Path, config: dict) -> torch.nn.Module:
    torch.save(state, path)
    return build_model(load_checkpoint(path).state_dict, config=config)


@pytest.mark.parametrize("name", CLIP_ARCHS)
def test_features_and_logits_match_open_clip(name: str, tmp_path: Path) -> None:
    ours_cfg = _ours(name)
    cfg = _open_clip_cfg(name, tmp_path / "hf", ours_cfg)
    reference_module = _zoo_parity()._open_clip_model()
    reference = skeleton(lambda: reference_module.CustomTextCLIP(  # no throwaway init: every tensor is set below
        cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=cfg.get("quick_gelu", False))).eval()
    state = _random_state(reference)
    reference.load_state_dict(state)
    ours = _loaded_through_open_clip_layout(state, tmp_path / "open_clip_pytorch_model.bin", ours_cfg)
    assert set(ours.state_dict()) == set(reference.state_dict())
    size = ours_cfg["image_resolution"]
    images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    hf = ours_cfg["text_hf"]
    ids = _ids(hf["pad_token_id"], first=hf.get("bos_token_id") if hf["model_type"] != "mt5" else None)
    with torch.no_grad():
        ref_img, ref_txt = reference.encode_image(images), reference.encode_text(ids)
        our_img, our_txt = ours.encode_image(images), ours.encode_text(ids)
        assert _relative(our_img, ref_img) <= RTOL
        assert _relative(our_txt, ref_txt) <= RTOL
        ref_i, ref_t, scale = reference(images, ids)
        logits_ref = scale * ref_i @ ref_t.t()
        logits_ours, _ = ours(images, ids)
    assert _relative(logits_ours, logits_ref) <= RTOL


@pytest.mark.parametrize("name", SIGLIP_ARCHS)
def test_siglip_twins_text_tower_matches_open_clip_and_timm_layout_loads(name: str, tmp_path: Path) -> None:
    ours_cfg = _ours(name)
    cfg = _open_clip_cfg(name, tmp_path / "hf", ours_cfg)
    _zoo_parity()._open_clip_model()
    hf_model = sys.modules["_open_clip_reference.hf_model"]
    text = cfg["text_cfg"]
    reference = skeleton(lambda: hf_model.HFTextEncoder(
        text["hf_model_name"], output_dim=cfg["embed_dim"], proj_type=text["hf_proj_type"],
        pooler_type=text["hf_pooler_type"], pretrained=False)).eval()
    text_state = _random_state(reference)
    reference.load_state_dict(text_state)
    with torch.device("meta"):
        shapes = create_model_from_config(ours_cfg)
    state = {k: v for k, v in _random_state(shapes.to_empty(device="cpu"), seed=3).items()
             if not k.startswith("text.")}
    state.update({f"text.{k}": v for k, v in text_state.items()})
    timm_layout = to_open_clip_siglip(state)  # what open_clip's -siglip files hold: visual.trunk.*, text.*
    assert any(k.startswith("visual.trunk.attn_pool.") for k in timm_layout) and "text.proj.weight" in timm_layout
    ours = _loaded_through_open_clip_layout(timm_layout, tmp_path / "open_clip_pytorch_model.bin", ours_cfg)
    loaded = ours.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], v) for k, v in state.items())
    ids = _ids(ours_cfg["text_hf"]["pad_token_id"], first=7)
    images = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert _relative(ours.encode_text(ids), reference(ids)) <= RTOL
        image_features = torch.nn.functional.normalize(ours.encode_image(images), dim=-1)
        text_features = torch.nn.functional.normalize(reference(ids), dim=-1)
        expected = ours.logit_scale.exp() * image_features @ text_features.t() + ours.logit_bias
        logits, _ = ours(images, ids)
    assert ours.scoring == "sigmoid" and _relative(logits, expected) <= RTOL


@pytest.mark.parametrize("arch", ["test-xlmr-tiny", "test-nllb-siglip-tiny"])
def test_onnx_text_graph_equals_pytorch_on_padded_rows(arch: str, tmp_path: Path) -> None:
    """`export onnx` traces the whole transformers tower (mask from the pad id, pooling, projection):
    rows of different lengths, padded, give PyTorch's features."""
    ort = pytest.importorskip("onnxruntime")
    from clipforge.api import load_model
    from clipforge.inference.onnx_export import TEXT_FILE, export_onnx

    loaded = load_model(f"random:{arch}", "cpu")
    export_onnx(loaded.model, tmp_path / "onnx")
    session = ort.InferenceSession(str(tmp_path / "onnx" / TEXT_FILE))
    ids = _ids(pad=1, first=0)[:, :77].clamp(max=loaded.model.vocab_size - 1)
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: ids.numpy()})[0])
    with torch.no_grad():
        want = loaded.model.encode_text(ids)
    assert _relative(got, want) <= 1e-5


def _one_arch_per_encoder() -> list[str]:
    first: dict[str, str] = {}
    for name in CLIP_ARCHS:
        first.setdefault(get_config(name)["text_hf"]["model_type"], name)
    return sorted(first.values())


@pytest.mark.parametrize("name", _one_arch_per_encoder())
def test_text_tower_locks_as_open_clips_hf_encoder(name: str, tmp_path: Path) -> None:
    """`lock_text_tower(unlocked_layers=k)` on a transformers text tower was NotImplementedError for k > 0,
    `freeze_layer_norm=False` was refused, and k = 0 froze the projection, which open_clip's
    `HFTextEncoder.lock` leaves trainable. Now the trainable parameters equal those open_clip's own lock leaves
    on the same model, for every k and both LayerNorm settings (3 encoder layers; open_clip cannot lock an
    M2M100 encoder partially, it has no layer name for it: there k > 0 is checked by hand)."""
    ours_cfg = _ours(name, text_layers=3)
    cfg = _open_clip_cfg(name, tmp_path / "hf", ours_cfg)
    reference_module = _zoo_parity()._open_clip_model()
    reference = skeleton(lambda: reference_module.CustomTextCLIP(
        cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=cfg.get("quick_gelu", False)))
    ours = create_model_from_config(ours_cfg)
    assert set(dict(ours.named_parameters())) == set(dict(reference.named_parameters()))
    model_type = ours_cfg["text_hf"]["model_type"]

    def trainable(model: torch.nn.Module) -> set[str]:
        return {n for n, p in model.named_parameters() if p.requires_grad}

    for freeze_layer_norm in (True, False):
        for k in range(6):
            ours.requires_grad_(True)
            ours.lock_text_tower(unlocked_layers=k, freeze_layer_norm=freeze_layer_norm)
            if model_type == "m2m_100" and k:  # open_clip's rule by hand: [embeddings, *layers][:-k] frozen
                frozen = tuple(["text.transformer.embed_tokens.", *(f"text.transformer.layers.{i}." for i in range(3))
                                ][:-k])
                assert {n for n in trainable(ours) if n.startswith("text.transformer.")} == {
                    n for n, _ in ours.named_parameters() if n.startswith("text.transformer.")
                    and not (frozen and n.startswith(frozen))}, k
                continue
            reference.requires_grad_(True)
            reference.lock_text_tower(unlocked_layers=k, freeze_layer_norm=freeze_layer_norm)
            assert trainable(ours) == trainable(reference), (k, freeze_layer_norm)
    assert {n for n in trainable(ours) if n.startswith("visual.")} == {
        n for n, _ in ours.named_parameters() if n.startswith("visual.")}
    with pytest.raises(ValueError, match="must be >= 0"):
        ours.lock_text_tower(unlocked_layers=-1)
