"""`clipforge train` on two machines: `torchrun --nnodes=2 --nproc-per-node=1 --rdzv-backend=c10d ...` on each.

Simulated here as torchrun's agents start their workers: two `python -m clipforge train` processes with the
environment torchrun gives one worker on each of two nodes (RANK 0 and 1, LOCAL_RANK 0 on both, WORLD_SIZE 2,
GROUP_RANK = the node), gloo on CPU. Measured with real torchrun (two agents, c10d rendezvous on 127.0.0.1):
the 2-node run's loss curve and weights equal the 1-node 2-process run's bit for bit, and a 1-process run of the
same global batch to 3e-6 (losses) and 5e-5 (weights); only global rank 0 writes (a second node's --out is not
even made). What broke:
- a node started with another --batch-size trained 2 steps on batches of other sizes, then hung at the epoch end
  (gloo's 30-minute timeout); one whose data folder held 12 of the 16 images did the same;
- with a disk per node, `--resume latest` failed on the node without the checkpoint in one line, while the
  other died in a gloo traceback ("Connection closed by peer"); a node holding an older checkpoint resumed it,
  so the ranks' weights, steps and schedules differed under one DDP.
Now every rank compares its settings, data list and model (`clipforge.train.same_run`) before the first step,
and the checkpoint it resumes, and all refuse in the same one line naming the rank and the difference.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clipforge.cli.main import main
from clipforge.train.logs import read_log
from clipforge.train.selfcheck import free_port
from clipforge.weights import load_state_dict

ARGS = [
    "--model",
    "test-vit-tiny",
    "--set",
    "data=folder",
    "--set",
    "precision=fp32",
    "--set",
    "tensorboard=false",
    "--set",
    "log_every=1",
    "--set",
    "seed=0",
    "--set",
    "device=cpu",
    "--lr",
    "1e-3",
    "--steps",
    "6",
]


def _nodes(per_node: list[list[str]], timeout: float = 60) -> list[tuple[int, str]]:
    """Start one worker per node as torchrun's agent would (LOCAL_RANK 0 on every node); (exit code, stderr)."""
    port = free_port()
    src = str(Path(__import__("clipforge").__file__).parents[1])  # the code under test, old or new
    procs = []
    for node, args in enumerate(per_node):
        env = {
            **os.environ,
            "RANK": str(node),
            "GROUP_RANK": str(node),
            "LOCAL_RANK": "0",
            "LOCAL_WORLD_SIZE": "1",
            "WORLD_SIZE": str(len(per_node)),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": src,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "clipforge", "train", *ARGS, *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the {len(procs)} nodes hung: no end after {timeout} s")
            results.append((proc.returncode, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _errors(results: list[tuple[int, str]]) -> list[str]:
    return [
        next((line for line in err.splitlines() if line.startswith("error: ")), err[-300:])
        for _, err in results
    ]


def test_a_node_started_with_another_batch_size_is_refused_on_every_node_in_one_line(
    caption_folders, tmp_path
):
    """Before: 2 steps on batches of 2 and 4, then a hang at the epoch end. Now: exit 2 on both, nothing written."""
    out = tmp_path / "run"
    common = ["--root", str(caption_folders), "--out", str(out)]
    results = _nodes([[*common, "--batch-size", "2"], [*common, "--batch-size", "4"]], timeout=60)
    host = __import__("socket").gethostname()
    expected = (
        f"error: torchrun job: rank 1 (host {host}) was started with other settings than rank 0 (host {host}): "
        "--batch-size 4 (rank 0: 2); every node must run the same command (only --root, --out and the "
        "model's path may differ)"
    )
    assert [code for code, _ in results] == [2, 2]
    assert _errors(results) == [expected, expected]
    assert not out.exists() or not any(out.rglob("*"))


@pytest.mark.slow  # four runs, two of them two processes: 19-67 s on the shared 2-core machine
def test_two_nodes_each_with_its_own_disk_resume_only_the_same_checkpoint_and_match_one_process(
    caption_folders, tmp_path, capsys
):
    """Two nodes, each its own --out (a disk per node) and its own copy of the data at another path, resume a
    1 x 4 run paused at step 3 as 2 x --batch-size 2 (the same global batch): refused while node 1 holds an
    older checkpoint (before: each rank resumed its own, and the job hung with mixed weights), exact once rank
    0's checkpoints are copied to it: the curve and weights of the uninterrupted 1-process run, and node 1's
    disk is only read."""
    data1 = Path(
        shutil.copytree(caption_folders, tmp_path / "mnt" / "data")
    )  # another mount point, same files
    disks, roots = [tmp_path / "node0", tmp_path / "node1"], [caption_folders, data1]

    def one_process(out: Path, *extra: str) -> None:
        assert (
            main(
                [
                    "train",
                    *ARGS,
                    "--root",
                    str(caption_folders),
                    "--out",
                    str(out),
                    "--batch-size",
                    "4",
                    "--json",
                    *extra,
                ]
            )
            == 0
        )
        capsys.readouterr()

    def nodes(timeout: float) -> list[tuple[int, str]]:
        return _nodes(
            [
                ["--root", str(r), "--out", str(d), "--batch-size", "2", "--resume", "latest"]
                for r, d in zip(roots, disks, strict=True)
            ],
            timeout=timeout,
        )

    one_process(disks[0], "--set", "stop_after_steps=3")
    shutil.copytree(disks[0] / "checkpoints", disks[1] / "checkpoints")  # node 1's copy: step 3
    one_process(disks[0], "--resume", "latest", "--set", "stop_after_steps=1")  # node 0 went on to step 4

    host = __import__("socket").gethostname()
    older = (
        f"error: --resume latest: rank 1 (host {host}) found model-step-3 (step 3), rank 0 (host {host}) "
        "model-1 (step 4); each node reads the checkpoint from its own --out: share one --out between the "
        "nodes, or copy rank 0's checkpoints folder to every node before resuming"
    )
    results = nodes(timeout=60)  # the old code hung here
    assert _errors(results) == [older, older] and [code for code, _ in results] == [2, 2]

    shutil.rmtree(disks[1] / "checkpoints")
    shutil.copytree(disks[0] / "checkpoints", disks[1] / "checkpoints")
    copied = {p.name: p.read_bytes() for p in (disks[1] / "checkpoints").iterdir()}
    results = nodes(timeout=180)
    assert [code for code, _ in results] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    reference = tmp_path / "one"
    one_process(reference)

    def curve(out: Path) -> list[tuple]:
        return [(r["step"], r["epoch"], r["loss"], r["lr"]) for r in read_log(out) if r["kind"] == "train"]

    got, want = curve(disks[0]), curve(reference)
    assert (
        [r[:2] for r in got]
        == [r[:2] for r in want]
        == [(s, s / 4 if s % 4 else s // 4) for s in range(1, 7)]
    )
    np.testing.assert_allclose([r[2] for r in got], [r[2] for r in want], rtol=0, atol=1e-5)
    np.testing.assert_allclose([r[3] for r in got], [r[3] for r in want], rtol=1e-9, atol=0)
    final, expected = (
        load_state_dict(out / "checkpoints" / "model-step-6.safetensors") for out in (disks[0], reference)
    )
    assert final.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(final[key], value, rtol=0, atol=1e-4)
    state = torch.load(disks[0] / "checkpoints" / "model-step-6.state.pt", weights_only=True)
    assert (state["world_size"], state["global_batch"], state["step"]) == (2, 4, 6)
    # only global rank 0 writes: node 1's disk holds the copy it read and nothing else
    assert {p.name: p.read_bytes() for p in (disks[1] / "checkpoints").iterdir()} == copied
    assert sorted(p.name for p in disks[1].iterdir()) == ["checkpoints"]
