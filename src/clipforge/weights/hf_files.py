"""The files beside a Hugging Face ``CLIPModel`` that make a folder a whole model to HF.

``config.json`` + weights load as a ``CLIPModel``, but ``AutoTokenizer`` silently builds a
2-token tokenizer without ``vocab.json``/``merges.txt``, and ``CLIPProcessor`` and
``pipeline("zero-shot-image-classification")`` need ``preprocessor_config.json``. These are
written from clipforge's own BPE tables and the weights' preprocessing, so the folder
tokenises and preprocesses as clipforge does (known differences: HF's tokenizer does not
unescape HTML entities such as ``&amp;``; OpenAI's and clipforge's do. CLIPImageProcessor cuts its
centre crop at ``(size - crop) // 2`` where torchvision's CenterCrop rounds half to even, so on about
12% of photos transformers' crop of such a folder starts a pixel before OpenAI's; clipforge reads the
folder back as transformers does, ``crop_offset: "floor"``, see `hf_preprocess`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipforge.atomic import write_json_atomic, write_text_atomic

SPECIAL_TOKENS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                  "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
PREPROCESSOR_FILE = "preprocessor_config.json"
_PIL_RESAMPLE = {"bicubic": 3, "bilinear": 2}


def write_tokenizer_files(directory: Path, context_length: int = 77) -> list[Path]:
    """vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json for CLIPTokenizer."""
    from clipforge.text.vocab import load_vocab

    vocab = load_vocab()
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in vocab.merges)
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": context_length, "do_lower_case": True,
              "errors": "replace", "add_prefix_space": False, **SPECIAL_TOKENS}
    return [
        write_json_atomic(directory / "vocab.json", dict(vocab.encoder)),
        write_text_atomic(directory / "merges.txt", merges),
        write_json_atomic(directory / "tokenizer_config.json", config),
        write_json_atomic(directory / "special_tokens_map.json", SPECIAL_TOKENS),
    ]


def write_preprocessor_config(directory: Path, image_size: int, preprocess: dict[str, Any] | None = None) -> Path:
    """preprocessor_config.json for CLIPImageProcessor: the weights' mean/std/interpolation/resize."""
    from clipforge.weights.preprocess_cfg import validate_preprocess

    cfg = validate_preprocess(dict(preprocess or {}))
    squash = cfg["resize_mode"] == "squash"
    config = {
        "image_processor_type": "CLIPImageProcessor", "processor_class": "CLIPProcessor",
        "do_resize": True, "resample": _PIL_RESAMPLE[cfg["interpolation"]],
        "size": {"height": image_size, "width": image_size} if squash else {"shortest_edge": image_size},
        "do_center_crop": not squash, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": cfg["mean"], "image_std": cfg["std"], "do_convert_rgb": True,
    }
    return write_json_atomic(directory / PREPROCESSOR_FILE, config)
