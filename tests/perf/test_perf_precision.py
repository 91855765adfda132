"""`clipforge.inference.prepare`: the fast paths compute the same function as the plain model."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F

from clipforge.inference import Bf16UnsupportedError, precision_of, prepare, resolve_precision
from clipforge.inference.fast_transformer import InferenceBlock
from clipforge.inference.onnx_export import TextTower
from clipforge.models import create_model_from_config, get_config

EOT, SOT = 49407, 49406


def _model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model_from_config(get_config(name)).eval()
    with torch.no_grad():  # non-trivial BatchNorm so the folding is exercised (init zeroes bn3)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.3, 1.2)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 1.5)
    return model


def _tokens(lengths: list[int], context: int = 77, seed: int = 0) -> torch.Tensor:
    """Rows with EOT at position `length` (lengths may reach context - 1: a full row)."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.zeros(len(lengths), context, dtype=torch.long)
    for row, length in enumerate(lengths):
        out[row, 0] = SOT
        out[row, 1:length] = torch.randint(1, 49000, (length - 1,), generator=generator)
        out[row, length] = EOT
    return out


def _images(model: torch.nn.Module, n: int = 3) -> torch.Tensor:
    r = model.visual.input_resolution
    return torch.randn(n, 3, r, r, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["test-vit-tiny", "test-rn-tiny"])
@pytest.mark.parametrize("fused", [True, False])
def test_fp32_prepare_matches_the_plain_model(name: str, fused: bool) -> None:
    model = _model(name)
    images, tokens = _images(model), _tokens([4, 11, 76, 2])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode():
        want_image, want_text = model.encode_image(images), model.encode_text(tokens)
    fast = prepare(copy.deepcopy(model), "fp32", fused=fused)
    with torch.inference_mode():
        got_image, got_text = fast.encode_image(images), fast.encode_text(tokens)
    torch.testing.assert_close(got_image, want_image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_text, want_text, rtol=1e-5, atol=1e-5)
    # the state dict is untouched: same names, same fp32 values
    assert list(fast.state_dict()) == list(state)
    for key, value in fast.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert precision_of(fast) == "fp32" and precision_of(model) is None


@pytest.mark.parametrize("name", ["test-vit-tiny", "test-rn-tiny"])
def test_bf16_features_stay_within_cosine_0999_of_fp32(name: str) -> None:
    model = _model(name)
    images, tokens = _images(model, 4), _tokens([3, 9, 20, 76])
    with torch.inference_mode():
        want_image, want_text = model.encode_image(images), model.encode_text(tokens)
    fast = prepare(copy.deepcopy(model), "bf16", require_native_bf16=False)
    assert fast.dtype == torch.bfloat16
    assert fast.logit_scale.dtype == torch.float32  # scalars and LayerNorm weights stay fp32
    assert all(m.weight.dtype == torch.float32 for m in fast.modules() if isinstance(m, torch.nn.LayerNorm))
    with torch.inference_mode():
        got_image, got_text = fast.encode_image(images).float(), fast.encode_text(tokens).float()
    assert F.cosine_similarity(got_image, want_image).min() >= 0.999
    assert F.cosine_similarity(got_text, want_text).min() >= 0.999


def test_truncated_text_tower_equals_the_full_length_computation() -> None:
    """The causal-mask shortcut (plain and prepared) against all 77 positions, within 1e-5."""
    model = _model("test-vit-tiny")
    tokens = _tokens([1, 5, 8, 8, 30])  # longest prompt 31 tokens: the tower runs 31 of 77 positions
    with torch.inference_mode():
        full = TextTower(model)(tokens)[0]  # (raw features, unit features)
        plain = model.encode_text(tokens)
        fast = prepare(copy.deepcopy(model), "fp32").encode_text(tokens)
    assert (plain - full).abs().max() <= 1e-5
    assert (fast - full).abs().max() <= 1e-5
    # and row by row: a prompt's feature does not depend on the other prompts in its batch
    with torch.inference_mode():
        alone = model.encode_text(tokens[1:2])
    assert (alone - full[1:2]).abs().max() <= 1e-5


def test_packed_weights_follow_parameter_changes() -> None:
    model, other = _model("test-vit-tiny", seed=0), _model("test-vit-tiny", seed=1)
    fast = prepare(copy.deepcopy(model), "fp32")
    images, tokens = _images(model), _tokens([6, 12])
    fast.load_state_dict(other.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(fast.encode_image(images), other.encode_image(images), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.encode_text(tokens), other.encode_text(tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["test-vit-tiny", "test-rn-tiny"])
def test_prepared_models_copy_and_pickle(name: str) -> None:
    fast = prepare(_model(name), "bf16", require_native_bf16=False)
    images = _images(fast)
    with torch.inference_mode():
        want = fast.encode_image(images)
    buffer = io.BytesIO()
    torch.save(fast, buffer)  # the opaque oneDNN tensors are dropped and rebuilt on first use
    clone = pickle.loads(pickle.dumps(fast))
    with torch.inference_mode():
        assert torch.equal(copy.deepcopy(fast).encode_image(images), want)
        assert torch.equal(clone.encode_image(images), want)


def test_training_mode_uses_the_plain_forward() -> None:
    model = _model("test-vit-tiny")
    fast = prepare(copy.deepcopy(model), "fp32").train()
    fast.requires_grad_(True)
    tokens = _tokens([5, 9])
    loss = fast.encode_text(tokens).square().sum()
    loss.backward()
    block = fast.transformer.resblocks[-1]
    assert isinstance(block, InferenceBlock)
    assert block.attn.in_proj_weight.grad is not None and block.mlp.c_fc.weight.grad.abs().sum() > 0


def test_precision_names_and_refusals() -> None:
    assert resolve_precision("bfloat16") == "bf16" and resolve_precision("FP32") == "fp32"
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        resolve_precision("fp16")
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        resolve_precision("int4")
    fast = prepare(_model("test-vit-tiny"), "fp32")
    with pytest.raises(ValueError, match="already prepared for fp32"):
        prepare(fast, "bf16", require_native_bf16=False)
    assert issubclass(Bf16UnsupportedError, RuntimeError)


def test_bf16_causal_attention_sees_no_future_key_and_matches_sdpa() -> None:
    """The bf16 text tower's attention (two matmuls around an fp32 softmax, future keys masked) gives
    each position what `scaled_dot_product_attention(is_causal=True)` gives it, and nothing after it
    can change it: a wrong mask (none, or the diagonal masked) fails both checks."""
    from clipforge.inference._attention import attention as _attention

    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(4, 8, 77, 64, generator=gen).to(torch.bfloat16) for _ in range(3))
    got = _attention(q, k, v, causal=True).float()
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    assert F.cosine_similarity(got.flatten(0, 2), want.flatten(0, 2), dim=-1).min() >= 0.999
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 40:], v2[:, :, 40:] = 7.0, -7.0  # change every key and value from position 40 on
    again = _attention(q, k2, v2, causal=True).float()
    torch.testing.assert_close(again[:, :, :40], got[:, :, :40], rtol=0, atol=0)
    assert not torch.equal(again[:, :, 40:], got[:, :, 40:])


@pytest.mark.parametrize("keys", [1, 9, 15, 16, 50, 77, 128, 197])
@pytest.mark.parametrize("chunk", [None, 5 * 77])
def test_softmax_of_bf16_scores_is_the_fp32_softmax_rounded_once(keys: int, chunk: int | None,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`_softmax_last` (three fp32 passes below `SHORT_KEYS` keys, torch's fp32 kernel a chunk at a time
    below `FP32_SOFTMAX_KEYS`, torch's bf16 kernel from there on) gives the fp32 softmax of the bf16 scores
    rounded once, in every chunk (`chunk`: a few rows per chunk and a short last one), masked keys get
    exactly 0, and a row of only -inf gives NaN as torch's does (the padded encoders zero it). Forgetting
    the max subtraction overflows on the +-90 scores; a chunk written to the wrong rows, or a wrong axis,
    breaks the comparison."""
    from clipforge.inference import _attention as fast_attention

    if chunk is not None:
        monkeypatch.setattr(fast_attention, "SOFTMAX_CHUNK", chunk)
    gen = torch.Generator().manual_seed(11)
    scores = (torch.randn(6, 4, 7, keys, generator=gen) * 30).clamp(-90, 90).to(torch.bfloat16)
    scores[0, 0, 0, 0] = 90.0
    if keys > 1:
        scores[..., -1] = float("-inf")
    scores[1, 2, 3] = float("-inf")
    want = torch.softmax(scores.float(), dim=-1)
    got = fast_attention._softmax_last(scores.clone())
    assert got.dtype == torch.bfloat16 and got.shape == scores.shape
    assert torch.isnan(got[1, 2, 3]).all() and torch.isnan(want[1, 2, 3]).all()
    finite = ~torch.isnan(want)
    torch.testing.assert_close(got[finite].float(), want[finite], rtol=2 ** -8, atol=1e-6)
    if keys > 1:
        assert (got[..., -1][finite[..., -1]] == 0).all()
    fp32 = fast_attention._softmax_last(scores.float())
    torch.testing.assert_close(fp32[finite], want[finite], rtol=0, atol=0)


def test_bf16_image_attention_in_cache_sized_chunks_equals_the_whole_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Image attention whose scores outgrow `SCORES_CACHE_BYTES` runs in chunks of images and gives each
    image exactly what the whole batch gives it (chunks of 3 over 7 images: a short last chunk too),
    in the [N, heads, L, d] shape the block reads; a chunk written to the wrong rows or heads fails."""
    from clipforge.inference import _attention as fast_attention

    monkeypatch.setattr(fast_attention, "SMALL_PAIRS", 0)  # the two-matmul path, whatever the size
    monkeypatch.setattr(fast_attention, "amx_supported", lambda: False)  # ... and whatever the CPU
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(7, 4, 50, 64, generator=gen).to(torch.bfloat16) for _ in range(3))
    whole = fast_attention.attention(q, k, v, causal=False)
    calls: list[int] = []
    inner = fast_attention._softmax_attention

    def counted(*args: torch.Tensor | None, **kwargs: bool) -> torch.Tensor:
        calls.append(args[0].shape[0])
        return inner(*args, **kwargs)

    monkeypatch.setattr(fast_attention, "_softmax_attention", counted)
    monkeypatch.setattr(fast_attention, "SCORES_CACHE_BYTES", 3 * 4 * 50 * 50 * 2)
    chunked = fast_attention.attention(q, k, v, causal=False)
    assert calls == [3, 3, 1]
    assert chunked.shape == whole.shape == (7, 4, 50, 64)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    calls.clear()
    fast_attention.attention(q, k, v, causal=True)  # the causal text tower stays whole
    assert calls == [7]


@pytest.mark.parametrize("keys", [11, 12, 15, 16])
@pytest.mark.parametrize("mask", ["causal", "padding", "none"])
def test_short_bf16_attention_padded_to_16_keys_equals_the_fp32_attention(keys: int, mask: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Masked prompts (causal or padded) of `PAD_MIN_KEYS` to 15 tokens attend over 16 keys, the extra ones zero
    and hidden (torch's fp32 softmax then takes whole AVX-512 rows): each position gets the fp32 attention
    within bf16 rounding, a sequence of only padding gets zeros, no future key reaches a causal position, and
    the extra keys carry exactly no weight (the same inputs without the padding agree to bf16 rounding).
    Leaving the extra keys visible (probability e^0 each) fails the padded sequences' comparison; unmasked
    rows, 11 and 16 keys are never padded."""
    from clipforge.inference import _attention as fast_attention

    monkeypatch.setattr(fast_attention, "SMALL_PAIRS", 0)  # the two-matmul path, whatever the size
    gen = torch.Generator().manual_seed(keys)
    q, k, v = (torch.randn(6, 4, keys, 64, generator=gen).to(torch.bfloat16) for _ in range(3))
    keep = None
    if mask == "padding":
        keep = torch.ones(6, 1, 1, keys, dtype=torch.bool)
        keep[1, ..., 4:] = False
        keep[0] = False
    widths: list[int] = []
    matmul = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda a, b: widths.append(b.shape[-1]) or matmul(a, b))
    got = fast_attention.attention(q, k, v, causal=mask == "causal", keep=keep)
    monkeypatch.setattr(torch, "matmul", matmul)
    assert widths[0] == (16 if 12 <= keys < 16 and mask != "none" else keys)  # the scores' width: padded or not
    assert got.dtype == torch.bfloat16 and got.shape == q.shape
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=keep, is_causal=mask == "causal")
    if keep is not None:
        assert (got[0] == 0).all()
        got, want = got[1:], want[1:]
    assert F.cosine_similarity(got.float().flatten(0, 2), want.flatten(0, 2), dim=-1).min() >= 0.999
    monkeypatch.setattr(fast_attention, "PAD_MIN_KEYS", 16)  # no padding: the three-pass softmax
    unpadded = fast_attention.attention(q, k, v, causal=mask == "causal", keep=keep)
    torch.testing.assert_close(got, unpadded[1:] if keep is not None else unpadded, rtol=2 ** -7, atol=2 ** -7)
    if mask == "causal":
        monkeypatch.setattr(fast_attention, "PAD_MIN_KEYS", 12)
        k2, v2 = k.clone(), v.clone()
        k2[:, :, 6:], v2[:, :, 6:] = 7.0, -7.0
        again = fast_attention.attention(q, k2, v2, causal=True)
        torch.testing.assert_close(again[:, :, :6], got[:, :, :6], rtol=0, atol=0)


def _attention_counting_paths(monkeypatch: pytest.MonkeyPatch, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              causal: bool, keep: torch.Tensor | None) -> tuple[torch.Tensor, tuple[int, int]]:
    """`attention`'s output and how many times it ran (torch's fused kernel, the two-matmul path)."""
    from clipforge.inference import _attention as fast_attention

    fused_calls, matmul_calls = [], []
    sdpa, two_matmuls = F.scaled_dot_product_attention, fast_attention._softmax_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **kw: fused_calls.append(a[0].shape) or sdpa(*a, **kw))
    monkeypatch.setattr(fast_attention, "_softmax_attention",
                        lambda *a, **kw: matmul_calls.append(a[0].shape) or two_matmuls(*a, **kw))
    got = fast_attention.attention(q, k, v, causal=causal, keep=keep)
    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa)
    monkeypatch.setattr(fast_attention, "_softmax_attention", two_matmuls)
    return got, (len(fused_calls), len(matmul_calls))


@pytest.mark.parametrize(("batch", "heads", "length", "causal", "fused"), [
    (1, 12, 50, False, True),    # one ViT-B/32 image
    (2, 12, 50, False, False),   # two: the two matmuls are faster
    (8, 8, 15, False, True),     # eight short prompts
    (16, 8, 15, False, False),   # sixteen: too many (sequence, head) pairs
    (1, 8, 77, True, True),      # one whole-context prompt, causal
    (1, 8, 77, False, True),
    (1, 16, 77, True, False),    # 16 heads: too many scores
])
def test_small_bf16_attention_runs_torchs_fused_kernel(batch: int, heads: int, length: int, causal: bool, fused: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Below `SMALL_PAIRS` (sequence, head) pairs and `SMALL_SCORES` scores the fixed cost of the two-matmul
    path outweighs its speed and torch's fused kernel runs (`_small`); either way the output is the fp32
    attention within bf16 rounding, causal masking and padding included (a sequence of only padding
    attends to nothing: zeros). Passing the causal flag wrongly, or the mask, fails the fp32 comparison."""
    from clipforge.inference import _attention as fast_attention

    monkeypatch.setattr(fast_attention, "amx_supported", lambda: False)  # the rule for CPUs without AMX
    gen = torch.Generator().manual_seed(batch * 1000 + heads * 10 + length)
    q, k, v = (torch.randn(batch, heads, length, 64, generator=gen).to(torch.bfloat16) for _ in range(3))
    keep = None
    if not causal:  # the last sequence is padded after 5 keys, the first (when there are two) is only padding
        keep = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        keep[-1, ..., 5:] = False
        if batch > 1:
            keep[0] = False
    sdpa = F.scaled_dot_product_attention
    got, paths = _attention_counting_paths(monkeypatch, q, k, v, causal, keep)
    assert paths == ((1, 0) if fused else (0, 1))
    assert got.dtype == torch.bfloat16 and got.shape == q.shape
    want = sdpa(q.float(), k.float(), v.float(), attn_mask=keep, is_causal=causal)
    if keep is not None and batch > 1:
        assert (got[0] == 0).all() and (want[0] == 0).all()
        got, want = got[1:], want[1:]
    assert F.cosine_similarity(got.float().flatten(0, 2), want.flatten(0, 2), dim=-1).min() >= 0.999
    monkeypatch.setattr(fast_attention, "SMALL_PAIRS", 0)  # the same inputs through the two matmuls
    other = fast_attention.attention(q, k, v, causal=causal, keep=keep)[1:] if keep is not None and batch > 1 \
        else fast_attention.attention(q, k, v, causal=causal, keep=keep)
    torch.testing.assert_close(got.float(), other.float(), rtol=0.02, atol=0.02)


@pytest.mark.parametrize(("batch", "heads", "length", "mask", "amx", "fused"), [
    (4, 12, 50, "none", True, True),       # ViT-B/32 images on an AMX CPU: torch's fused kernel
    (4, 12, 50, "none", False, False),     # ... without AMX: the two matmuls
    (4, 8, 77, "causal", True, True),      # whole-context prompts
    (4, 12, 52, "padding", True, True),    # Chinese-CLIP's padded context
    (4, 12, 48, "padding", True, True),    # the threshold itself
    (4, 12, 47, "padding", True, False),   # one key fewer: the two matmuls
    (8, 8, 15, "causal", True, False),     # short prompts stay on the two matmuls everywhere
])
def test_bf16_attention_on_amx_runs_torchs_fused_kernel_from_48_keys(batch: int, heads: int, length: int, mask: str,
                                                                    amx: bool, fused: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPUs with AMX tiles the fused kernel multiplies on the tiles and wins from `AMX_FUSED_MIN_KEYS` keys
    (`_fused_wins`); without AMX, or on shorter rows, the two-matmul path runs. Either way each position gets
    the fp32 attention within bf16 rounding, a sequence of only padding gets zeros, and the two paths agree.
    Dropping the AMX rule, or applying it below the threshold, fails the path counts."""
    from clipforge.inference import _attention as fast_attention

    monkeypatch.setattr(fast_attention, "amx_supported", lambda: amx)
    monkeypatch.setattr(fast_attention, "SMALL_PAIRS", 0)  # no attention here is `_small`
    gen = torch.Generator().manual_seed(length)
    q, k, v = (torch.randn(batch, heads, length, 64, generator=gen).to(torch.bfloat16) for _ in range(3))
    keep = None
    if mask == "padding":
        keep = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        keep[-1, ..., 9:] = False
        keep[0] = False
    sdpa = F.scaled_dot_product_attention
    got, paths = _attention_counting_paths(monkeypatch, q, k, v, mask == "causal", keep)
    assert paths == ((1, 0) if fused else (0, 1))
    assert got.dtype == torch.bfloat16 and got.shape == q.shape
    want = sdpa(q.float(), k.float(), v.float(), attn_mask=keep, is_causal=mask == "causal")
    if keep is not None:
        assert (got[0] == 0).all()
        got, want = got[1:], want[1:]
    assert F.cosine_similarity(got.float().flatten(0, 2), want.flatten(0, 2), dim=-1).min() >= 0.999
    monkeypatch.setattr(fast_attention, "amx_supported", lambda: not amx)  # the other path, same inputs
    other = fast_attention.attention(q, k, v, causal=mask == "causal", keep=keep)
    torch.testing.assert_close(got.float(), (other[1:] if keep is not None else other).float(), rtol=0.02, atol=0.02)


def test_bf16_layer_norm_weights_stay_fp32_on_the_cpu_and_follow_bf16_elsewhere() -> None:
    """The CPU's layer_norm mixes bf16 input with fp32 weights; CUDA's refuses that mix, so off the CPU (here
    the meta device, standing in for a GPU) `prepare` casts LayerNorm weights too. 0-dim scalars stay fp32."""
    def norms(model: torch.nn.Module) -> set[torch.dtype]:
        return {m.weight.dtype for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}

    cpu = prepare(_model("test-vit-tiny"), "bf16", require_native_bf16=False)
    elsewhere = prepare(_model("test-vit-tiny").to("meta"), "bf16", pack=False)
    assert norms(cpu) == {torch.float32} and norms(elsewhere) == {torch.bfloat16}
    for model in (cpu, elsewhere):
        assert model.logit_scale.dtype == torch.float32
        assert model.visual.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.bfloat16
