"""A block's attention called as `nn.MultiheadAttention` is, for attention maps and open_clip-style code.

open_clip's blocks hold an `nn.MultiheadAttention` and call ``attn(q, k, v, need_weights=False,
attn_mask=...)[0]``; attention-map code (rollout, CLIP surgery, explainability notebooks) calls
``block.attn(x, x, x, need_weights=True)`` for the probabilities. With clipforge's `SelfAttention` that
was a TypeError. Both calls now give what `nn.MultiheadAttention(batch_first=True)` gives on the same
weights (the parameter names are the same), masks and padding included.
"""

from __future__ import annotations

import pytest
import torch

from clipforge.models.layers import SelfAttention


def _pair(width: int = 64, heads: int = 4) -> tuple[SelfAttention, torch.nn.MultiheadAttention]:
    torch.manual_seed(0)
    ours = SelfAttention(width, heads)
    torch.nn.init.normal_(ours.in_proj_bias, std=0.1)
    theirs = torch.nn.MultiheadAttention(width, heads, batch_first=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


@pytest.mark.parametrize("average", [True, False])
def test_self_attention_weights_equal_torchs(average: bool) -> None:
    ours, theirs = _pair()
    x = torch.randn(3, 7, 64)
    out, weights = ours(x, x, x, need_weights=True, average_attn_weights=average)
    ref_out, ref_weights = theirs(x, x, x, need_weights=True, average_attn_weights=average)
    assert weights.shape == ((3, 7, 7) if average else (3, 4, 7, 7))
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))
    torch.testing.assert_close(out, ours(x), atol=1e-5, rtol=1e-5)  # the towers' fused call, same output


def test_masks_padding_and_cross_attention_mean_what_torch_means() -> None:
    ours, theirs = _pair()
    query, memory = torch.randn(2, 5, 64), torch.randn(2, 9, 64)
    causal = torch.ones(5, 9, dtype=torch.bool).triu_(1)  # True: not attended (torch's convention here)
    additive = torch.zeros(5, 9).masked_fill(causal, float("-inf"))
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[1, 6:] = True
    per_head = torch.randn(2 * 4, 5, 9)
    for kwargs in ({"attn_mask": causal}, {"attn_mask": additive}, {"key_padding_mask": padding},
                   {"attn_mask": causal, "key_padding_mask": padding}, {"attn_mask": per_head},
                   {"attn_mask": causal, "need_weights": False}, {"attn_mask": additive, "is_causal": True}):
        out, weights = ours(query, memory, memory, **kwargs)
        ref_out, ref_weights = theirs(query, memory, memory, **kwargs)
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
        if ref_weights is None:
            assert weights is None
        else:
            torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)
    _, weights = ours(query, memory, memory, key_padding_mask=padding)
    assert weights[1, :, 6:].abs().max() == 0 and weights[0, :, 6:].min() > 0


def test_open_clips_block_call_and_our_towers_call() -> None:
    """open_clip's `ResidualAttentionBlock.attention`: ``self.attn(x, x, x, need_weights=False, attn_mask=m)[0]``."""
    ours, theirs = _pair()
    x = torch.randn(2, 6, 64)
    mask = torch.full((6, 6), float("-inf")).triu_(1)
    torch.testing.assert_close(ours(x, x, x, need_weights=False, attn_mask=mask)[0],
                               theirs(x, x, x, need_weights=False, attn_mask=mask)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours(x, causal=True), ours(x, attn_mask=mask), atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="query, key and value"):
        ours(x, x, need_weights=True)
