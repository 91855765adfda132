"""Review of the uneven-streams change (s54): what an epoch of a stream is, and why a rank had no batch.

* `samples_per_epoch` is the whole job's: the trainer counted an epoch's steps as samples_per_epoch // (batch x
  ranks), but every rank's resampled stream read all of samples_per_epoch, so with 2 ranks an epoch used half of
  each rank's stream (measured: samples_per_epoch=8, --batch-size 1, 2 ranks: 4 steps, each rank's stream 8 long).
* A rank whose share held no batch (1 shard on 2 ranks) stopped every rank with "it gave fewer than --batch-size 1
  samples per rank ...; lower --batch-size or add data", wrong for the rank with plenty and no help to anyone.

Both are checked without a process group (starting 2 processes costs seconds; the 2-rank run is in
test_train_torchrun_data.py).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from types import SimpleNamespace

from clipforge.train.config import TrainConfig
from clipforge.train.data import build_train_dataset
from clipforge.train.trainer_steps import TrainerSteps


def _shard(folder: Path) -> str:
    """One tar shard of 3 samples (their images are never decoded here: a stream is only counted)."""
    with tarfile.open(folder / "s.tar", "w") as tar:
        for k in range(3):
            for ext, data in (("jpg", b"not decoded"), ("txt", f"photo {k}".encode())):
                info = tarfile.TarInfo(f"s{k}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(folder / "s.tar")


def test_samples_per_epoch_is_the_jobs_and_each_rank_reads_its_share(tmp_path: Path) -> None:
    root = _shard(tmp_path)
    config = TrainConfig(data="webdataset", root=root, samples_per_epoch=9, batch_size=2, workers=0)
    for rank in (0, 1):
        stream = build_train_dataset(config, 24, 77, rank=rank, world_size=2)
        assert sum(1 for _ in stream) == 5  # 9 over 2 ranks, rounded up (was 9 on each rank)
    trainer = SimpleNamespace(config=config, dataset=stream, dist=SimpleNamespace(world_size=2))
    sampler, steps_per_epoch = TrainerSteps._sampler(trainer)
    assert sampler is None and steps_per_epoch == 2  # 9 // (2 x 2): 4 of each rank's 5 samples used
    alone = SimpleNamespace(
        config=config, dataset=build_train_dataset(config, 24, 77), dist=SimpleNamespace(world_size=1)
    )
    assert (
        sum(1 for _ in alone.dataset) == 9 and TrainerSteps._sampler(alone)[1] == 4
    )  # one process: unchanged


def test_a_rank_whose_share_held_no_batch_is_named(tmp_path: Path) -> None:
    trainer = SimpleNamespace(
        config=TrainConfig(batch_size=1),
        dataset=SimpleNamespace(urls=["a.tar"]),
        dist=SimpleNamespace(world_size=2),
        skipped=SimpleNamespace(count=0),
        epoch=0,
        _dry_ranks=[1],
    )
    assert TrainerSteps._no_batch_reason(trainer) == (
        "epoch 1 of the training data gave no batch to train on: rank 1's share of the training stream (1 shard "
        "dealt round-robin to 2 ranks) gave no batch of --batch-size 1; use at least as many shards as ranks, each "
        "with a batch's samples, or resampling with samples_per_epoch"
    )
    trainer._dry_ranks = [0, 1]  # every rank empty: too few samples, as before
    assert "fewer than --batch-size 1 samples per rank" in TrainerSteps._no_batch_reason(trainer)
