"""transformers' text encoders on the packed path (`inference/fast_encoder`): Chinese-CLIP's BERT and open_clip's
(XLM-)RoBERTa (post-norm) and NLLB (pre-norm) towers compute what transformers' own classes compute, with
pads of any length after the text, and encoders of other shapes (mT5) keep the reference forward."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from clipforge.inference import enable_fast_forward, fast_encoder, prepare

pytest.importorskip("transformers")

from clipforge.models import create_model_from_config, get_config  # noqa: E402
from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip  # noqa: E402


def _ids(vocab: int, pad: int, lengths: list[int], context: int, first: int, last: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    ids = torch.full((len(lengths), context), pad, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(5, vocab - 5, (length,), generator=gen)
        ids[row, 0], ids[row, length - 1] = first, last
    return ids


def _chinese() -> tuple[torch.nn.Module, torch.Tensor, int]:
    torch.manual_seed(0)
    model = create_chinese_clip(chinese_clip_config("cn-ViT-B-16", vision_layers=1, text_num_hidden_layers=2,
                                                    image_resolution=32))
    return model.eval(), _ids(21128, 0, [5, 17, 40, 9], 52, 101, 102), 0


def _hf_tower(name: str, layers_field: str = "num_hidden_layers") -> torch.nn.Module:
    config = get_config(name)
    config["text_hf"] = {**config["text_hf"], "vocab_size": 4096, layers_field: 2}
    if "decoder_layers" in config["text_hf"]:
        config["text_hf"]["decoder_layers"] = 1
    config.update(vision_layers=1, transformer_layers=1, vocab_size=4096)
    torch.manual_seed(0)
    return create_model_from_config(config).eval()


def _xlmr() -> tuple[torch.nn.Module, torch.Tensor, int]:
    return _hf_tower("xlm-roberta-base-ViT-B-32"), _ids(4096, 1, [5, 17, 30, 9], 77, 0, 2), 1


def _nllb() -> tuple[torch.nn.Module, torch.Tensor, int]:  # read at position 0 (the language token)
    return _hf_tower("nllb-clip-base", "encoder_layers"), _ids(4096, 1, [5, 17, 30, 9], 77, 4000, 2), 1


def _slice_lengths(ids: torch.Tensor, pad: int) -> list[int]:
    """The longest non-pad row of each slice `split_batch` cuts `ids` into (the whole batch when it does not split)."""
    threads = torch.get_num_threads()
    parts = ids.tensor_split(threads) if threads > 1 and ids.shape[0] >= 2 * threads else (ids,)
    return [int(part.ne(pad).sum(1).max()) for part in parts]


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sequence lengths `encode_layers` ran on (it cuts trailing pad columns)."""
    calls: list[int] = []
    inner = fast_encoder.encode_layers

    def counted(hf_model, weights, ids, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = inner(hf_model, weights, ids, *args, **kwargs)
        calls.append(out[1].shape[1])
        return out

    monkeypatch.setattr(fast_encoder, "encode_layers", counted)
    return calls


@pytest.mark.parametrize("build", [_chinese, _xlmr, _nllb], ids=["chinese-clip", "xlm-roberta", "nllb"])
def test_packed_encoder_tower_matches_transformers(build, fast_calls: list[int]) -> None:
    model, ids, pad = build()
    longer = torch.cat([ids, torch.full((ids.shape[0], 10), pad)], dim=1)
    with torch.inference_mode():
        want, want_longer = model.encode_text(ids), model.encode_text(longer)
    fast = prepare(copy.deepcopy(model), "fp32")
    with torch.inference_mode():
        got, got_longer = fast.encode_text(ids), fast.encode_text(longer)
    # the pad columns after each slice's longest row are not computed (the batch is split across the cores)
    longest = _slice_lengths(ids, pad)  # the slices run on two threads: either may be recorded first
    assert [sorted(fast_calls[:len(longest)]), sorted(fast_calls[len(longest):])] == [sorted(longest)] * 2
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_longer, want_longer, rtol=1e-5, atol=1e-5)

    plain_fast = enable_fast_forward(copy.deepcopy(model))  # what clipforge.load gives: fp32, still trainable
    with torch.no_grad():
        torch.testing.assert_close(plain_fast.encode_text(ids), want, rtol=1e-5, atol=1e-5)
    before = len(fast_calls)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):  # bf16 weights packed once, autocast's dtype out
        reference, got_autocast = model.encode_text(ids), plain_fast.encode_text(ids)
    assert len(fast_calls) == before + len(longest) and got_autocast.dtype == reference.dtype
    assert F.cosine_similarity(got_autocast.float(), want).min() >= 0.999
    calls = len(fast_calls)
    plain_fast.train()
    plain_fast.encode_text(ids)  # training: the reference forward, autograd sees it
    assert len(fast_calls) == calls

    bf16 = prepare(copy.deepcopy(model), "bf16", require_native_bf16=False)
    with torch.inference_mode():
        got16 = bf16.encode_text(ids).float()
    assert F.cosine_similarity(got16, want).min() >= 0.999


def test_packed_tower_follows_weight_changes_and_copies() -> None:
    model, ids, _ = _chinese()
    fast = prepare(copy.deepcopy(model), "fp32")
    with torch.inference_mode():
        before = fast.encode_text(ids)
    with torch.no_grad():
        fast.bert.encoder.layer[1].intermediate.dense.weight.mul_(1.5)
        model.bert.encoder.layer[1].intermediate.dense.weight.mul_(1.5)
    with torch.inference_mode():
        after, want = fast.encode_text(ids), model.encode_text(ids)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, want, rtol=1e-5, atol=1e-5)
    for twin in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        with torch.inference_mode():
            torch.testing.assert_close(twin.encode_text(ids), after, rtol=0, atol=0)


def test_encoders_of_other_shapes_keep_the_reference_forward(fast_calls: list[int]) -> None:
    model = _hf_tower("mt5-base-ViT-B-32", "num_layers")
    assert fast_encoder.encoder_shape(model.text.transformer) is None
    ids = _ids(4096, int(model.text.pad_id), [5, 17], 77, 3, 4)
    with torch.inference_mode():
        want = model.encode_text(ids)
        got = prepare(copy.deepcopy(model), "fp32").encode_text(ids)
    assert fast_calls == []
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_row_of_only_pads_matches_the_reference_in_fp32_and_bf16() -> None:
    """A row with no token attends to no key: zeros, as torch's scaled_dot_product_attention and transformers
    give it (the bf16 path's softmax over no key was NaN). Chinese-CLIP's reference also cuts the pad columns,
    so the fast path matches it for that row too."""
    model, ids, pad = _chinese()
    ids = ids.clone()
    ids[1] = pad
    with torch.inference_mode():
        want = model.encode_text(ids)
        got = prepare(copy.deepcopy(model), "fp32").encode_text(ids)
        got16 = prepare(copy.deepcopy(model), "bf16", require_native_bf16=False).encode_text(ids).float()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got16.isfinite().all()
    assert F.cosine_similarity(got16, want).min() >= 0.999
