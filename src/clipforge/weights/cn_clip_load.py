"""The loader hook for Chinese-CLIP: what `clipforge.api.load_model` asks before its own resolution.

Apart from `clipforge.weights.cn_clip` (layouts and HF folders) because it downloads: `cn_clip` is
what `save_hf` reaches, and the downloader reaches `save_hf`'s module through the loader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from clipforge.weights.cn_clip import (
    CN_CLIP_WEIGHTS,
    OPENAI_MEAN,
    OPENAI_STD,
    cn_clip_state_dict,
    config_from_cn_state_dict,
    is_cn_clip_state_dict,
    read_transformers_folder,
)

# ---- the loader hook: what `clipforge.api.load_model` asks before its own resolution ---------------------
_TORCH_FILES = (".pt", ".pth", ".bin")


def _read_torch(path: Path, strict: bool = False) -> dict[str, Any]:
    """A torch checkpoint's top-level dict, read by the one safe reader (`torch_load_safely`, memory-mapped:
    a cheap look for the hook).

    `strict` (a registry file, which must be Chinese-CLIP's): its refusal is raised as it is, the
    generic loader's one line. Otherwise anything unreadable this way (TorchScript archives, a damaged or
    unsafe file) is not taken as a cn_clip checkpoint and is left to the project's own loader, which reads
    it the same way and refuses it with the same line."""
    from clipforge.weights.torch_pickle import torch_load_safely
    from clipforge.weights.torchscript import is_torchscript_archive

    if not strict and is_torchscript_archive(path):  # OpenAI's files: never cn_clip's, and torch.load on one
        return {}  # printed "warning: ... dispatching to 'torch.jit.load'" (which would run the archive's code)
    try:
        data = torch_load_safely(path, mmap=True)
    except Exception:  # noqa: BLE001 - whatever it is, it is the main loader's to judge
        if strict:
            raise
        return {}
    return data if isinstance(data, dict) else {}


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(state dict, config) of a Chinese-CLIP safetensors file (what `clipforge wise-ft` writes for one),
    else None: only the tensor names are read to decide, so other files cost nothing here. The config
    comes from the file's metadata when `save_safetensors` stored one with a ``bert`` part, else from shapes."""
    from safetensors import safe_open

    from clipforge.weights.save import CONFIG_KEY, MAX_CONFIG_CHARS

    try:
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())  # noqa: SIM118 - a safetensors handle is not a mapping
            if not is_cn_clip_state_dict(dict.fromkeys(names)):
                return None
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in names}
    except Exception:  # noqa: BLE001 - not readable as safetensors: the main loader explains it
        return None
    state = cn_clip_state_dict(state)
    shapes = config_from_cn_state_dict(state)
    text = metadata.get(CONFIG_KEY, "")
    try:
        stored = json.loads(text) if 0 < len(text) <= MAX_CONFIG_CHARS else None
    except ValueError:
        stored = None
    if isinstance(stored, dict) and isinstance(stored.get("bert"), dict):
        shapes["bert"].update({k: v for k, v in stored["bert"].items() if k == "num_attention_heads"})
        if isinstance(stored.get("vision_head_width"), int):
            shapes["vision_head_width"] = stored["vision_head_width"]
    return state, shapes


def _finish(model: Any) -> Any:
    """Attributes every Chinese-CLIP carries: its tokenizer, languages and preprocessing."""
    from clipforge.text.wordpiece import get_wordpiece_tokenizer

    model.tokenizer = get_wordpiece_tokenizer()  # callable: texts -> [N, 52] ids (see clipforge.text.wordpiece)
    model.languages = ("zh",)
    model.preprocess_cfg = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                            "resize_mode": "squash"}
    return model.eval()


def load_chinese_clip(spec: str | os.PathLike[str], download_root: str | os.PathLike[str] | None = None,
                      seed: int = 0) -> tuple[Any, str, str] | None:
    """(model, name, weights) when `spec` is a Chinese-CLIP: ``cn-*`` (registry weights, downloaded and
    verified), ``random:cn-*``, a cn_clip checkpoint file, or a ChineseCLIPModel folder; else None,
    so `load_model` goes on with its own resolution. Models come back fp32 in eval mode on the CPU."""
    from clipforge.models.chinese_clip import CHINESE_CLIP_CONFIGS, ChineseCLIP, create_chinese_clip

    text = os.fspath(spec)
    text = text.removesuffix(":cn_clip") if text.removesuffix(":cn_clip") in CN_CLIP_WEIGHTS else text  # ARCH:TAG
    if text.startswith("random:") and text[7:] in CHINESE_CLIP_CONFIGS:
        torch.manual_seed(seed)
        return _finish(create_chinese_clip(text[7:])), text[7:], f"random (seed {seed})"
    if text in CN_CLIP_WEIGHTS:
        from clipforge.weights.cn_clip_data import TAG
        from clipforge.weights.download import download_pretrained

        # the registry's one verified path: refused without a pin unless opted in, then every tensor's shape checked
        path = download_pretrained(text, download_root, tag=TAG)
        state = cn_clip_state_dict(_read_torch(path, strict=True))
        model = ChineseCLIP(**config_from_cn_state_dict(state))
        model.load_state_dict(state, strict=True)
        return _from_file(_finish(model), path), text, text
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except ValueError:
            return None
        if not isinstance(config, dict) or config.get("model_type") != "chinese_clip":
            return None
        state, ours = read_transformers_folder(path)
    elif path.is_file() and path.suffix.lower() == ".safetensors":
        found = _read_safetensors(path)
        if found is None:
            return None
        state, ours = found
    elif path.is_file() and path.suffix.lower() in _TORCH_FILES:
        data = _read_torch(path)
        inner = data.get("state_dict", data)
        if not isinstance(inner, dict) or not is_cn_clip_state_dict(inner):
            return None
        state = cn_clip_state_dict(data)
        ours = config_from_cn_state_dict(state)
    else:
        return None
    model = ChineseCLIP(**ours)
    model.load_state_dict(state, strict=True)
    return _from_file(_finish(model), path), path.name, str(path.resolve())


def _from_file(model: Any, path: Path) -> Any:
    """`model`, marked as holding exactly `path`'s tensors: its fingerprint (what a library is keyed by)
    comes from the fingerprint cache after the first command hashed the file (`weights.fingerprint`),
    as for every other checkpoint: 0.3-1 s of hashing per command otherwise."""
    from clipforge.weights.fingerprint import seed_from_file

    seed_from_file(model, path)
    return model
