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

import pytest

from clipforge.cli.main import main
from clipforge.train.selfcheck import free_port

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


def test_two_nodes_each_with_its_own_disk_resume_only_the_same_checkpoint(caption_folders, tmp_path, capsys):
    """Two nodes, each its own --out (a disk per node) and its own copy of the data at another path, resume a
    1 x 4 run as 2 x --batch-size 2 (the same global batch): refused on both while node 1 holds an older
    checkpoint (before: each rank resumed its own, and the job hung with mixed weights), and nothing written to
    node 1's disk. That a resume on another process count with the same global batch continues exactly is
    `test_train_resume_world`'s; that the same data at another path is accepted, `test_train_same_run`'s."""
    data1 = Path(shutil.copytree(caption_folders, tmp_path / "mnt" / "data"))  # another mount point, same files
    disks, roots = [tmp_path / "node0", tmp_path / "node1"], [caption_folders, data1]

    def one_process(out: Path, *extra: str) -> None:
        argv = ["train", *ARGS, "--root", str(caption_folders), "--out", str(out), "--batch-size", "4", "--json"]
        assert main([*argv, *extra]) == 0
        capsys.readouterr()

    one_process(disks[0], "--set", "stop_after_steps=3")
    shutil.copytree(disks[0] / "checkpoints", disks[1] / "checkpoints")  # node 1's copy: step 3
    copied = {p.name: p.read_bytes() for p in (disks[1] / "checkpoints").iterdir()}
    one_process(disks[0], "--resume", "latest", "--set", "stop_after_steps=1")  # node 0 went on to step 4

    host = __import__("socket").gethostname()
    older = (
        f"error: --resume latest: rank 1 (host {host}) found model-step-3 (step 3), rank 0 (host {host}) "
        "model-1 (step 4); each node reads the checkpoint from its own --out: share one --out between the "
        "nodes, or copy rank 0's checkpoints folder to every node before resuming"
    )
    per_node = [["--root", str(r), "--out", str(d), "--batch-size", "2", "--resume", "latest"]
                for r, d in zip(roots, disks, strict=True)]
    results = _nodes(per_node, timeout=60)  # the old code hung here
    assert _errors(results) == [older, older] and [code for code, _ in results] == [2, 2]
    assert {p.name: p.read_bytes() for p in (disks[1] / "checkpoints").iterdir()} == copied
    assert sorted(p.name for p in disks[1].iterdir()) == ["checkpoints"]
