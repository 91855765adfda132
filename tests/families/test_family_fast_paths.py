"""SigLIP's attention-pool head on the fast path (`InferenceAttentionPoolHead`: the fixed probe's query
folded into the key and value weights) and the Map ViT's packed patch embedding compute what the
reference modules compute."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from clipforge.inference import enable_fast_forward, prepare
from clipforge.inference.fast_family import InferenceAttentionPoolHead, InferenceMapVisionTransformer
from clipforge.models.family import AttentionPoolHead, MapVisionTransformer, PoolAttention


def _randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in every parameter, biases included: a dropped bias term cannot hide behind a zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
    return module.eval()


def _head(activation: str) -> AttentionPoolHead:
    return _randomised(AttentionPoolHead(64, 4, 128, activation, 1e-6))


def _no_reference_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self, query, x):  # type: ignore[no-untyped-def]
        raise AssertionError("the reference PoolAttention ran")

    monkeypatch.setattr(PoolAttention, "forward", refuse)


@pytest.mark.parametrize("fused", [True, False], ids=["onednn", "plain"])
@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu", "quick_gelu"])
def test_folded_head_matches_the_reference_head(activation: str, fused: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    head = _head(activation)
    x = torch.randn(3, 10, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = head(x)
    fast = prepare(copy.deepcopy(head), "fp32", fused=fused)
    assert type(fast) is InferenceAttentionPoolHead
    _no_reference_attention(monkeypatch)  # the folded path, not a fallback, gives these numbers
    with torch.inference_mode():
        got = fast(x)
    assert got.shape == want.shape == (3, 64)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_folded_head_follows_its_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """The folded weights are derived from the probe and the projections: an in-place change to either
    rebuilds them (a stale fold would keep the old query)."""
    head = _head("gelu_tanh")
    fast = enable_fast_forward(copy.deepcopy(head))
    x = torch.randn(2, 7, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), head(x), rtol=1e-5, atol=1e-5)
        for module in (head, fast):
            module.probe.mul_(-1.5)
            module.attn.in_proj_bias[:64].add_(0.25)  # the query's bias
            module.attn.in_proj_bias[128:].add_(0.5)  # the values' bias
        want = head(x)
        _no_reference_attention(monkeypatch)
        torch.testing.assert_close(fast(x), want, rtol=1e-5, atol=1e-5)


def test_folded_head_in_bf16_and_under_autocast() -> None:
    head = _head("gelu_tanh")
    x = torch.randn(4, 12, 64)
    with torch.no_grad():
        want = head(x)
    bf16 = prepare(copy.deepcopy(head), "bf16", require_native_bf16=False)
    with torch.inference_mode():
        got = bf16(x.bfloat16())
    assert got.dtype == torch.bfloat16
    assert F.cosine_similarity(got.float(), want).min() >= 0.999
    plain_fast = enable_fast_forward(copy.deepcopy(head))
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        reference, got = head(x), plain_fast(x)
    assert got.dtype == reference.dtype == torch.bfloat16
    assert F.cosine_similarity(got.float(), want).min() >= 0.999


def test_training_runs_the_reference_head_with_gradients() -> None:
    head = enable_fast_forward(_head("gelu_tanh")).train()
    head(torch.randn(2, 5, 64)).sum().backward()
    assert head.probe.grad is not None and head.probe.grad.abs().sum() > 0


def _map_vit(resolution: int) -> MapVisionTransformer:
    return _randomised(MapVisionTransformer(resolution, 8, 64, 1, 4, 32, mlp_width=128, activation="gelu_tanh",
                                            norm_eps=1e-6, patch_bias=True, ln_pre=False, proj=True), seed=2)


@pytest.mark.parametrize("fused", [True, False], ids=["onednn", "plain"])
def test_packed_patches_equal_the_convolution_with_an_unread_border(fused: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """30 px at 8 px patches: a 3 x 3 grid and 6 unread pixels on two sides (SO400M/14 at 384 px has 6 too);
    the convolution's bias is added."""
    vit = _map_vit(30)
    images = torch.randn(5, 3, 30, 30, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want_patches, want = vit.patch_embed(images), vit(images)
    fast = prepare(copy.deepcopy(vit), "fp32", fused=fused)
    assert type(fast) is InferenceMapVisionTransformer

    def refuse(self, x):  # type: ignore[no-untyped-def]
        raise AssertionError("the convolution ran")

    monkeypatch.setattr(torch.nn.Conv2d, "forward", refuse)
    with torch.inference_mode():
        torch.testing.assert_close(fast.patch_embed(images), want_patches, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast(images), want, rtol=1e-5, atol=1e-5)


def test_images_of_another_size_get_the_reference_error() -> None:
    """One line naming the size the tower takes, from the plain and the fast tower alike (it was torch's "The size
    of tensor a (16) must match the size of tensor b (10)" from deep in the blocks)."""
    vit = _map_vit(30)
    fast = prepare(copy.deepcopy(vit), "fp32")
    wrong = torch.randn(2, 3, 30, 40)  # a 3 x 5 grid: the positional embedding has 9 rows
    with torch.no_grad(), pytest.raises(ValueError) as plain_error:
        vit(wrong)
    with torch.inference_mode(), pytest.raises(ValueError) as fast_error:
        fast(wrong)
    assert str(fast_error.value) == str(plain_error.value) == "expected images of 30x30, got 30x40"


def _family_model(name: str) -> torch.nn.Module:
    from clipforge.models import create_model_from_config, get_config

    return _randomised(create_model_from_config(get_config(name)), seed=4)


def _texts(model: torch.nn.Module, batch: int) -> torch.Tensor:
    """Random ids; for a model read at its first end token, that token at a different place in each row."""
    context = int(model.context_length)
    ids = torch.randint(3, int(model.vocab_size), (batch, context), generator=torch.Generator().manual_seed(5))
    eos = getattr(model, "text_eos_id", None)
    if model.text_pool == "eos":
        ids[ids == int(eos)] = int(eos) + 1
        for row in range(batch):
            ids[row, 2 + (3 * row) % (context - 3)] = int(eos)
    return ids


@pytest.mark.parametrize("name", ["test-siglip-tiny", "test-worldwide-tiny"])
def test_family_text_tower_finishes_only_the_rows_it_reads(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SigLIP's bidirectional tower read at its last position and MetaCLIP 2's causal one read at its first end
    token: the fast path's last block computes one row per text, split across two threads in slices (the tiny
    tower's slices are far below `SPLIT_MIN_MACS`: lowered so the split itself is tested), and gives the
    reference's features."""
    import clipforge.inference._threads as threads_module
    from clipforge.inference.fast_family import InferenceFamilyCLIP
    from clipforge.inference.fast_transformer import InferenceBlock

    model = _family_model(name)
    text = _texts(model, 8)
    with torch.no_grad():
        want = model.encode_text(text)
    fast = prepare(copy.deepcopy(model), "fp32")
    assert type(fast) is InferenceFamilyCLIP
    rows_read: list[int] = []
    inner = InferenceBlock.forward_rows

    def counted(self, x, rows, causal=False):  # type: ignore[no-untyped-def]
        rows_read.append(int(rows.shape[0]))
        return inner(self, x, rows, causal=causal)

    monkeypatch.setattr(InferenceBlock, "forward_rows", counted)
    monkeypatch.setattr(threads_module, "SPLIT_MIN_MACS", {torch.float32: 0.0, torch.bfloat16: 0.0})
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            got = fast.encode_text(text)
            halves = torch.cat([fast.encode_text(text[:4]), fast.encode_text(text[4:])])
    finally:
        torch.set_num_threads(threads)
    assert sorted(rows_read) == [2, 2, 2, 2, 4, 4]  # the batch in two slices of 4, each half in two of 2
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, halves, rtol=1e-5, atol=1e-5)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        reference, autocast = model.encode_text(text), enable_fast_forward(copy.deepcopy(model)).encode_text(text)
    assert autocast.dtype == reference.dtype == torch.bfloat16
    assert F.cosine_similarity(autocast.float(), want).min() >= 0.999
