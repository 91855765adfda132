"""A batch empty on one rank of a torchrun job is skipped by every rank together.

A rank whose whole batch failed to decode skipped the step on its own (`continue`) while the other ranks trained
on theirs, so from then on its collectives (the batch-size all_reduce, DDP's gradients, the skipped-image gather
at the epoch end) met the other ranks' different ones: with one text file named .png among the images and
`--batch-size 1` on 2 ranks, both ranks waited until killed (measured: both still running after 100 s; the same
run with the image intact finished in 5 s). Now every rank learns the smallest rank's batch size first and all
skip a step that is empty anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from clipforge.train.selfcheck import free_port


def _data(tmp_path: Path) -> Path:
    """4 images, one of them a text file named .png; a caption CSV of all four."""
    root, rng = tmp_path / "data", np.random.default_rng(3)
    root.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "2.png").write_text("not an image")
    csv = root / "captions.csv"
    csv.write_text("image,caption\n" + "".join(f"{i}.png,a photo number {i}\n" for i in range(4)))
    return csv


def _two_ranks(args: list[str], timeout: float) -> list[tuple[int | None, str, str]]:
    """Two workers with the environment torchrun gives them (gloo on CPU); (exit code or None if killed at
    `timeout`, stdout, stderr) each."""
    port, src = free_port(), str(Path(__import__("clipforge").__file__).parents[1])  # the code under test
    env = {"LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "clipforge", "train", *args],
            env={**os.environ, **env, "RANK": str(r), "OMP_NUM_THREADS": "1", "PYTHONPATH": src},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.poll() is None:
                    q.kill()
            out, err = p.communicate()
            results.append((None, out, err))
    return results


def test_one_rank_with_an_empty_batch_does_not_hang_the_job(tmp_path: Path) -> None:
    csv = _data(tmp_path)
    args = ["--model", "test-vit-tiny", "--set", "data=csv", "--root", str(csv), "--batch-size", "1"]
    args += ["--epochs", "1", "--set", "precision=fp32", "--set", "tensorboard=false", "--set", "device=cpu"]
    args += ["--set", "workers=0", "--out", str(tmp_path / "run"), "--json"]
    results = _two_ranks(args, timeout=60)
    assert [code for code, _, _ in results] == [0, 0], [err[-400:] for _, _, err in results]
    summary = json.loads(results[0][1])
    assert summary["steps"] == 2
    assert summary["skipped_images"]["train"]["skipped"] == 1
    assert summary["skipped_images"]["train"]["examples"][0]["source"] == str(csv.parent / "2.png")
