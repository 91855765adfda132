"""The switches behind the CIFAR-10 recipe: tensor-op batches, de-duplicated and label-aware
captions, EMA of the weights, the time budget, typed config values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipforge.train.config import build_config, check_value
from clipforge.train.ema import WeightEMA
from clipforge.train.fastdata import TensorBatches, augment
from clipforge.train.loss import unique_caption_loss
from clipforge.train.schedule import TimeBudget

CLASSES = ["cat", "dog", "ship"]


def _batches(**kw) -> TensorBatches:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=generator)
    classes = torch.arange(12) % 3
    return TensorBatches(images, classes, CLASSES, ["a photo of a {}.", "a {} in the wild."], 16, 8, **kw)


def test_augment_is_a_crop_of_the_reflect_padded_image_and_a_flip():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).view(2, 3, 6, 6).to(torch.uint8)
    assert torch.equal(augment(images, torch.Generator().manual_seed(0), 0, False), images)
    out = augment(images, torch.Generator().manual_seed(1), 2, True)
    padded = F.pad(images.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    for i in range(2):  # each output is one of the 5x5 crops, mirrored or not
        crops = [padded[i, :, y:y + 6, x:x + 6] for y in range(5) for x in range(5)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)


def test_batches_are_a_pure_function_of_seed_epoch_and_number():
    data = _batches(pad=2, hflip=True, templates_per_batch=1, unique_captions=True)
    a, b = data.batch(torch.arange(6), 3, 7), data.batch(torch.arange(6), 3, 7)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, data.batch(torch.arange(6), 3, 8).images)
    resumed = list(data.epoch_batches(list(range(12)), 4, epoch=3, start=1))
    assert [len(x.indices) for x in resumed] == [4, 4]
    assert torch.equal(resumed[0].images, data.batch(torch.arange(4, 8), 3, 1).images)


def test_unique_captions_map_every_image_to_its_own_caption():
    from clipforge.text import tokenize

    data = _batches(templates_per_batch=2, unique_captions=True)
    plain = _batches(templates_per_batch=2)
    idx = torch.arange(12)
    unique, per_image = data.batch(idx, 0, 0), plain.batch(idx, 0, 0)
    assert len(unique.labels) <= 6 < len(per_image.labels)  # at most 2 templates x 3 classes
    assert torch.equal(unique.labels[unique.caption_index], per_image.labels)
    assert torch.equal(unique.caption_labels[unique.caption_index], unique.classes)
    cat = tokenize(["a photo of a cat.", "a cat in the wild."], context_length=16)
    rows = per_image.labels[per_image.classes == 0]
    assert all(any(torch.equal(r, c) for c in cat) for r in rows)


def test_label_aware_loss_treats_same_class_captions_as_positives():
    torch.manual_seed(0)
    images = F.normalize(torch.randn(6, 8), dim=-1)
    captions = F.normalize(torch.randn(4, 8), dim=-1)  # captions 0, 2: class 0; 1, 3: class 1
    caption_labels = torch.tensor([0, 1, 0, 1])
    scale = torch.tensor(2.0)
    index = torch.tensor([0, 1, 0, 1, 0, 1])
    swapped = torch.tensor([2, 3, 0, 1, 2, 3])  # same classes, the other template's caption
    aware = unique_caption_loss(images, captions, scale, index, caption_labels)
    assert aware == pytest.approx(float(unique_caption_loss(images, captions, scale, swapped, caption_labels)))
    assert float(unique_caption_loss(images, captions, scale, index)) != pytest.approx(
        float(unique_caption_loss(images, captions, scale, swapped)))
    one_each = torch.tensor([0, 1])  # one caption per class: label-aware == plain
    two = captions[:2]
    assert float(unique_caption_loss(images, two, scale, index, one_each)) == pytest.approx(
        float(unique_caption_loss(images, two, scale, index)), abs=1e-6)


def test_ema_follows_the_ramped_average_and_swaps_in_and_out():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = WeightEMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay min(0.9, 2/11)
    expected = 1 - 2 / 11
    assert ema.shadow["weight"][0, 0].item() == pytest.approx(expected)
    with ema.applied(model) as raw:
        assert model.weight[0, 0].item() == pytest.approx(expected) and raw["weight"][0, 0].item() == 1.0
    assert model.weight[0, 0].item() == 1.0
    with pytest.raises(ValueError, match="ema_decay"):
        WeightEMA(model, decay=1.0)


def test_time_budget_warms_up_anneals_to_zero_and_resumes():
    budget = TimeBudget(100.0, warmup_fraction=0.1)
    budget.elapsed_s = 5.0
    assert budget.factor() == pytest.approx(0.5)
    budget.elapsed_s = 10.0
    assert budget.factor() == pytest.approx(1.0)
    budget.elapsed_s = 100.0
    assert budget.factor() == pytest.approx(0.0) and budget.spent()
    again = TimeBudget(100.0)
    again.load_state_dict(budget.state_dict())
    assert again.spent()
    with pytest.raises(ValueError, match="time_budget_s"):
        TimeBudget(0)


def test_config_values_are_checked_against_their_field_types():
    with pytest.raises(ValueError, match=r"config field 'lr' must be a number, got 'abc'"):
        build_config(None, ["lr=abc"])
    with pytest.raises(ValueError, match=r"'steps' must be an integer or null, got 1.5"):
        build_config(None, ["steps=1.5"])
    with pytest.raises(ValueError, match=r"'lock_image' must be true or false, got 'maybe'"):
        build_config(None, ["lock_image=maybe"])
    assert check_value("lr", 1) == 1.0 and isinstance(check_value("lr", 1), float)
    assert build_config(None, ["templates=cifar10", "lock_image=no"]).templates == "cifar10"


def test_fast_path_switches_are_refused_without_in_memory(tmp_path):
    from clipforge.train.data import build_train_dataset

    config = build_config(None, ["data=folder", f"root={tmp_path}", "unique_captions=true"])
    with pytest.raises(ValueError, match="unique_captions is an option of the in-memory path"):
        build_train_dataset(config, 32, 77)


def test_thread_tuner_rechecks_at_once_when_the_machine_slows_down():
    from clipforge.train.threads import ThreadTuner

    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner((1, 2), period=400, probe=2, first=3)
        for _ in range(6):  # first probe: 2 threads faster on a quiet machine
            tuner.record(1.0 if tuner.current == 1 else 0.5)
        assert tuner.current == 2 and tuner.speed
        for _ in range(6):
            tuner.record(0.5)
        assert tuner.current == 2
        for _ in range(3):  # load arrives: 2 threads now 20x slower, 1 thread unaffected
            tuner.record(10.0)
        tuner.record(10.0)  # the re-check measures the incumbent and switches to probe 1 thread
        assert tuner.current == 1
        for _ in range(2):
            tuner.record(1.0)
        assert tuner.current == 1 and tuner.speed[1] > tuner.speed[2]
    finally:
        torch.set_num_threads(before)
