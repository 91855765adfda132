"""What the ranks of a torchrun job compare before the first step and at a resume (`clipforge.train.same_run`),
without starting processes: each rank's `describe_run` as it would be gathered, and the one line it gives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from torch import nn

from clipforge.data import FolderCaptionImageText
from clipforge.train.checkpoint import CheckpointError
from clipforge.train.config import TrainConfig
from clipforge.train.same_run import (
    DifferentRunError,
    compare_checkpoints,
    compare_runs,
    data_fingerprint,
    describe_run,
)


def _config(root: Path, **kw) -> TrainConfig:
    return TrainConfig(
        **{"model": "test-vit-tiny", "data": "folder", "root": str(root), "batch_size": 2, **kw}
    )


def _ranks(*entries: tuple[TrainConfig, Path, nn.Module]) -> list[dict]:
    return [describe_run(config, FolderCaptionImageText(root), model) for config, root, model in entries]


def test_the_same_files_at_another_path_another_out_and_speed_knobs_are_the_same_run(
    caption_folders, tmp_path
):
    copy = Path(shutil.copytree(caption_folders, tmp_path / "elsewhere"))
    model = nn.Linear(2, 2)
    compare_runs(
        _ranks(
            (_config(caption_folders, out_dir="/a"), caption_folders, model),
            (_config(copy, out_dir="/b", workers=0, threads=1, resume="latest"), copy, model),
        )
    )


def test_fewer_files_on_one_node_is_refused_naming_both_roots_and_counts(caption_folders, tmp_path):
    few = Path(shutil.copytree(caption_folders, tmp_path / "few"))
    (few / "caption_3" / "0.png").unlink()
    model = nn.Linear(2, 2)
    ranks = _ranks((_config(caption_folders), caption_folders, model), (_config(few), few, model))
    with pytest.raises(DifferentRunError) as raised:
        compare_runs(ranks)
    host = ranks[0]["host"]
    assert str(raised.value) == (
        f"torchrun job: the training data of rank 1 (host {host}) (--root {few}) differs from rank 0 (host {host})'s "
        f"(--root {caption_folders}): 15 samples against 16; every node must see the same files (each rank takes "
        "its share of one list by its global rank)"
    )


def test_as_many_files_but_other_ones_is_refused(caption_folders, tmp_path):
    other = Path(shutil.copytree(caption_folders, tmp_path / "other"))
    (other / "caption_3" / "0.png").rename(other / "caption_3" / "9.png")
    assert data_fingerprint(FolderCaptionImageText(other))["count"] == 16
    assert data_fingerprint(FolderCaptionImageText(other)) != data_fingerprint(
        FolderCaptionImageText(caption_folders)
    )
    model = nn.Linear(2, 2)
    with pytest.raises(DifferentRunError, match=r": 16 samples, as many as rank 0's, but other files; "):
        compare_runs(
            _ranks((_config(caption_folders), caption_folders, model), (_config(other), other, model))
        )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"batch_size": 4}, "--batch-size 4 (rank 0: 2)"),
        ({"lr": 0.1, "seed": 3}, "--lr 0.1 (rank 0: 0.0001), --set seed 3 (rank 0: 0)"),
        (
            {"log_every": 5},
            "--set log_every 5 (rank 0: 10)",
        ),  # its loss all-reduce would pair with another step's
    ],
)
def test_other_settings_are_refused_naming_each_difference(caption_folders, change, named):
    model = nn.Linear(2, 2)
    base = _config(caption_folders, lr=1e-4, log_every=10)
    changed = _config(caption_folders, **{"lr": 1e-4, "log_every": 10, **change})
    ranks = _ranks((base, caption_folders, model), (changed, caption_folders, model))
    host = ranks[0]["host"]
    with pytest.raises(DifferentRunError) as raised:
        compare_runs(ranks)
    assert str(raised.value) == (
        f"torchrun job: rank 1 (host {host}) was started with other settings than rank 0 (host {host}): {named}; "
        "every node must run the same command (only --root, --out and the model's path may differ)"
    )


def test_another_architecture_is_refused(caption_folders):
    config = _config(caption_folders)
    with pytest.raises(
        DifferentRunError,
        match=r"^torchrun job: rank 1 \(host .*\) built another model "
        r"architecture than rank 0 \(host .*\) \(--model\): parameter names, shapes or preprocessing \(mean/std\) differ$",
    ):
        compare_runs(
            _ranks((config, caption_folders, nn.Linear(2, 2)), (config, caption_folders, nn.Linear(2, 3)))
        )
    other_mean = nn.Linear(2, 2)
    other_mean.preprocess_cfg = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    with pytest.raises(DifferentRunError, match=r"preprocessing \(mean/std\) differ$"):
        compare_runs(
            _ranks((config, caption_folders, nn.Linear(2, 2)), (config, caption_folders, other_mean))
        )


def test_a_rank_without_the_checkpoint_is_named_on_every_rank():
    """Before, that rank alone said so; the other died in gloo's 'Connection closed by peer' traceback."""
    ranks = [
        {"host": "a", "found": ("model-step-3", 3), "failure": None},
        {
            "host": "b",
            "found": None,
            "failure": "no latest checkpoint in /disk/run/checkpoints (no latest.json)",
        },
    ]
    with pytest.raises(CheckpointError) as raised:
        compare_checkpoints("latest", ranks)
    assert str(raised.value) == (
        "--resume latest: rank 1 (host b): no latest checkpoint in /disk/run/checkpoints (no latest.json); each node "
        "reads the checkpoint from its own --out: share one --out between the nodes, or copy rank 0's checkpoints "
        "folder to every node before resuming"
    )
    compare_checkpoints("latest", [{**ranks[0], "host": h} for h in "ab"])  # the same checkpoint: goes on
