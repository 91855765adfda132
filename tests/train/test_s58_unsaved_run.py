"""A run stopped before its first checkpoint (killed, Ctrl-C'd, out of memory in its first epoch) left logs and
nothing to continue: a new run into that --out was refused with advice to `--resume latest`, which was refused
too (audit 58 #3). Now both start the run again there, in one notice line, with the old logs moved aside."""

from __future__ import annotations

import json

import pytest

from clipforge.train.config import TrainConfig
from clipforge.train.logs import read_log
from clipforge.train.trainer import Trainer
from tests.train.run_configs import small_run


class _Interrupted:
    """An evaluation hook stopped by Ctrl-C: the run dies at its first epoch end, before that checkpoint."""

    name = "val"

    def __call__(self, model, device, precision=None):
        raise KeyboardInterrupt


def _config(root, out, **kw) -> TrainConfig:
    return small_run(root, out, **kw)


def _killed_run(root, out) -> None:
    with pytest.raises(KeyboardInterrupt):
        Trainer(_config(root, out), eval_hooks=[_Interrupted()]).fit()
    assert [r["step"] for r in read_log(out) if r["kind"] == "train"] == [1, 2]  # 16 images: 2 steps an epoch
    assert not list(out.glob("checkpoints/*.safetensors"))


@pytest.mark.parametrize("resume", [None, "latest"])
def test_a_run_that_saved_no_checkpoint_is_started_again(caption_folders, tmp_path, resume):
    out = tmp_path / "run"
    _killed_run(caption_folders, out)
    old_log = (out / "log.jsonl").read_text()
    with pytest.warns(UserWarning) as told:
        result = Trainer(_config(caption_folders, out, resume=resume), eval_hooks=[]).fit()
    notices = [str(w.message) for w in told if "saved no checkpoint" in str(w.message)]
    assert notices == [f"{out} holds a run that saved no checkpoint (killed at step 2?): starting it again (its "
                       f"logs are moved to {out / 'unsaved-run'})"]
    assert result["steps"] == 3 and result["resumed_at_step"] == 0
    # one run's log: each step once, from 1 (nothing of the killed run mixed in); the old log kept aside
    assert [r["step"] for r in read_log(out) if r["kind"] == "train"] == [1, 2, 3]
    assert [line.split(",")[0] for line in (out / "train.csv").read_text().splitlines()] == ["step", "1", "2", "3"]
    assert (out / "unsaved-run" / "log.jsonl").read_text() == old_log
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 3


def test_a_run_with_checkpoints_is_still_refused_and_resumed(caption_folders, tmp_path):
    from clipforge.train.config import TrainConfigError

    out = tmp_path / "run"
    Trainer(_config(caption_folders, out, stop_after_steps=1, save_every_steps=1), eval_hooks=[]).fit()
    with pytest.raises(TrainConfigError, match="already holds a run .*continue it with --resume latest"):
        Trainer(_config(caption_folders, out), eval_hooks=[])
    assert Trainer(_config(caption_folders, out, resume="latest"), eval_hooks=[]).fit()["resumed_at_step"] == 1
    assert not (out / "unsaved-run").exists()
