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
    """A torch checkpoint's top-level dict (weights_only, memory-mapped: a cheap look for the hook).

    Anything unreadable this way (TorchScript archives, legacy pickles) is not a cn_clip checkpoint
    and is left to the project's own loader, which explains its failures properly."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - whatever it is, it is the main loader's to judge
        if strict:
            raise
        return {}
    return data if isinstance(data, dict) else {}


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
    if text.startswith("random:") and text[7:] in CHINESE_CLIP_CONFIGS:
        torch.manual_seed(seed)
        return _finish(create_chinese_clip(text[7:])), text[7:], f"random (seed {seed})"
    if text in CN_CLIP_WEIGHTS:
        from clipforge.weights.download import download

        entry = CN_CLIP_WEIGHTS[text]
        path = download(entry.url, download_root, entry.sha256, filename=entry.filename)
        state = cn_clip_state_dict(_read_torch(path, strict=True))
        model = ChineseCLIP(**config_from_cn_state_dict(state))
        model.load_state_dict(state, strict=True)
        return _finish(model), text, text
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except ValueError:
            return None
        if not isinstance(config, dict) or config.get("model_type") != "chinese_clip":
            return None
        state, ours = read_transformers_folder(path)
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
    return _finish(model), path.name, str(path.resolve())
