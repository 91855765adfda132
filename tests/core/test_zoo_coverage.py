"""How much of open_clip's zoo clipforge builds: the difference, printed, so the gap stays visible.

Compared with open-clip-torch 3.3's ``list_pretrained()`` (its ``pretrained.py`` read without the
package ``__init__``, which needs torchvision). The pairs clipforge lacks must all belong to the
families not built yet, named below; everything clipforge lists must be open_clip's too (OpenAI's
own spellings ``ViT-B/32:openai`` etc. aside), and each pair's hub copy and QuickGELU flag agree.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest

import clipforge

# Families clipforge does not build (yet), matched on open_clip's architecture names (CoCa first: its
# `coca_roberta-ViT-B-32` is a CoCa, not one of the transformers text towers clipforge builds).
NOT_BUILT = ("coca", "EVA", "convnext", "MobileCLIP", "PE-Core", "ViTamin")
BUILT_PAIRS = 143  # of open-clip-torch 3.3's 196 (issue 16; CLIPA-v2: 7)
# open_clip's transformers text towers (XLM-R, RoBERTa, NLLB, mT5): every config, with or without tags
HF_TOWER_ARCHS = ("xlm-roberta-base-ViT-B-32", "xlm-roberta-large-ViT-H-14", "roberta-ViT-B-32", "mt5-base-ViT-B-32",
                  "mt5-xl-ViT-H-14", "nllb-clip-base", "nllb-clip-large", "nllb-clip-base-siglip",
                  "nllb-clip-large-siglip")


def _open_clip_pretrained() -> types.ModuleType:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("reference open-clip-torch is not installed")
    key = "_open_clip_pretrained_reference"
    if f"{key}.pretrained" not in sys.modules:
        package = types.ModuleType(key)
        package.__path__ = [str(next(iter(spec.submodule_search_locations)))]
        sys.modules[key] = package
    return importlib.import_module(f"{key}.pretrained")


def test_difference_with_open_clips_list_is_only_the_families_not_built(capsys) -> None:
    reference = _open_clip_pretrained()
    theirs = {(a, t) for a, t in reference.list_pretrained()}
    ours = {(a, t) for a, t in clipforge.list_pretrained() if "/" not in a and t != "cn_clip"}  # OpenAI's, cn_clip's aside
    missing = sorted(theirs - ours)
    extra = sorted(ours - theirs)
    by_family: dict[str, int] = {}
    for arch, _ in missing:
        family = next((f for f in NOT_BUILT if f.lower() in arch.lower()), "OTHER")
        by_family[family] = by_family.get(family, 0) + 1
    with capsys.disabled():
        print(f"\nopen_clip 3.3 pairs: {len(theirs)}; clipforge builds {len(theirs & ours)}; missing {len(missing)}: "
              + ", ".join(f"{k} {v}" for k, v in sorted(by_family.items())))
    assert "OTHER" not in by_family, [m for m in missing if not any(f.lower() in m[0].lower() for f in NOT_BUILT)]
    assert not extra, extra
    assert len(theirs & ours) == BUILT_PAIRS and len(missing) == len(theirs) - BUILT_PAIRS
    assert sorted(by_family) == sorted(NOT_BUILT), by_family
    for arch, tag in sorted(theirs & ours):
        cfg = reference.get_pretrained_cfg(arch, tag)
        entry = clipforge.get_pretrained_cfg(arch, tag)
        assert entry["hf_hub"].rstrip("/") == cfg.get("hf_hub", "").rstrip("/"), (arch, tag)
        assert entry["url"] == cfg.get("url", ""), (arch, tag)
        assert tuple(entry["mean"]) == tuple(cfg["mean"]) and tuple(entry["std"]) == tuple(cfg["std"]), (arch, tag)
        assert entry["resize_mode"] == cfg.get("resize_mode", "shortest"), (arch, tag)
        if arch.endswith("-quickgelu") or cfg.get("quick_gelu"):
            assert entry["quick_gelu"], (arch, tag)


def test_every_transformers_text_tower_config_of_open_clip_is_an_architecture_here() -> None:
    """The HF-tower configs open_clip ships (the ``mt5-*`` ones have no weights) all build here, and no
    other open_clip config names a transformers text tower that clipforge lacks (CoCa aside)."""
    import json
    from pathlib import Path

    from clipforge.models import ARCH_CONFIGS

    _open_clip_pretrained()  # skips without the reference
    folder = Path(next(iter(importlib.util.find_spec("open_clip").submodule_search_locations))) / "model_configs"
    hf_configs = sorted(p.stem for p in folder.glob("*.json")
                        if "hf_model_name" in json.loads(p.read_text()).get("text_cfg", {}))
    assert sorted(n for n in hf_configs if not n.startswith("coca")) == sorted(HF_TOWER_ARCHS)
    for name in HF_TOWER_ARCHS:
        cfg = json.loads((folder / f"{name}.json").read_text())
        ours = ARCH_CONFIGS[name]
        assert ours["text_hf"] is not None and ours["embed_dim"] == cfg["embed_dim"], name
        text = cfg["text_cfg"]
        assert ours["text_pool"] == {"mean_pooler": "mean", "cls_pooler": "cls"}[text.get("hf_pooler_type", "mean_pooler")]
        assert bool(ours.get("text_proj_mlp")) == (text.get("hf_proj_type", "mlp") == "mlp"), name
        assert (ours["activation"] == "quick_gelu") == bool(cfg.get("quick_gelu")), name
        assert ours["tokenizer"]["hub_repo"].split("/")[-1] == text["hf_tokenizer_name"].split("/")[-1], name
