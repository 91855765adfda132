"""Resuming a run with another number of processes (`torchrun --nproc-per-node N`).

What a checkpoint's place means: the step count and `batch_in_epoch`, both counted in *global* batches (per-process
`--batch-size` x processes). `ResumableSampler` gives global batch s the samples order[s*G:(s+1)*G] of the epoch's
order whatever the split into processes, and the contrastive loss with `gather_with_grad` is the global batch's,
so a resume that keeps the global batch (1 x 4 -> 2 x 2 -> 1 x 4) continues the run exactly: same samples at
the same steps, same epoch ends, same learning rates, the same loss curve as the run never interrupted.

Before, the checkpoint did not record its process count:
- 1 x 4 paused half-way through epoch 1, resumed by 2 x 4: `batch_in_epoch` 2 was read as 2 batches of 8, the
  whole epoch; its other 8 images were never seen, the log jumped from epoch 0.5 to 1.5, the schedule shrank
  from 8 to 4 steps (lr 1.5e-4 at step 3 instead of 6.9e-4) and the run ended after 24 of its 32 samples.
- 2 x 4 paused after 1 step, resumed by 1 x 4: step 2 trained 4 images of step 1 again, epoch 1 read 20 images,
  and the schedule grew from 4 to 8 steps.
- 1 x 4 resumed by 2 x 2 (the same global batch, an exact continuation) was refused as a batch-size change,
  advising `--batch-size 4`: on 2 processes the first case above.
Now a checkpoint records `world_size` and `global_batch`; the same global batch resumes, another is refused in one
line naming both process counts and what to pass instead. Checkpoints from before resume as they did.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from clipforge.train.checkpoint import CheckpointError
from clipforge.train.config import TrainConfig


def _config(root: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="test-vit-tiny", data="folder", root=str(root), batch_size=4, epochs=2, lr=1e-3,
                precision="fp32", log_every=1, seed=0, out_dir=str(out), device="cpu", tensorboard=False)
    return TrainConfig(**{**base, **kw})


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _state(out: Path, name: str) -> dict:
    return torch.load(out / "checkpoints" / f"{name}.state.pt", weights_only=True)


def test_one_process_then_two_then_one_with_the_same_global_batch_matches_the_uninterrupted_run(
        caption_folders, tmp_path, capsys):
    """1 x 4 for 2 steps, 2 x 2 (torchrun-style, gloo) for 3 more across the end of epoch 1, then 1 x 4 to the end
    of epoch 2: the loss curve, epochs, learning rates and final weights of the uninterrupted 1 x 4 run."""
    import torch.multiprocessing as mp

    from clipforge.cli.main import main
    from clipforge.train.logs import read_log
    from clipforge.train.selfcheck import free_port, trainer_worker
    from clipforge.train.trainer import Trainer
    from clipforge.weights import load_state_dict

    ref, run = tmp_path / "ref", tmp_path / "run"
    Trainer(_config(caption_folders, ref)).fit()  # 16 images / 4 = 4 steps an epoch, 8 steps
    Trainer(_config(caption_folders, run, stop_after_steps=2)).fit()
    two = _config(caption_folders, run, batch_size=2, resume="latest", stop_after_steps=3).to_dict()
    mp.spawn(trainer_worker, args=(2, free_port(), two), nprocs=2, join=True)
    paused = _state(run, "model-step-5")
    assert (paused["world_size"], paused["global_batch"], paused["step"]) == (2, 4, 5)

    # 1 process x 2 is another global batch: one line naming both process counts, nothing touched
    before = _snapshot(run)
    code = main(["train", "--model", "test-vit-tiny", "--root", str(caption_folders), "--set", "data=folder",
                 "--set", "precision=fp32", "--set", "tensorboard=false", "--out", str(run), "--batch-size", "2",
                 "--epochs", "2", "--resume", "latest"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert line.startswith("error: --resume latest: model-step-5 was trained on 2 processes x --batch-size 2 (a "
                           "global batch of 4), this run has 1 process x --batch-size 2 (2): ")
    assert "resume with --batch-size 4 on 1 process (the same global batch), or with 2 processes and " \
           "--batch-size 2, or start a new run from its weights (--pretrained " in line
    assert _snapshot(run) == before

    summary = Trainer(_config(caption_folders, run, resume="latest")).fit()
    assert (summary["resumed_at_step"], summary["steps"], summary["epoch"]) == (5, 8, 2)

    def curve(out: Path, kind: str) -> list[tuple]:
        return [(r["step"], r["epoch"], r.get("loss"), r.get("lr")) for r in read_log(out) if r["kind"] == kind]

    got, want = curve(run, "train"), curve(ref, "train")
    assert [r[:2] for r in got] == [r[:2] for r in want] == [(s, s / 4 if s % 4 else s // 4) for s in range(1, 9)]
    np.testing.assert_allclose([r[2] for r in got], [r[2] for r in want], rtol=0, atol=1e-5)  # the loss curve
    np.testing.assert_allclose([r[3] for r in got], [r[3] for r in want], rtol=1e-9, atol=0)  # the schedule
    assert [r[:2] for r in curve(run, "eval")] == [r[:2] for r in curve(ref, "eval")] == [(4, 1), (8, 2)]
    final, expected = (load_state_dict(out / "checkpoints" / "model-2.safetensors") for out in (run, ref))
    for key, value in expected.items():
        torch.testing.assert_close(final[key], value, rtol=0, atol=1e-5)
    assert (_state(run, "model-2")["world_size"], _state(run, "model-2")["global_batch"]) == (1, 4)


def _saved(batch_size: int, world_size: int | None, batch_in_epoch: int = 2, epoch: int = 0) -> dict:
    state = {"train_config": json.dumps({"batch_size": batch_size}), "epoch": epoch, "batch_in_epoch": batch_in_epoch}
    if world_size is not None:
        state.update(world_size=world_size, global_batch=batch_size * world_size)
    return state


def _check(state: dict, batch_size: int, world_size: int, **kw) -> str | None:
    """The refusal's text, or None when the resume goes on."""
    # imported here, not at the top: the old code lacked the name, and the end-to-end tests show its behaviour
    from clipforge.train.resume_checks import check_same_batches

    config = TrainConfig(batch_size=batch_size, **kw)
    try:
        check_same_batches("latest", Path("/runs/a/checkpoints/model-step-2.safetensors"), config, state,
                           world_size=world_size, steps_per_epoch=4)
    except CheckpointError as error:
        return str(error)
    return None


def test_one_process_resumed_by_two_with_a_larger_global_batch_is_refused_naming_both():
    assert _check(_saved(4, 1), 4, 2) == (
        "--resume latest: model-step-2 was trained on 1 process x --batch-size 4 (a global batch of 4), this run "
        "has 2 processes x --batch-size 4 (8): its place in the data (2 batches into epoch 1) and its learning-rate "
        "schedule count global batches of 4, so another global batch would skip or repeat images; resume with "
        "--batch-size 2 on 2 processes (the same global batch), or with 1 process and --batch-size 4, or start a "
        "new run from its weights (--pretrained /runs/a/checkpoints/model-step-2.safetensors, another --out)")


@pytest.mark.parametrize(("saved", "batch_size", "world_size", "expected"), [
    ((4, 1), 2, 2, None),  # the same global batch of 4: an exact continuation
    ((2, 2), 4, 1, None),
    ((2, 4), 4, 2, None),
    ((4, 2), 4, 2, None),  # nothing changed
    ((4, 2), 8, 2, "was trained with --batch-size 4, this run has 8"),  # the same processes: the per-process size
    ((4, None), 4, 2, None),  # a checkpoint from before the count was recorded resumes as before
    ((4, None), 2, 2, "was trained with --batch-size 4, this run has 2"),
    ((2, 3), 2, 4, "resume with 3 processes and --batch-size 2, or start"),  # 6 does not split over 4 processes
    ((2, 2), 2, 1, "resume with --batch-size 4 on 1 process (the same global batch), or with 2 processes"),
])
def test_what_resumes_and_what_is_refused(saved, batch_size, world_size, expected):
    message = _check(_saved(*saved), batch_size, world_size)
    if expected is None:
        assert message is None
    else:
        assert message is not None and expected in message


def test_a_stream_read_in_order_cannot_change_processes_mid_epoch():
    """Each process reads its own shards of an ordered stream: its place half-way through an epoch is not a place
    in another split. At an epoch end (or with resampled shards) the same global batch goes on."""
    from clipforge.train.resume_checks import check_same_batches

    config = TrainConfig(batch_size=2)
    path = Path("/runs/a/checkpoints/model-step-2.safetensors")
    with pytest.raises(CheckpointError, match=r"^--resume latest: model-step-2 was trained on 1 process x "
                       r"--batch-size 4 \(a global batch of 4\), this run has 2 processes x --batch-size 2 \(4\): "
                       r"each process reads its own shards of the stream"):
        check_same_batches("latest", path, config, _saved(4, 1), world_size=2, steps_per_epoch=4,
                           shards_per_process=True)
    for at_epoch_end in (_saved(4, 1, batch_in_epoch=0, epoch=1), _saved(4, 1, batch_in_epoch=4)):
        check_same_batches("latest", path, config, at_epoch_end, world_size=2, steps_per_epoch=4,
                           shards_per_process=True)


def test_unique_captions_loss_is_per_process_so_the_split_must_stay():
    message = _check(_saved(4, 1), 2, 2, unique_captions=True, in_memory=True, data="labelled")
    assert message is not None and "unique_captions" in message and "with 1 process and --batch-size 4" in message


def test_a_checkpoint_from_before_the_count_was_recorded_still_resumes(caption_folders, tmp_path):
    from clipforge.train.trainer import Trainer

    run = tmp_path / "old"
    Trainer(_config(caption_folders, run, steps=2)).fit()
    path = run / "checkpoints" / "model-step-2.state.pt"
    state = torch.load(path, weights_only=True)
    assert (state.pop("world_size"), state.pop("global_batch")) == (1, 4)
    torch.save(state, path)
    summary = Trainer(_config(caption_folders, run, steps=3, resume="latest")).fit()
    assert (summary["resumed_at_step"], summary["steps"]) == (2, 3)


def test_the_copied_run_is_left_alone(caption_folders, tmp_path):
    """A refused resume through the library raises before anything is written (the CLI's exit 2 is the same)."""
    from clipforge.train.trainer import Trainer

    run = tmp_path / "run"
    Trainer(_config(caption_folders, run, steps=2)).fit()
    path = run / "checkpoints" / "model-step-2.state.pt"
    state = torch.load(path, weights_only=True)
    state.update(world_size=2, global_batch=8)  # as a 2 x 4 run would have written it
    torch.save(state, path)
    copy = Path(shutil.copytree(run, tmp_path / "copy"))
    before = _snapshot(copy)
    with pytest.raises(CheckpointError, match=r"trained on 2 processes x --batch-size 4 \(a global batch of 8\), "
                       r"this run has 1 process x --batch-size 4 \(4\)"):
        Trainer(_config(caption_folders, copy, steps=3, resume="latest")).fit()
    assert _snapshot(copy) == before


def test_gather_without_grad_is_per_process_so_the_split_must_stay():
    """With gather_with_grad=false each process's gradient is open_clip's approximation for its process count:
    a 1 x 4 -> 2 x 2 -> 1 x 4 resume moved the losses by up to 0.25 (the default stays within 5e-7)."""
    message = _check(_saved(4, 1), 2, 2, gather_with_grad=False)
    assert message is not None and "gather_with_grad=false" in message and "--set gather_with_grad=true" in message
    assert _check(_saved(4, 1), 2, 2) is None


def test_a_resnet_tower_s_batch_norm_is_per_process_so_the_split_must_stay(caption_folders, tmp_path):
    """BatchNorm trained on each process's own batch: a ResNet run resumed on another split moved its losses by up
    to 0.53. The trainer sees the layers; a ViT's run (no BatchNorm) goes on."""
    from clipforge.train.trainer import Trainer

    run = tmp_path / "rn"
    Trainer(_config(caption_folders, run, steps=2, model="test-rn-tiny")).fit()
    path = run / "checkpoints" / "model-step-2.state.pt"
    state = torch.load(path, weights_only=True)
    state.update(world_size=2, global_batch=4,  # as a 2 x 2 run would have written it
                 train_config=json.dumps({**json.loads(state["train_config"]), "batch_size": 2}))
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"trained on 2 processes x --batch-size 2 \(a global batch of 4\).*"
                       r"BatchNorm layers \(a ResNet tower\) are trained on each process's own batch"):
        Trainer(_config(caption_folders, run, steps=3, resume="latest", model="test-rn-tiny")).fit()
