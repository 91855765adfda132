"""A weight edit made through ``.data`` is seen by the memoised fingerprint (audit 65, finding 5).

A write through ``.data`` bumps no version counter and keeps the storage, so the memo's stamp
(`weights_stamp`) sees it only through the values it samples. It sampled each tensor's first 4 elements: a
notebook's ``m.text_projection.data[1:] *= -1.0`` left them alone, the text tower's fingerprint stayed the same,
and `ZeroShotClassifier` read the old class embeddings from its disk cache. The stamp now samples positions spread
over the whole tensor, its last element among them."""

from __future__ import annotations

import pytest
import torch

import clipforge
from clipforge.weights.fingerprint import fingerprint_state_dict, model_fingerprint, weights_stamp

LABELS = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def tiny():
    model, _ = clipforge.load("clipforge-tiny")
    return model


def test_the_auditors_edit_gives_fresh_class_embeddings(tiny, tmp_path):
    first = clipforge.ZeroShotClassifier(tiny, LABELS, "simple", cache_dir=tmp_path, progress=False)
    fingerprint = model_fingerprint(tiny)
    with torch.no_grad():
        saved = tiny.text_projection.detach().clone()
    try:
        tiny.text_projection.data[1:] *= -1.0
        again = clipforge.ZeroShotClassifier(tiny, LABELS, "simple", cache_dir=tmp_path, progress=False)
        fresh = clipforge.ZeroShotClassifier(tiny, LABELS, "simple", use_cache=False, progress=False)
        assert again.cache_hit is False
        assert torch.equal(again.class_embeddings, fresh.class_embeddings)
        assert not torch.allclose(again.class_embeddings, first.class_embeddings)
        assert model_fingerprint(tiny) == fingerprint_state_dict(tiny.state_dict()) != fingerprint
    finally:
        tiny.text_projection.data.copy_(saved)
    assert model_fingerprint(tiny) == fingerprint  # the old weights back: the old fingerprint, the cache hits
    assert clipforge.ZeroShotClassifier(tiny, LABELS, "simple", cache_dir=tmp_path, progress=False).cache_hit


@pytest.mark.parametrize("shape", [(7,), (64, 256), (3, 5, 11), (1000, 3)])
@pytest.mark.parametrize("where", ["last", "rows after the first", "second half"])
def test_a_data_write_away_from_the_first_elements_changes_the_stamp(shape, where):
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape))
    before = weights_stamp(module)
    data = module.weight.data
    if where == "last":
        data.view(-1)[-1] = -1.0
    elif where == "rows after the first":
        data[1:] *= -1.0
    else:
        data.view(-1)[data.numel() // 2:] += 0.5
    assert module.weight._version == 0  # nothing but the values tells the write
    assert weights_stamp(module) != before


def test_a_non_contiguous_tensor_is_sampled_across_it_too():
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.arange(600.0).reshape(20, 30).t())  # a transposed view: strided
    assert not module.weight.is_contiguous()
    before = weights_stamp(module)
    module.weight.data[-1, -1] = -1.0
    assert weights_stamp(module) != before
    module.weight.data[-1, -1] = 599.0
    assert weights_stamp(module) == before  # the same values, the same stamp


def test_empty_meta_and_non_float_tensors_are_stamped():
    module = torch.nn.Module()
    module.register_buffer("empty", torch.zeros(0, 4))
    module.register_buffer("ids", torch.arange(50, dtype=torch.int64))
    module.register_buffer("flags", torch.ones(9, dtype=torch.bool))
    module.register_buffer("meta", torch.empty(3, 3, device="meta"))
    before = weights_stamp(module)
    assert weights_stamp(module) == before
    module.ids.data[37:] = 0
    assert weights_stamp(module) != before


def test_a_data_write_between_the_samples_is_the_documented_trade_off(tmp_path):
    """What the README says: a ``.data`` write that touches none of the 16 sampled elements is not seen by the
    memo; `fingerprint_state_dict` (a full pass) and ``use_cache=False`` are."""
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.zeros(64, 256))
    remembered = model_fingerprint(module)
    module.weight.data[32, 100] = 1.0  # flat 8292: between the samples at 7645 and 8737
    assert model_fingerprint(module) == remembered
    assert fingerprint_state_dict(module.state_dict()) != remembered
    with torch.no_grad():
        module.weight[32, 100] = 1.0  # the same write, tracked: its version counter moves
    assert model_fingerprint(module) == fingerprint_state_dict(module.state_dict()) != remembered


def test_a_loaded_models_fingerprint_follows_an_edit_of_its_weights() -> None:
    """Review 65: `LoadedModel.fingerprint` kept its first answer for good, so after any edit (even an optimizer step
    the model's own fingerprint sees) it named the old weights."""
    import clipforge

    loaded = clipforge.load_model("clipforge-tiny")
    before = loaded.fingerprint
    assert loaded.fingerprint == before  # asked again, unchanged weights: the same
    with torch.no_grad():
        loaded.model.text_projection.mul_(2.0)
    assert loaded.fingerprint != before
    from clipforge.weights import model_fingerprint

    assert loaded.fingerprint == model_fingerprint(loaded.model)
