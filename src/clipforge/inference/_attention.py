"""Attention for the fast towers on the CPU: two batched matmuls around an fp32 softmax, in bf16.

`attention` is what every packed block calls (OpenAI's towers in `fast_transformer`, transformers'
encoders in `fast_encoder`): torch's `scaled_dot_product_attention` in fp32 and off the CPU, and in
bf16 on the CPU its own path, tuned on an AVX512-BF16 EPYC for CLIP's 15-257 tokens (see `attention`
and `_softmax_last` for what was measured); on CPUs with AMX torch's fused kernel takes rows of 48 keys
and more (`_fused_wins`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipforge.inference.cpu import amx_supported

__all__ = ["attention"]

SHORT_KEYS = 16
"""Rows of bf16 attention scores shorter than this are softmaxed in `_softmax_last`'s own three passes."""
PAD_MIN_KEYS = 12
"""From this many keys up to `SHORT_KEYS`, keys and values are zero-padded to `SHORT_KEYS` (`_softmax_attention`)."""
FP32_SOFTMAX_KEYS = 128
"""Rows of bf16 scores shorter than this are softmaxed by torch's fp32 kernel, a cache-sized chunk at a time."""
SOFTMAX_CHUNK = 1 << 18
"""Scores per chunk of `_softmax_last`: 1 MiB in fp32, one core's L2 on the machines measured."""

SCORES_CACHE_BYTES = 1 << 20
"""bf16 attention scores per chunk: one core's L2 on the machines measured (Zen 4: 1 MiB)."""

SMALL_PAIRS = 64
"""bf16 attention of at most this many (sequence, head) pairs may be small enough for torch's fused kernel."""
SMALL_SCORES = {False: 50_000, True: 80_000}
"""... and of at most this many scores (causal: the kernel skips the hidden half). See `_small`."""

AMX_FUSED_MIN_KEYS = 48
"""On CPUs with AMX, bf16 attention over at least this many keys runs torch's fused kernel. See `_fused_wins`."""


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
               keep: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over [N, heads, L, d]; `keep` (bool [N, 1, 1, L]): the keys each
    sequence attends to (the others are padding), None for all.

    bf16 on the CPU, unless torch's fused kernel is faster there (`_fused_wins`: small attention, and
    `AMX_FUSED_MIN_KEYS` keys or more on CPUs with AMX): two batched
    bf16 matmuls around a softmax of bf16 scores (`_softmax_last`: fp32
    arithmetic, its output rounded once; the causal text tower's future keys are masked first).
    torch's flash kernel for the CPU is tuned for long sequences; at CLIP's 15-257 tokens the plain
    matmuls match or beat it once a batch has a few sequences (one image or a few prompts: `_small`). The scores stay bf16 on purpose: at batch 32
    they are the largest tensor of a block (32 x 12 x 196^2 for a B/16 image tower, 59 MB in fp32),
    and an fp32 copy of them made attention memory-bound, 2x slower at 196-257 tokens than bf16
    (measured on an AVX512-BF16 EPYC, 2 threads: 50 -> 30 ms, 231 -> 107 ms per block). The query is
    scaled before its product is rounded (exact for 64-wide heads); random ViT-B/32 and SigLIP towers
    stay >= 0.999 cosine to fp32 (`tests/perf/test_perf_precision.py`).

    Image towers (one core per slice of `split_batch`) whose scores outgrow that core's cache
    (`SCORES_CACHE_BYTES`) run their batch in chunks of images whose scores fit: each chunk's scores
    are written, softmaxed and read while still in cache, and its output goes straight into the
    [N, L, heads, d] layout the out-projection reads. Same arithmetic per image. Measured on one
    core at batch 16 and 197 tokens: 25.5 -> 23.0 ms per block; whole towers at batch 32 on two
    cores, medians of 4 interleaved calls: ViT-B/16 2.77 -> 2.72 s, SigLIP 2 B/16 2.98 -> 2.92 s.
    The causal text towers (at most 77 tokens) gained nothing from chunks and are attended whole.
    """
    batch, heads, length, head_dim = q.shape
    keys = k.shape[-2]
    if q.dtype != torch.bfloat16 or q.device.type != "cpu" or _fused_wins(batch * heads, length, keys, causal):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, is_causal=causal)
    step = max(1, SCORES_CACHE_BYTES // (heads * length * keys * q.element_size()))
    if causal:  # the text tower: position i sees keys <= i, as is_causal does
        # as wide as the keys `_softmax_attention` pads to: the padding is then hidden with the future
        hidden: torch.Tensor | None = torch.ones(length, _padded_keys(keys), dtype=torch.bool,
                                                 device=q.device).triu_(1)
    else:
        hidden = None if keep is None else ~keep
    if causal or step >= batch:
        return _softmax_attention(q, k, v, hidden, padded=keep is not None)
    out = torch.empty(batch, length, heads, head_dim, dtype=q.dtype, device=q.device)
    for start in range(0, batch, step):
        part = slice(start, start + step)
        out[part] = _softmax_attention(q[part], k[part], v[part], None if hidden is None else hidden[part],
                                       padded=keep is not None).transpose(1, 2)
    return out.transpose(1, 2)


def _fused_wins(pairs: int, length: int, keys: int, causal: bool) -> bool:
    """Whether torch's fused kernel beats the two-matmul path below for this bf16 attention on this CPU.

    Small attention everywhere (`_small`), and on CPUs with AMX (`amx_supported`) every attention over
    `AMX_FUSED_MIN_KEYS` keys or more: there torch's flash kernel multiplies its blocks on the AMX tiles
    and keeps the scores in cache, while the two batched matmuls of 50-257-key rows run far below the tiles'
    speed. Measured on a 2-core AMX Xeon (bf16 roof 2,650 GFLOP/s), one block's attention, medians of 40
    interleaved calls, two-matmul path / fused, us: 16 images of 50 tokens on 12 heads (one core) 2146 / 1920,
    197 tokens 15308 / 12088, 257 tokens 23210 / 19436; 32 prompts of 77 tokens, causal on 8 heads,
    3173 / 2380, padded on 12 heads 5441 / 3707; 64 tokens 3153 / 1908. Shorter rows stay on the two
    matmuls (15 tokens: causal 496 / 631, padded 714 / 1308; 40 tokens about even). Whole towers at
    batch 32, interleaved: ViT-B/32 image 198.0 -> 189.1 ms, ViT-B/16 image 770.6 -> 714.1 ms.
    """
    return _small(pairs, length * keys, causal) or (keys >= AMX_FUSED_MIN_KEYS and amx_supported())


def _small(pairs: int, scores_per_pair: int, causal: bool) -> bool:
    """Whether a bf16 attention is small enough that torch's fused kernel beats the path below.

    The two-matmul path costs ~130 us of fixed overhead (about a dozen small operations) before any
    work; torch's fused kernel has none but is slower per score. Measured on a 2-core AVX512-BF16 EPYC,
    2 threads, fused / ours: one image of ViT-B/32 (12 heads x 50 x 50) 116 / 176 us, one prompt of 15
    tokens on 8 heads 29 / 137 us, 8 such prompts 189 / 209 us, but 16 of them 375 / 284 us; two images
    1.06x, one 77-token prompt on 16 heads 1.58x (causal 1.14x) slower fused: hence `SMALL_PAIRS` and
    `SMALL_SCORES`. The fused kernel rounds once (scores and probabilities stay fp32), so a small batch's
    features differ from the same inputs in a large batch by bf16 rounding (cosine to fp32 >= 0.999 either way).
    """
    return pairs <= SMALL_PAIRS and pairs * scores_per_pair <= SMALL_SCORES[causal]


def _softmax_last(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of bf16 scores, computed in fp32 and rounded once, in place.

    torch's CPU softmax of bf16 rows is slow unless the row is a multiple of the vector width, and
    its fp32 kernel is slow on rows shorter than one AVX-512 vector (16 floats). On one core (AVX512-BF16
    EPYC, microseconds, bf16 kernel -> this):

    - [32, 8, 15, 15] (32 prompts of 15 tokens): 500 -> 200, three whole-tensor passes in fp32;
    - [16, 12, 50, 50] (a ViT-B/32 image slice): 1144 -> 674, and [32, 8, 77, 77]: 3472 -> 1853, torch's
      fp32 kernel on bf16 input a chunk of `SOFTMAX_CHUNK` scores at a time (whole, the fp32 copy of a
      large batch's scores falls out of cache: 2.5 M scores took 14.1 ms instead of 3.2);
    - 128 keys and more (ViT-B/16's 197, 257): torch's bf16 kernel is as fast or faster, and is kept.

    Every path accumulates in fp32 and rounds once, as torch's bf16 kernel does. fp32 scores go to
    torch's kernel. A row of only -inf gives NaN, as torch's does.
    """
    keys = scores.shape[-1]
    if scores.dtype != torch.bfloat16 or keys >= FP32_SOFTMAX_KEYS:
        return torch.softmax(scores, dim=-1)
    rows = scores.reshape(-1, keys)
    step = max(1, SOFTMAX_CHUNK // keys)
    for start in range(0, rows.shape[0], step):
        part = rows[start:start + step]
        if keys < SHORT_KEYS:
            x = part.float()
            x = (x - x.amax(dim=-1, keepdim=True)).exp_()
            part.copy_(x.div_(x.sum(dim=-1, keepdim=True)))
        else:
            part.copy_(torch.softmax(part, dim=-1, dtype=torch.float32))
    return rows.view(scores.shape)


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hidden: torch.Tensor | None,
                       padded: bool = False) -> torch.Tensor:
    """`hidden`: True where a query must not see a key (future keys, padding), broadcast over the scores.

    `padded`: a sequence may be all padding; its softmax over no key is NaN, and it attends to nothing
    (zeros), as `scaled_dot_product_attention` and transformers' encoders give it.

    k and v arrive as strided views of the q/k/v projection; made contiguous first, the batched matmuls
    read k transposed in place instead of copying it into a transposed layout: a block's attention on
    one core, 16 images of 50 tokens 2.01 -> 1.86 ms, 16 prompts of 77 tokens 3.52 -> 2.93 ms, same values.

    Short masked prompts (`PAD_MIN_KEYS` to 15 keys, causal or padded) are copied into 16 keys instead,
    the extra ones zero and hidden: rows of one AVX-512 vector take torch's fp32 softmax (`_softmax_last`)
    instead of its three passes over 15-wide rows, whose exp is slow on the masked keys' -inf (a padded
    key's probability is exactly 0, its value row 0: same values). A block's attention, medians of 15
    interleaved rounds on a 2-core AVX512-BF16 EPYC, before / after, in us: 32 causal prompts of 15
    tokens on 8 heads 484 / 422 (2 threads), 646 / 510 (1 thread); 12 tokens 403 / 360; 32 padded prompts
    of 15 tokens on 12 heads 794 / 671; the ViT-B/32 text tower at 15 tokens, batch 32, 91.4 -> 89.5 ms.
    Unmasked rows have no -inf and gain nothing (12 keys, one thread: 9% slower padded), nor do 8 keys
    or fewer: hence the rule.
    """
    keys = k.shape[-2]
    if hidden is not None and _padded_keys(keys) != keys:
        k, v = _zero_padded(k, SHORT_KEYS), _zero_padded(v, SHORT_KEYS)
        if hidden.shape[-1] == keys:  # padding's mask (the causal one is built padded)
            hidden = F.pad(hidden, (0, SHORT_KEYS - keys), value=True)
    else:
        k, v = k.contiguous(), v.contiguous()
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    if hidden is not None:
        scores.masked_fill_(hidden, float("-inf"))
    probabilities = _softmax_last(scores)
    if padded:
        probabilities = probabilities.nan_to_num_(0.0)
    return torch.matmul(probabilities, v)


def _padded_keys(keys: int) -> int:
    """How many keys `_softmax_attention` attends over: `SHORT_KEYS` for `PAD_MIN_KEYS`..15, else `keys`."""
    return SHORT_KEYS if PAD_MIN_KEYS <= keys < SHORT_KEYS else keys


def _zero_padded(x: torch.Tensor, keys: int) -> torch.Tensor:
    """[..., n, d] -> a contiguous [..., keys, d] copy whose rows past n are zeros."""
    out = x.new_empty(*x.shape[:-2], keys, x.shape[-1])
    out[..., :x.shape[-2], :] = x
    out[..., x.shape[-2]:, :] = 0
    return out
