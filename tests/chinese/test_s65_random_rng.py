"""audit65 citizen finding 4: `load_model("random:cn-...")` keeps the caller's torch random state, as every other
random model does (`api.sources.seeded`). It called `torch.manual_seed(seed)` and left the process generator at
seed 0 plus the init draws: a notebook's later shuffles and dropout masks were tied to clipforge's seed."""

from __future__ import annotations

import pytest
import torch

from clipforge.api import load_model
from clipforge.models import chinese_configs


@pytest.fixture()
def cn_tiny(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(chinese_configs.CN_TEXT_TOWERS, "test-bert-s65", {
        "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128})
    monkeypatch.setitem(chinese_configs.CHINESE_CLIP_CONFIGS, "cn-test-s65", {
        "embed_dim": 32, "image_resolution": 32, "vision_layers": 1, "vision_width": 64, "vision_patch_size": 16,
        "vision_head_width": 32, "text": "test-bert-s65"})
    return "random:cn-test-s65"


@pytest.mark.parametrize("spec", ["random:cn-test-s65", "random:test-vit-tiny"])
def test_a_random_model_leaves_the_callers_generator_as_it_was(cn_tiny, spec: str) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    loaded = load_model(spec, "cpu")
    assert torch.equal(torch.rand(3), expected)
    assert loaded.weights == "random (seed 0)"


def test_random_chinese_weights_still_follow_the_seed(cn_tiny: str) -> None:
    def weights(seed: int) -> torch.Tensor:
        torch.manual_seed(99)  # whatever the caller's state, the seed alone decides
        return load_model(cn_tiny, "cpu", seed=seed).model.text_projection.detach().clone()

    first, again, other = weights(0), weights(0), weights(1)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert load_model(cn_tiny, "cpu", seed=1).weights == "random (seed 1)"


def test_random_models_built_in_threads_at_once_follow_their_seed_alone() -> None:
    """Review 65 (revapi): `seeded` saved, seeded and restored the process's one generator with nothing held, so
    random models built in threads at once drew from each other's streams (weights no longer the seed's)."""
    import sys
    import threading

    reference = load_model("random:test-vit-tiny").model.state_dict()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the builds' Python as often as the interpreter can
    try:
        built: list = []

        def build() -> None:
            built.append(load_model("random:test-vit-tiny").model.state_dict())

        threads = [threading.Thread(target=build) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert len(built) == 4
    for state in built:
        assert all(torch.equal(state[k], reference[k]) for k in reference)
