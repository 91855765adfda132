"""Text tower: stopping at the longest prompt vs running all 77 positions, and the cost of
building the ImageNet zero-shot classifier (1000 classes x 80 templates), against HF.

"Typical prompts" are a fixed random sample of the 80,000 ImageNet prompts (template x class),
tokenised by clipforge (identical ids to the reference tokenizer). Candidates:

    clipforge          prepare(fp32): tower stops at the batch's longest prompt, EOT rows only at the end
    clipforge-full77   the same weights over all 77 positions (what the tower did before) - "before"
    clipforge-bf16     prepare(bf16), truncated
    clipforge-int8     quantize_dynamic_int8, truncated
    onnxruntime        the exported text encoder (77 positions, EOT gather in the graph)
    hf / hf-autocast / hf-bf16   transformers CLIPModel.get_text_features (77 positions)
    openai             OpenAI's reference encode_text (77 positions)

The classifier build is timed on one evenly spread subset of classes, the same for every candidate,
and scaled to 1000 classes (cost is linear in the number of prompts); results say so in
`extrapolated_from`. Each candidate builds it once untimed (its weights give the cosine column), then
all are timed round-robin, median kept, as every comparison of the suite is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from benchmarks.common import time_round_robin
from benchmarks.zoo import Zoo

__all__ = ["FullLengthText", "hf_class_embeddings", "run", "typical_prompts"]


class FullLengthText(torch.nn.Module):
    """A CLIP whose `encode_text` runs every position (the pre-truncation computation)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        from clipforge.inference.onnx_export import TextTower

        self.tower = TextTower(model)
        self.embed_dim = model.embed_dim
        self.context_length = model.context_length

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tower(tokens)[0]  # the export's tower returns (raw features, unit features)


def typical_prompts(count: int, seed: int = 0) -> list[str]:
    from clipforge.zeroshot import get_classnames, get_templates

    classes, templates = get_classnames("imagenet"), get_templates("imagenet")
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(classes) * len(templates), generator=generator)[:count].tolist()
    return [templates[i % len(templates)].format(classes[i // len(templates)]) for i in picks]


def _hf_text(hf: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    out = hf.get_text_features(input_ids=tokens)
    return getattr(out, "pooler_output", out)


@torch.inference_mode()
def hf_class_embeddings(hf: torch.nn.Module, classnames: Sequence[str], templates: Sequence[str],
                        batch_size: int = 256, autocast: bool = False) -> torch.Tensor:
    """The prompt-ensemble recipe as an HF user writes it: class-major batches of 77 tokens."""
    from clipforge.text import tokenize

    prompts = [t.format(c) for c in classnames for t in templates]
    tokens = tokenize(prompts, truncate=True)
    sums = torch.zeros(len(classnames), hf.config.projection_dim)
    for start in range(0, len(prompts), batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            feats = _hf_text(hf, tokens[start:start + batch_size]).float()
        feats = feats / feats.norm(dim=-1, keepdim=True)
        owner = torch.arange(start, start + len(feats)) // len(templates)
        sums.index_add_(0, owner, feats)
    mean = sums / len(templates)
    return mean / mean.norm(dim=-1, keepdim=True)


def _text_candidates(zoo: Zoo, full: bool = True) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """`full=False` (quick runs) leaves out HF autocast and OpenAI's reference (both 77-position)."""
    from clipforge.inference import bf16_supported

    out: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    out["clipforge"] = zoo.prepared("fp32").encode_text
    full = FullLengthText(zoo.base)
    out["clipforge-full77"] = full.encode_text
    if bf16_supported():
        out["clipforge-bf16"] = zoo.prepared("bf16").encode_text
    out["clipforge-int8"] = zoo.int8().encode_text
    onnx = zoo.onnx()
    out["onnxruntime"] = lambda t: torch.from_numpy(onnx.encode_text(t))
    hf = zoo.hf()
    if hf is not None:
        out["hf"] = lambda t: _hf_text(hf, t)
        if bf16_supported():
            hf16 = zoo.hf(bf16=True)

            def hf_autocast(t: torch.Tensor) -> torch.Tensor:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return _hf_text(hf, t)

            if full:
                out["hf-autocast"] = hf_autocast
            out["hf-bf16"] = lambda t: _hf_text(hf16, t)
    reference = zoo.reference() if full else None
    if reference is not None:
        out["openai"] = reference.encode_text
    return out


def _spread(items: Sequence[str], count: int) -> list[str]:
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def _classifier(zoo: Zoo, quick: bool, progress: bool) -> dict:
    from clipforge.inference import bf16_supported
    from clipforge.zeroshot import build_class_embeddings, get_classnames, get_templates

    classes, templates = get_classnames("imagenet"), get_templates("imagenet")
    count, repeats = (4, 2) if quick else (25, 3)  # 25 x 80 prompts: ~10 s a call for the 77-position candidates
    runs: dict[str, Callable[[list[str]], torch.Tensor]] = {
        "clipforge": lambda c: build_class_embeddings(zoo.prepared("fp32"), c, templates, progress=False),
        "clipforge-full77": lambda c: build_class_embeddings(FullLengthText(zoo.base), c, templates, progress=False),
    }
    if bf16_supported():
        runs["clipforge-bf16"] = lambda c: build_class_embeddings(zoo.prepared("bf16"), c, templates, progress=False)
    hf = zoo.hf()
    if hf is not None:
        runs["hf"] = lambda c: hf_class_embeddings(hf, c, templates)
    out: dict = {"classes": len(classes), "templates": len(templates), "runs": {}}
    subset = _spread(classes, count)
    with torch.inference_mode():
        baseline = build_class_embeddings(zoo.base, subset, templates, progress=False)
        agree = {}
        for name, fn in tqdm(runs.items(), desc="classifier build", disable=not progress, leave=False):
            weights = fn(subset)  # also each candidate's warm-up
            agree[name] = float(torch.nn.functional.cosine_similarity(weights.float(), baseline, dim=-1).min())
        timings = time_round_robin({name: (lambda fn=fn: fn(subset)) for name, fn in runs.items()}, repeats=repeats,
                                   warmup=0)
    for name, t in timings.items():
        out["runs"][name] = {"measured_classes": count, "measured_seconds": t.median_s, "min_seconds": t.min_s,
                             "calls": t.calls, "seconds_for_1000_classes": t.median_s * len(classes) / count,
                             "extrapolated_from": count if count != len(classes) else None,
                             "cosine_min_vs_fp32": agree[name]}
    return out


def run(quick: bool = False, zoo: Zoo | None = None, progress: bool = True) -> dict:
    own = zoo is None
    zoo = zoo or Zoo("ViT-B/32")
    from clipforge.text import tokenize

    batch = 32 if quick else 128
    tokens = tokenize(typical_prompts(batch), truncate=True)
    candidates = _text_candidates(zoo, full=not quick)
    with torch.inference_mode():
        full = FullLengthText(zoo.base).encode_text(tokens).float()
        accuracy = {}
        for name, fn in candidates.items():
            feats = fn(tokens)
            feats = getattr(feats, "pooler_output", feats).float()
            cos = torch.nn.functional.cosine_similarity(feats, full, dim=-1)
            accuracy[name] = {"cosine_min": float(cos.min()), "max_abs_diff": float((feats - full).abs().max())}
        calls = {k: (lambda fn=fn: fn(tokens)) for k, fn in candidates.items()}
        timings = time_round_robin(calls, repeats=2 if quick else 3, warmup=0)  # the accuracy pass warmed up
    result = {
        "batch": batch, "mean_tokens": float(tokens.argmax(-1).float().add(1).mean()),
        "max_tokens": int(tokens.argmax(-1).max()) + 1, "accuracy_vs_full77": accuracy,
        "throughput": {k: {"texts_per_s": t.per_second(batch), "ms_per_batch": t.median_s * 1e3,
                           "min_ms": t.min_s * 1e3} for k, t in timings.items()},
        "classifier": _classifier(zoo, quick, progress),
    }
    if own:
        zoo.close()
    return result
