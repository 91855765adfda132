"""Review of the training fixes (stop 49): what the first fixes broke, and what they missed.

* A second run into an --out whose run has saved no checkpoint YET took it for dead: it moved the live run's logs,
  mixed its rows with the live run's and made it crash. The run's `run` record (pid, host) now tells them apart.
* A run killed between a checkpoint's weights and its training state was still a dead end (refused, then "no
  latest.json"): a checkpoint counts once its state is written.
* `precision=bf16` on a CPU emulating bf16 died at the first epoch end (the hook asked for `eval zeroshot
  --precision bf16`, which such a CPU refuses): it scores in fp32 there, as the command would be asked to.
* One bad member of a WebDataset shard (a duplicate name) dropped the rest of the shard as "damaged".
* A checkpoint written before the 10% warmup rule changed its schedule when resumed; the trimmed-image count
  started again from 0 on resume.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile

import pytest
import torch

from clipforge.train.config import TrainConfig, TrainConfigError
from clipforge.train.logs import read_log
from clipforge.train.trainer import Trainer
from tests.train.run_configs import small_run


def _config(root, out, **kw) -> TrainConfig:
    return small_run(root, out, **kw)


def _unsaved_log(out, pid: int) -> None:
    out.mkdir(parents=True)
    (out / "log.jsonl").write_text(
        f'{{"kind": "run", "pid": {pid}, "host": "{socket.gethostname()}", "step": 0}}\n'
        '{"kind": "train", "step": 1, "loss": 2.0, "lr": 0.001}\n')


def test_a_run_still_training_is_not_taken_for_a_dead_one(caption_folders, tmp_path):
    """Before: "holds a run that saved no checkpoint ...: starting it again", the live run's logs moved away."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _unsaved_log(tmp_path / "live", live.pid)
        with pytest.raises(TrainConfigError) as refused:
            Trainer(_config(caption_folders, tmp_path / "live"), eval_hooks=[])
    finally:
        live.kill()
        live.wait()
    assert str(refused.value) == (f"--out {tmp_path / 'live'}: a run (pid {live.pid}) is training there now and has "
                                  "saved no checkpoint yet: wait for it to end, or give this run another --out")
    assert (tmp_path / "live" / "log.jsonl").is_file()  # nothing of it was moved
    with pytest.warns(UserWarning, match="saved no checkpoint"):  # the same log, its process gone: started again
        result = Trainer(_config(caption_folders, tmp_path / "live"), eval_hooks=[]).fit()
    assert result["steps"] == 3
    starts = [r for r in read_log(tmp_path / "live") if r["kind"] == "run"]
    assert [(r["pid"], r["host"]) for r in starts] == [(os.getpid(), socket.gethostname())]


def test_a_checkpoint_without_its_training_state_is_no_checkpoint(caption_folders, tmp_path):
    """Before: refused ("already holds a run (1 checkpoint(s))"), then `--resume latest`: "no latest.json"."""
    out = tmp_path / "half"
    _unsaved_log(out, 2**22 + 12345)  # a pid that is no process
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "model-step-2.safetensors").write_bytes(b"killed before its .state.pt")
    with pytest.warns(UserWarning, match="saved no checkpoint"):
        result = Trainer(_config(caption_folders, out, resume="latest"), eval_hooks=[]).fit()
    assert result["steps"] == 3


def test_the_epoch_hook_scores_bf16_runs_in_fp32_where_bf16_is_emulated(monkeypatch):
    """Before: the hook asked for bf16 on such a CPU and the first epoch end raised its refusal."""
    import clipforge.inference.cpu as cpu
    from clipforge.train.evalhook import eval_precision

    monkeypatch.setattr(cpu, "bf16_supported", lambda: False)
    assert eval_precision(torch.bfloat16, "cpu") == "fp32"
    monkeypatch.setattr(cpu, "bf16_supported", lambda: True)
    assert eval_precision(torch.bfloat16, "cpu") == "bf16"
    assert eval_precision(torch.float16, "cpu") == eval_precision(None, "cpu") == "fp32"


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_one_bad_member_skips_its_sample_not_the_rest_of_the_shard(tmp_path):
    """Before: a duplicate name in sample 4 of 40 ended the shard: 4 samples read, 36 lost as "damaged"."""
    pytest.importorskip("webdataset")
    from clipforge.data.webdata import DamagedShard, _samples

    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(40):
            _member(tar, f"{i:04d}.txt", b"a caption")
            if i == 4:
                _member(tar, f"{i:04d}.TXT", b"the same sample's caption again")
            _member(tar, f"{i:04d}.jpg", b"jpeg bytes")
    with pytest.warns(UserWarning, match="that sample is skipped"):
        samples = list(_samples(iter([str(shard)])))
    assert not [s for s in samples if isinstance(s, DamagedShard)]
    assert len(samples) >= 39


def test_a_checkpoint_from_before_the_10_percent_rule_keeps_its_warmup():
    """Before: resumed under the new rule (20 steps, warmup 2000: 2 steps), its rate halved mid-run."""
    from clipforge.train.schedule import resumed_warmup

    assert resumed_warmup({}, 2000, 20) == 20  # the rule of its time: cut to the run's length
    assert resumed_warmup({"warmup_steps_used": 2}, 2000, 20) == 2
    assert resumed_warmup({}, 5, 20) == 5


def test_a_resumed_run_keeps_its_schedule_and_its_trimmed_count(caption_folders, tmp_path):
    out = tmp_path / "resumed"
    whole = Trainer(_config(caption_folders, tmp_path / "whole", steps=4, warmup_steps=4000), eval_hooks=[])
    whole.fit()
    first = Trainer(_config(caption_folders, out, steps=4, warmup_steps=4000, stop_after_steps=2), eval_hooks=[])
    first.trimmed_images = 5
    first.fit()
    (saved,) = sorted((out / "checkpoints").glob("*.state.pt"), key=lambda p: p.stat().st_mtime)[-1:]
    state = torch.load(saved, weights_only=False)
    assert state["warmup_steps_used"] == 2 and state["trimmed_images"] == 5
    state.pop("warmup_steps_used")  # as a checkpoint written before it was recorded
    torch.save(state, saved)
    resumed = Trainer(_config(caption_folders, out, steps=4, warmup_steps=4000, resume="latest"), eval_hooks=[])
    resumed.fit()
    assert resumed.scheduler.warmup_steps == 4 and resumed.trimmed_images == 5  # the old rule: min(4000, 4)
    lrs = [r["lr"] for r in read_log(out) if r["kind"] == "train"]
    # step 4 at factor(3) of a 4-step warmup (1.0), as the old run would have gone on; the 10% rule's 2-step warmup
    # gave 0.5 there (the cosine half way). (Step 3's rate is the optimizer state's, written by this code here.)
    assert lrs[-1] == pytest.approx(1e-3, rel=1e-9)
