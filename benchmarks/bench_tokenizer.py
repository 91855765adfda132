"""Tokenizer throughput: clipforge's fast tokenizer vs OpenAI's pure-Python reference BPE.

Texts: the 5,000 Flickr8k captions in ../shared/data/flickr8k_1k/captions.txt. Both sides
produce the full [N, 77] id tensor (as `clip.tokenize` does) and the ids must be identical.

- cold: a fresh tokenizer instance, so neither side's memo (the reference's BPE cache,
  clipforge's chunk memo) helps - the cost of a first pass over new text;
- warm: the same texts again on the same instance - the cost in a loop over repeated prompts.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
import time
from pathlib import Path

import torch

__all__ = ["load_captions", "reference_tokenize", "run"]

CAPTIONS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k_1k" / "captions.txt"


def load_captions(path: Path = CAPTIONS) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "caption" not in rows[0]:
        raise ValueError(f"{path}: expected a CSV with columns image,caption")
    return [row["caption"] for row in rows]


def _reference_tokenizer_module():
    key = "_clip_reference_simple_tokenizer"
    if key in sys.modules:
        return sys.modules[key]
    for entry in sys.path:
        path = Path(entry) / "clip" / "simple_tokenizer.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(key, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            spec.loader.exec_module(module)
            return module
    return None


def reference_tokenize(tokenizer, texts: list[str], context_length: int = 77) -> torch.Tensor:
    """`clip.tokenize(texts, truncate=True)` from openai/CLIP, on a given SimpleTokenizer."""
    sot, eot = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        tokens = [sot] + tokenizer.encode(text) + [eot]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[-1] = eot
        result[i, :len(tokens)] = torch.tensor(tokens)
    return result


def _fast_tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """clipforge's `tokenize` on a given FastTokenizer instance (so its memo can start empty)."""
    import clipforge.text.tokenizer as module

    if not hasattr(module, "_tokenizer"):  # layout changed: fall back to the shared instance
        return module.tokenize(texts, truncate=True)
    saved = module._tokenizer
    module._tokenizer = tokenizer
    try:
        return module.tokenize(texts, truncate=True)
    finally:
        module._tokenizer = saved


def run(quick: bool = False, progress: bool = True) -> dict:
    from clipforge.text import FastTokenizer

    if not CAPTIONS.is_file():
        return {"skipped": f"{CAPTIONS} is absent"}
    reference = _reference_tokenizer_module()
    if reference is None:
        return {"skipped": "clip-anytorch (OpenAI's reference tokenizer) is not installed"}
    texts = load_captions()
    out: dict = {"texts": len(texts), "source": str(CAPTIONS.name)}
    ref_tok = reference.SimpleTokenizer()
    start = time.perf_counter()
    ref_ids = reference_tokenize(ref_tok, texts)
    ref_cold = time.perf_counter() - start
    start = time.perf_counter()
    reference_tokenize(ref_tok, texts)
    ref_warm = time.perf_counter() - start

    fast = FastTokenizer()
    start = time.perf_counter()
    fast_ids = _fast_tokenize(fast, texts)
    fast_cold = time.perf_counter() - start
    warm = []
    for _ in range(3 if quick else 10):
        start = time.perf_counter()
        _fast_tokenize(fast, texts)
        warm.append(time.perf_counter() - start)
    fast_warm = min(warm)
    mismatched = int((fast_ids != ref_ids).any(dim=1).sum())
    out.update({
        "reference_cold_texts_per_s": len(texts) / ref_cold, "reference_warm_texts_per_s": len(texts) / ref_warm,
        "fast_cold_texts_per_s": len(texts) / fast_cold, "fast_warm_texts_per_s": len(texts) / fast_warm,
        "speedup_cold": ref_cold / fast_cold, "speedup_warm": ref_warm / fast_warm,
        "identical_ids": mismatched == 0, "mismatched_rows": mismatched,
    })
    return out
