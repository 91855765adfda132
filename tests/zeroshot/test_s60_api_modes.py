"""audit60 pyapi finding 3: helpers handed the caller's model encode in eval mode and give it back as it was.

`ZeroShotClassifier` ran a training-mode ResNet as it was (BatchNorm on the batch's own statistics: other labels,
and one image alone raised "Expected more than 1 value per channel when training"); `evaluate_zeroshot` switched
the caller's model to eval mode and never back (a training loop went on with BatchNorm frozen).
"""

from __future__ import annotations

import pytest
import torch

import clipforge

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def tiny_rn_model() -> torch.nn.Module:
    model, _ = clipforge.load("clipforge-tiny", device="cpu")  # a ModifiedResNet: BatchNorm throughout
    return model


def _modes(model: torch.nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def test_classifier_on_a_training_mode_model_predicts_as_in_eval_and_restores_each_module(tiny_rn_model):
    model = tiny_rn_model.eval()
    torch.manual_seed(0)
    images = torch.randn(6, 3, 32, 32)
    want_labels, want_probs = clipforge.ZeroShotClassifier(model, CLASSES, "simple", use_cache=False,
                                                           progress=False).predict(images, top_k=3)
    model.train()
    model.visual.layer1.eval()  # a frozen part inside a training model stays frozen afterwards
    before = _modes(model)
    try:
        clf = clipforge.ZeroShotClassifier(model, CLASSES, "simple", use_cache=False, progress=False)
        labels, probs = clf.predict(images, top_k=3)
        assert labels == want_labels
        assert torch.allclose(probs, want_probs, atol=1e-5)
        one, _ = clf.predict(images[:1], top_k=1)  # raised "Expected more than 1 value per channel when training"
        assert one == [want_labels[0][:1]]
        assert _modes(model) == before and model.training and not model.visual.layer1.training
    finally:
        model.eval()


def test_eval_mode_restores_on_error_and_leaves_an_eval_model_untouched():
    from clipforge.models.modes import eval_mode, keeps_caller_mode

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).train()
    model[0].eval()
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        assert not any(m.training for m in model.modules())
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == [True, False, True]
    model.eval()
    with eval_mode(model):
        pass
    assert not any(m.training for m in model.modules())

    @keeps_caller_mode
    def seen(model: object, *, flag: int = 0) -> object:
        return model.training if isinstance(model, torch.nn.Module) else model

    model.train()
    assert seen(model) is False and seen(model=model) is False and model.training
    assert seen("clipforge-tiny") == "clipforge-tiny"


def test_evaluate_zeroshot_gives_the_model_back_in_training_mode(tiny_rn_model, tmp_path):
    from clipforge.evaluate import evaluate_zeroshot

    model = tiny_rn_model.train()
    model.visual.layer1.eval()
    before = _modes(model)
    try:
        report = evaluate_zeroshot(model, _Tensors(), split="test", out_dir=tmp_path, progress=False,
                                   templates="simple")
        assert report["metrics"]["num_samples"] == 4
        assert _modes(model) == before
    finally:
        model.eval()


class _Tensors(torch.utils.data.Dataset):
    """Four preprocessed 'images' of two classes: the smallest dataset object evaluate_zeroshot takes."""

    classnames = ["cat", "dog"]
    name = "tensors"
    split = "test"

    def __init__(self) -> None:
        torch.manual_seed(1)
        self.images = torch.randn(4, 3, 32, 32)
        self.samples = [(f"img{i}.png", i % 2) for i in range(4)]

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i % 2
