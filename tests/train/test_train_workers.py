"""DataLoader workers against the cores a run may use.

The pretrain recipe asks for 4 workers; on a 2-core machine torch printed "This DataLoader will create 4 worker
processes in total. Our suggested max number of worker in current system is 2 ..." twice a run, for a number the
user never gave. A recipe's number is now cut to the cores (silently); a number the user gives is kept, and said
once in one line when it outnumbers the cores (torch's own warning silenced). The core count is patched to 1 here
(`os.sched_getaffinity`, which both clipforge and torch read), so the tests mean the same on any machine.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.train.config import build_config

TORCH_WARNING = "This DataLoader will create"


@pytest.fixture
def one_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})


def test_a_recipes_workers_are_cut_to_the_cores_and_the_users_kept(one_core, monkeypatch) -> None:
    assert build_config("pretrain").workers == 1
    assert build_config("pretrain", ["workers=3"]).workers == 3
    assert build_config("pretrain", workers=2).workers == 2
    assert build_config("pretrain", ["workers=0"]).workers == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert build_config("pretrain").workers == 4  # a machine with the cores keeps the recipe's number


def _pretrain(caption_folders: Path, out: Path) -> int:
    """One step of the pretrain recipe on the caption folders, with the recipe's workers."""
    args = ["train", "--recipe", "pretrain", "--model", "test-vit-tiny", "--set", "data=folder", "--root"]
    args += [
        str(caption_folders),
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(out),
        "--set",
        "precision=fp32",
    ]
    return main([*args, "--set", "tensorboard=false", "--set", "grad_checkpointing=false"])


def test_a_recipe_run_says_nothing_of_workers(one_core, caption_folders, tmp_path, capfd) -> None:
    assert _pretrain(caption_folders, tmp_path / "run") == 0
    err = capfd.readouterr().err
    assert TORCH_WARNING not in err and "workers" not in err, err[-800:]


def test_workers_beyond_the_cores_are_kept_and_said_once(one_core, caption_folders, tmp_path) -> None:
    from clipforge.train.trainer import Trainer

    config = build_config(
        "pretrain", ["workers=2", "warmup_steps=10"], model="test-vit-tiny", root=str(caption_folders), batch_size=4
    )
    config.data, config.out_dir, config.tensorboard = "folder", str(tmp_path / "run"), False
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        trainer = Trainer(config)
        batch = next(iter(trainer._loader()))  # the loader of a run: 2 worker processes on "1 core"
    assert trainer.config.workers == 2 and len(batch.indices) == 4
    assert [str(w.message) for w in said] == [
        "workers=2: more DataLoader processes than the 1 core this process may run on; kept as asked "
        "(they take turns on the cores; --workers 1 uses each once)"
    ]


def test_the_workers_flag_is_the_users_number(one_core, caption_folders, monkeypatch) -> None:
    """`train --workers N` (before, only `--set workers=N`) reaches the run's config as the user's number: kept
    above the cores, where a recipe's own number is cut to them."""
    import clipforge.train.trainer as trainer

    seen = []
    monkeypatch.setattr(trainer, "train", lambda config: seen.append(config) or {"steps": 0, "checkpoint": "-"})
    base = ["train", "--recipe", "pretrain", "--model", "test-vit-tiny", "--set", "data=folder", "--root",
            str(caption_folders), "--json"]
    assert main([*base, "--workers", "3"]) == 0 and main(base) == 0 and main([*base, "--workers", "0"]) == 0
    assert [config.workers for config in seen] == [3, 1, 0]
