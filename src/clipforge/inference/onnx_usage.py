"""What an ONNX export must say besides its graphs, so the graphs can be used without clipforge.

`export onnx` wrote shapes and names only; a user of the two graphs also needs what turns a photo into
``pixel_values`` and a text into ``input_ids``, and how two embeddings become the probabilities `classify`
gives. Each of those is read from the same objects every command uses (the loaded model's `preprocess`,
`tokenizer` and `scoring`; for a bare module, `preprocess_for`, `tokenizer_of` and `scoring_of`, which is how
`LoadedModel` gets them), never re-derived:

- ``preprocessing``: image size, resize mode (``shortest``: shortest side to the size, then a centre crop, as
  torchvision's ``Resize`` + ``CenterCrop``, or at transformers' offset (``crop_offset``: ``floor``) for a Hugging
  Face folder whose processor crops; ``squash``: straight to size x size, no crop), interpolation, the
  1/255 rescale and mean/std, RGB channel order, NCHW layout; and ``steps``: everything `Preprocess.load` does to
  a file, in order (EXIF orientation first, the 16-bit greyscale rule, RGB before resizing), so a pipeline of PIL
  and numpy that follows them gives clipforge's exact pixels. ``jpeg_draft`` (false) says those are the full
  decode's pixels (``--exact-decode``); clipforge's default draft decode of big JPEGs differs slightly.
- ``scoring``: ``softmax`` (``softmax(scale * cos)`` over the labels: probabilities sum to 1) or ``sigmoid``
  (``sigmoid(scale * cos + bias)`` per label, SigLIP), with ``scale`` = exp of the model's ``logit_scale`` (not
  100 for every model: clipforge-tiny's is ~12) and ``bias``; ``cos`` is the dot product of the graphs'
  ``image_embeds`` and ``text_embeds``.
- ``tokenizer``: its kind (OpenAI's BPE, SentencePiece, a tokenizers JSON, WordPiece), the context length the
  rows are cut or padded to (and why: a tower that attends to its padding needs the full context), the ids and
  cleaning it uses (a config's cleaning word spelled out in ``clean_steps``), and its file: a model family's own
  file (Chinese-CLIP: its BERT vocabulary) is copied
  beside the graphs (``files``); OpenAI's BPE vocabulary is named (clipforge, open_clip and OpenAI's ``clip``
  ship the same file).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from clipforge.weights.download import sha256_file

__all__ = ["full_context_only", "tokenizer_file", "usage_meta"]

_OPENAI_BPE = {"vocab": "bpe_simple_vocab_16e6.txt.gz", "start_id": 49406, "end_id": 49407, "pad_id": 0,
               "clean": "ftfy, HTML unescaped, whitespace collapsed, lower case",
               "truncate": "cut to the context with the end token kept",
               "same_as": "clipforge.tokenize, open_clip.tokenize, OpenAI's clip.tokenize"}
_CLEAN_FIRST = "ftfy.fix_text, html.unescape twice, stripped"
_CLEANING = {  # `clipforge.text.families.clean`'s steps, in order, for each word a model config uses
    "canonicalize": f"{_CLEAN_FIRST}; '_' to ' '; every ASCII punctuation character (Python's string.punctuation) "
                    "removed; lower case; whitespace runs collapsed to one space (open_clip's canonicalize_text after "
                    "its basic_clean)",
    "whitespace": f"{_CLEAN_FIRST}; whitespace runs collapsed to one space (case kept)",
    "lower": f"{_CLEAN_FIRST}; whitespace runs collapsed to one space; lower case",
}
_EIGHT_BIT = ("16/32-bit greyscale to 8 bits before anything else, never clipped: I;16/I;16L/I;16B/I;16N as "
              "round(v * 255 / 65535) (I;16S: v + 32768 first); I and F by their range: values within 0..255 kept, "
              "I within 0..65535 as 16-bit, F within 0..1 as round(v * 255), otherwise stretched from min to max as "
              "round((v - min) * 255 / (max - min)) (NaN and infinities read as 0); other modes unchanged")
_TO_RGB = ("to 8-bit RGB BEFORE resizing (the reference converts after the crop; the same for RGB and greyscale, not "
           "for palette/alpha files): transparency dropped (stored colours kept, not composited over a background); "
           "a palette with a transparent colour converted through RGBA; La through LA; then Pillow's convert('RGB')")
_DRAFT = ("off: the graphs' reference pixels come from the full decode, as clipforge's --exact-decode and "
          "Preprocess(draft=False). clipforge's own commands and library (embed, classify, index, load_model) decode "
          "a JPEG whose shorter side is at least 2 x ceil(1.5 x image_size) at a reduced DCT scale (Pillow's draft) "
          "and resample only the region the crop keeps: their pixels differ slightly from these (image embeddings "
          "cos >= 0.996 measured at 32 px on ImageNet photos; ~1.0000 at 224 px); pass --exact-decode (or "
          "draft=False) to get these pixels exactly")


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
    if loaded is None and getattr(module, "bert", None) is not None and getattr(module, "tokenizer", None) is None:
        from clipforge.text.families import CarriedTokenizer
        from clipforge.text.wordpiece import get_wordpiece_tokenizer

        # a Chinese-CLIP built in memory: its tokenizer is the WordPiece one `cn_clip_load` gives loaded models
        tokenizer = CarriedTokenizer(get_wordpiece_tokenizer(), int(module.context_length))
    return ({"preprocessing": _preprocessing(preprocess), "scoring": _scoring(scoring),
             "tokenizer": _tokenizer(tokenizer, module)}, tokenizer_file(tokenizer))


def full_context_only(module: Any) -> bool:
    """True for a text tower whose features depend on the padding: attention over every position with no padding
    mask and no causal mask (SigLIP's, read at the last position). Its rows must be padded to the full context, so
    the export fixes the graph's sequence axis to it; other towers (causal, or masking their padding) give the same
    features on rows cut after the batch's longest prompt."""
    if getattr(module, "bert", None) is not None or getattr(module, "text", None) is not None:
        return False  # Chinese-CLIP's BERT, the transformers towers: padding masked
    transformer = getattr(module, "transformer", None)
    return transformer is not None and not bool(getattr(transformer, "causal", True))


def _preprocessing(preprocess: Any) -> dict[str, Any]:
    resize = str(getattr(preprocess, "resize_mode", "shortest"))
    size = int(preprocess.n_px)
    # where the centre crop starts: torchvision's round-half-to-even, or transformers' floor for a Hugging Face
    # folder whose image processor crops (`image.geometry.crop_offsets`): a pixel apart on 12% of photos
    floor = str(getattr(preprocess, "crop_offset", "round")) == "floor"
    crop = (f"at ((side - {size}) // 2), as transformers' CLIPImageProcessor center_crop" if floor else
            f"at round((side - {size}) / 2) (half to even), as torchvision's Resize({size}) + CenterCrop({size})")
    interpolation = str(getattr(preprocess, "interpolation", "bicubic"))
    resize_text = (f"straight to {size}x{size}, no crop" if resize == "squash" else
                   f"shortest side to {size} (other side int({size} * long / short)), then a centre crop of "
                   f"{size}x{size} {crop}")
    mean, std = list(preprocess.mean), list(preprocess.std)
    return {
        "image_size": size, "resize_mode": resize,
        "crop_offset": None if resize == "squash" else ("floor" if floor else "round"),
        "resize": resize_text, "interpolation": interpolation,
        "convert": "RGB", "rescale": 1 / 255, "mean": mean, "std": std,
        "normalize": "(pixel / 255 - mean) / std per channel", "layout": "NCHW float32",
        "jpeg_draft": False, "jpeg_draft_note": _DRAFT,
        "steps": _steps(size, resize, floor, interpolation, resize_text, mean, std),
    }


def _steps(size: int, resize: str, floor: bool, interpolation: str, resize_text: str, mean: list[float],
           std: list[float]) -> list[dict[str, Any]]:
    """Everything `Preprocess.load` (`image.loading.decode_image`, then `Preprocess._resized_pixels`) does to a
    file, in its order: a pipeline that follows these steps with PIL and numpy gives clipforge's exact pixels."""
    geometry = "all" if resize == "squash" else "shortest"
    steps: list[dict[str, Any]] = [
        {"op": "decode", "what": "Pillow; the first frame of an animated GIF/WebP/APNG; decoded in full (jpeg_draft)"},
        {"op": "exif_transpose", "what": "PIL.ImageOps.exif_transpose: the EXIF orientation (tag 0x0112) applied"},
        {"op": "to_8bit", "what": _EIGHT_BIT},
        {"op": "convert", "mode": "RGB", "what": _TO_RGB},
        {"op": "resize", "size": size, "geometry": geometry, "interpolation": interpolation,
         "what": f"{resize_text}; PIL Image.resize with {interpolation}, skipped when the picture already has the "
                 f"target size (as torchvision); a target over {1 << 25:,} pixels resamples only the crop's region"},
    ]
    if resize != "squash":
        steps.append({"op": "center_crop", "size": size, "offset": "floor" if floor else "round",
                      "what": "left = (w - size) // 2" if floor else "left = round((w - size) / 2), half to even"})
    return steps + [
        {"op": "rescale", "factor": 1 / 255, "what": "uint8 -> float32, x / 255 (np.float32(255))"},
        {"op": "normalize", "mean": mean, "std": std, "what": "(x - mean) / std per channel, float32"},
        {"op": "layout", "what": "HWC -> CHW, batched as NCHW float32"},
    ]


def _scoring(scoring: Any) -> dict[str, Any]:
    kind = str(scoring.kind)
    formula = "softmax(scale * cos) over the labels" if kind == "softmax" else \
        "sigmoid(scale * cos + bias) per label (independent; they do not sum to 1)"
    return {"kind": kind, "scale": float(scoring.scale), "bias": float(scoring.bias),
            "formula": formula + "; cos = image_embeds . text_embeds"}


def tokenizer_file(tokenizer: Any) -> Path | None:
    """The tokenizer file to copy beside the graphs: a model family's own, when it was found; else None."""
    inner = getattr(tokenizer, "tokenizer", None)
    if getattr(tokenizer, "spec", None) is None and _is_wordpiece(inner):
        from clipforge.text.wordpiece import WORDPIECE_VOCAB_PATH

        return Path(getattr(inner, "vocab_path", WORDPIECE_VOCAB_PATH))  # Chinese-CLIP's BERT vocabulary
    path = getattr(tokenizer, "path", None)
    return Path(path) if path is not None and Path(path).is_file() else None


def _is_wordpiece(inner: Any) -> bool:
    from clipforge.text.wordpiece import WordPieceTokenizer

    return isinstance(inner, WordPieceTokenizer)


def _rows(module: Any, pad_id: Any) -> str:
    """How id rows are padded, and why, for this model's text tower."""
    if full_context_only(module):
        return (f"padded with pad_id to exactly the full context: the tower attends to every position (padding "
                f"included, no mask) and reads the last one, so the graph's sequence axis is fixed to "
                f"{int(module.context_length)}")
    pool = str(getattr(module, "text_pool", ""))
    read = {"mean": "mean-pools the positions whose id is not pad_id", "cls": "reads position 0, padding masked"}
    how = read.get(pool, "masks the padding") if getattr(module, "text", None) is not None else "masks the padding"
    return (f"padded with pad_id ({pad_id}) to the context: the tower {how}, so rows may also be cut after the "
            f"batch's longest prompt")


def _tokenizer(tokenizer: Any, module: Any = None) -> dict[str, Any]:
    context = int(tokenizer.context_length)
    spec = getattr(tokenizer, "spec", None)
    if spec is None:  # a tokenizer the model carries (Chinese-CLIP's WordPiece)
        inner = getattr(tokenizer, "tokenizer", tokenizer)
        if _is_wordpiece(inner):
            vocab = tokenizer_file(tokenizer)
            return {"kind": "bert-wordpiece", "context_length": context, "file": vocab.name, "included": True,
                    "sha256": sha256_file(vocab), "cls_id": inner.cls_id, "sep_id": inner.sep_id,
                    "pad_id": inner.pad_id, "unk_id": inner.unk_id, "lower_case": bool(inner.lower_case),
                    "clean": "BERT's basic tokenizer (cn_clip's): NUL, U+FFFD and control/format characters dropped, "
                             "whitespace to spaces, spaces around CJK ideographs, lower case with accents stripped "
                             "(NFD, Mn dropped), punctuation split off; then greedy longest-match WordPiece (##)",
                    "truncate": f"the first {context - 2} word pieces kept",
                    "rows": f"[CLS] pieces [SEP], then pad_id to {context}; the tower masks the padding and reads "
                            "[CLS] (position 0), so rows may also be cut after the batch's longest prompt",
                    "same_as": "cn_clip.clip.tokenize; transformers' BertTokenizer(vocab_file=<file>)"}
        return {"kind": "carried", "class": f"{type(inner).__module__}.{type(inner).__qualname__}",
                "context_length": context}
    kind = str(spec.get("kind", "openai-bpe"))
    out: dict[str, Any] = {"kind": kind, "context_length": context}
    if kind == "openai-bpe":
        from clipforge.text.vocab import VOCAB_PATH

        return out | _OPENAI_BPE | {"vocab_sha256": sha256_file(VOCAB_PATH) if VOCAB_PATH.is_file() else None}
    out |= {k: v for k, v in spec.items() if k != "kind"}  # file, clean, eos_id, pad_id...
    if "pad_id" not in out:  # the spec leaves it to the tokenizer file (hf-json, hf-transformers): ask it
        with contextlib.suppress(OSError, AttributeError):  # no file found (random weights, a model in memory)
            out["pad_id"] = tokenizer.pad_id()
    if out.get("clean") in _CLEANING:  # spelled out, as the openai-bpe entry's: the word alone is open_clip's
        out["clean_steps"] = _CLEANING[out["clean"]]
    out["rows"] = _rows(module, out.get("pad_id")) if module is not None else "padded to the full context"
    found = tokenizer_file(tokenizer)
    if found is not None:
        out |= {"file": found.name, "included": True, "sha256": sha256_file(found)}
    else:
        out["included"] = False  # random weights, or a model built in memory: no file was ever found
    return out

