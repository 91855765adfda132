"""train.csv's `lr` is the rate its step trained at (audit 58 #7: it was read after the schedule advanced, so step 1
never showed the start rate and the last step showed 0.0), and a warmup not shorter than the run is said and
replaced by 10% of the run, so a short run still decays (audit 58 #9: the pretrain recipe's 2,000 warmup steps
made a 20-step smoke run rise to the peak rate and end there, without a word)."""

from __future__ import annotations

import math
import warnings

import pytest

from clipforge.train.config import TrainConfig
from clipforge.train.logs import read_log
from clipforge.train.trainer import Trainer

LR = 1e-3


def _lrs(root, out, **kw) -> list[float]:
    base = dict(model="test-vit-tiny", data="folder", root=str(root), batch_size=4, steps=8, lr=LR,
                warmup_steps=0, precision="fp32", log_every=1, out_dir=str(out), seed=3, device="cpu",
                tensorboard=False)
    Trainer(TrainConfig(**{**base, **kw})).fit()
    return [r["lr"] for r in read_log(out) if r["kind"] == "train"]


def test_each_row_logs_the_rate_its_step_used(caption_folders, tmp_path):
    lrs = _lrs(caption_folders, tmp_path / "cos", steps=4)
    assert lrs[0] == LR  # step 1 trains at the configured start rate (no warmup)
    expected = [LR * 0.5 * (1 + math.cos(math.pi * step / 4)) for step in range(4)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[-1] > 0  # the last step trained at factor(3), not at the 0.0 the schedule reaches after it
    warm = _lrs(caption_folders, tmp_path / "warm", steps=5, warmup_steps=4)
    assert warm[:4] == pytest.approx([LR / 4, LR / 2, 3 * LR / 4, LR], rel=1e-12)


def test_a_warmup_as_long_as_the_run_is_said_and_the_run_still_decays(caption_folders, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lrs = _lrs(caption_folders, tmp_path / "short", steps=10, warmup_steps=2000, batch_size=2)
    told = [str(w.message) for w in caught if "warmup" in str(w.message)]
    assert told == ["warmup_steps 2000 is not shorter than this run's 10 steps: the learning rate warms up over the "
                    "first 2 steps (10% of the run, at least 2) and then decays (cosine) to 0 instead of rising for "
                    "the whole run; set warmup_steps below 10 to choose"]
    expected = [LR * 0.5 * (1 + math.cos(math.pi * (step - 2) / 8)) for step in range(2, 10)]
    # 2 warmup steps (a 1-step warmup's first step was at the peak already: review), then the cosine over 8
    assert lrs == pytest.approx([LR / 2, LR, *expected], rel=1e-12)
    assert lrs[-1] < LR / 10  # decays to near 0 by the end (it rose to the peak at the last step before)


def test_a_warmup_shorter_than_the_run_is_kept_without_a_word():
    from clipforge.train.schedule import effective_warmup, warmup_notice

    assert [effective_warmup(w, 8) for w in (0, 3, 7, 8, 2000)] == [0, 3, 7, 2, 2]
    assert [effective_warmup(2000, n) for n in (1, 2, 3, 20, 1999, 2000, 2001)] == [0, 0, 2, 2, 200, 200, 2000]
    assert warmup_notice(7, 8) is None and warmup_notice(5, 1) is None and warmup_notice(5, 2) is None
    assert warmup_notice(8, 8).startswith("warmup_steps 8 is not shorter than this run's 8 steps: the learning rate "
                                          "warms up over the first 2 steps (10% of the run, at least 2)")
