"""`Trainer` gives the process back as it found it (audit 65, finding 6): torch's thread count and the caller's
random state, when `fit()` returns and when it stops (an error, Ctrl-C); building a `Trainer` changes neither.

The thread count used to be set in `Trainer.__init__` and put back only at the very end of a completed `fit()`: a
notebook's interrupted run left every later encode on the training's one thread. `torch.manual_seed` in `__init__`
reseeded the caller's generator for good. The run keeps its own random stream: what `fit()` draws is what it drew
before, whatever the caller does between building the trainer and fitting it."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from clipforge.train.trainer import Trainer
from tests.train.run_configs import small_run


@pytest.fixture()
def caller_threads():
    """The caller's own thread count (3: neither the run's 1 nor this machine's default), put back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


def _caller_draws() -> tuple[list[float], float, float]:
    return torch.rand(3).tolist(), random.random(), float(np.random.random())


def _seed_caller() -> None:
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)


class Stop(Exception):
    pass


@pytest.mark.parametrize("stop", [None, Stop, KeyboardInterrupt])
def test_fit_gives_back_the_threads_and_the_callers_random_state(caption_folders, tmp_path, monkeypatch,
                                                                 caller_threads, stop):
    _seed_caller()
    expected = _caller_draws()
    _seed_caller()
    trainer = Trainer(small_run(caption_folders, tmp_path / "run", threads=1))
    assert torch.get_num_threads() == caller_threads  # building a run changes no process-wide setting
    if stop is not None:
        real_step = Trainer._train_step

        def step_then_stop(self, batch, size):
            if self.step == 1:  # one step done: stopped mid-run
                raise stop("stopped")
            return real_step(self, batch, size)

        monkeypatch.setattr(Trainer, "_train_step", step_then_stop)
        with pytest.raises(stop):
            trainer.fit()
    else:
        assert trainer.fit()["steps"] == 3
    assert torch.get_num_threads() == caller_threads
    assert _caller_draws() == expected


def test_the_runs_random_stream_is_its_own(caption_folders, tmp_path, monkeypatch):
    """What each step draws from torch's generator is the same whether or not the caller drew numbers between
    building the trainer and fitting it (they used to come out of the run's stream)."""
    drawn: list[float] = []
    real_step = Trainer._train_step

    def step_and_draw(self, batch, size):
        drawn.append(float(torch.rand(1)))
        return real_step(self, batch, size)

    monkeypatch.setattr(Trainer, "_train_step", step_and_draw)
    runs = []
    for n, caller_draws in enumerate((0, 100)):
        drawn.clear()
        trainer = Trainer(small_run(caption_folders, tmp_path / f"run{n}", threads=1))
        torch.rand(caller_draws)
        losses = trainer.fit()["losses"]
        runs.append((list(drawn), losses))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 3
