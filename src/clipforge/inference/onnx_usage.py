"""What an ONNX export must say besides its graphs, so the graphs can be used without clipforge.

`export onnx` wrote shapes and names only; a user of the two graphs also needs what turns a photo into
``pixel_values`` and a text into ``input_ids``, and how two embeddings become the probabilities `classify`
gives. Each of those is read from the same objects every command uses (the loaded model's `preprocess`,
`tokenizer` and `scoring`; for a bare module, `preprocess_for`, `tokenizer_of` and `scoring_of`, which is how
`LoadedModel` gets them), never re-derived:

- ``preprocessing``: image size, resize mode (``shortest``: shortest side to the size, then a centre crop, as
  torchvision's ``Resize`` + ``CenterCrop``, or at transformers' offset (``crop_offset``: ``floor``) for a Hugging
  Face folder whose processor crops; ``squash``: straight to size x size, no crop), interpolation, the
  1/255 rescale and mean/std, RGB channel order, NCHW layout.
- ``scoring``: ``softmax`` (``softmax(scale * cos)`` over the labels: probabilities sum to 1) or ``sigmoid``
  (``sigmoid(scale * cos + bias)`` per label, SigLIP), with ``scale`` = exp of the model's ``logit_scale`` (not
  100 for every model: clipforge-tiny's is ~12) and ``bias``; ``cos`` is the dot product of the graphs'
  ``image_embeds`` and ``text_embeds``.
- ``tokenizer``: its kind (OpenAI's BPE, SentencePiece, a tokenizers JSON, WordPiece), the context length the
  rows are cut or padded to, the ids and cleaning it uses, and its file: a model family's own file is copied
  beside the graphs (``files``); OpenAI's BPE vocabulary is named (clipforge, open_clip and OpenAI's ``clip``
  ship the same file).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = ["tokenizer_file", "usage_meta"]

_OPENAI_BPE = {"vocab": "bpe_simple_vocab_16e6.txt.gz", "start_id": 49406, "end_id": 49407, "pad_id": 0,
               "clean": "ftfy, HTML unescaped, whitespace collapsed, lower case",
               "truncate": "cut to the context with the end token kept",
               "same_as": "clipforge.tokenize, open_clip.tokenize, OpenAI's clip.tokenize"}


def usage_meta(source: Any, module: Any) -> tuple[dict[str, Any], Path | None]:
    """``{"preprocessing", "scoring", "tokenizer"}`` of `source` (a `LoadedModel`, or the bare model `module`), and
    the tokenizer file to copy beside the graphs (None: OpenAI's BPE, or no file was found)."""
    from clipforge.models.scoring import scoring_of
    from clipforge.text.families import tokenizer_of
    from clipforge.weights.preprocessing import preprocess_for

    loaded = source if source is not module else None  # a bare model's `scoring` is a word, its tokenizer raw
    preprocess = loaded.preprocess if loaded is not None else preprocess_for(module)
    tokenizer = loaded.tokenizer if loaded is not None else tokenizer_of(module)
    scoring = loaded.scoring if loaded is not None else scoring_of(module)
    return ({"preprocessing": _preprocessing(preprocess), "scoring": _scoring(scoring),
             "tokenizer": _tokenizer(tokenizer)}, tokenizer_file(tokenizer))


def _preprocessing(preprocess: Any) -> dict[str, Any]:
    resize = str(getattr(preprocess, "resize_mode", "shortest"))
    size = int(preprocess.n_px)
    # where the centre crop starts: torchvision's round-half-to-even, or transformers' floor for a Hugging Face
    # folder whose image processor crops (`image.geometry.crop_offsets`): a pixel apart on 12% of photos
    floor = str(getattr(preprocess, "crop_offset", "round")) == "floor"
    crop = (f"at ((side - {size}) // 2), as transformers' CLIPImageProcessor center_crop" if floor else
            f"at round((side - {size}) / 2) (half to even), as torchvision's Resize({size}) + CenterCrop({size})")
    return {
        "image_size": size, "resize_mode": resize,
        "crop_offset": None if resize == "squash" else ("floor" if floor else "round"),
        "resize": (f"straight to {size}x{size}, no crop" if resize == "squash" else
                   f"shortest side to {size} (other side int({size} * long / short)), then a centre crop of "
                   f"{size}x{size} {crop}"),
        "interpolation": str(getattr(preprocess, "interpolation", "bicubic")),
        "convert": "RGB", "rescale": 1 / 255, "mean": list(preprocess.mean), "std": list(preprocess.std),
        "normalize": "(pixel / 255 - mean) / std per channel", "layout": "NCHW float32",
    }


def _scoring(scoring: Any) -> dict[str, Any]:
    kind = str(scoring.kind)
    formula = "softmax(scale * cos) over the labels" if kind == "softmax" else \
        "sigmoid(scale * cos + bias) per label (independent; they do not sum to 1)"
    return {"kind": kind, "scale": float(scoring.scale), "bias": float(scoring.bias),
            "formula": formula + "; cos = image_embeds . text_embeds"}


def tokenizer_file(tokenizer: Any) -> Path | None:
    """The tokenizer file to copy beside the graphs: a model family's own, when it was found; else None."""
    path = getattr(tokenizer, "path", None)
    return Path(path) if path is not None and Path(path).is_file() else None


def _tokenizer(tokenizer: Any) -> dict[str, Any]:
    context = int(tokenizer.context_length)
    spec = getattr(tokenizer, "spec", None)
    if spec is None:  # a tokenizer the model carries (Chinese-CLIP's WordPiece)
        inner = getattr(tokenizer, "tokenizer", tokenizer)
        return {"kind": "carried", "class": f"{type(inner).__module__}.{type(inner).__qualname__}",
                "context_length": context}
    kind = str(spec.get("kind", "openai-bpe"))
    out: dict[str, Any] = {"kind": kind, "context_length": context}
    if kind == "openai-bpe":
        from clipforge.text.vocab import VOCAB_PATH

        return out | _OPENAI_BPE | {"vocab_sha256": _sha256(VOCAB_PATH) if VOCAB_PATH.is_file() else None}
    out |= {k: v for k, v in spec.items() if k != "kind"}  # file, clean, eos_id, pad_id...
    out["rows"] = "padded to the full context (the text tower reads the last position)"
    found = tokenizer_file(tokenizer)
    if found is not None:
        out |= {"file": found.name, "included": True, "sha256": _sha256(found)}
    else:
        out["included"] = False  # random weights, or a model built in memory: no file was ever found
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
