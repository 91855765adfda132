"""Training data that differs between the ranks of a torchrun job: one 2-process run per kind of data.

Starting 2 processes costs ~5 s here, so one run (gloo on CPU, `--batch-size 1`) over WebDataset shards holds
every streamed case, and one over a caption CSV the map-style ones (tests merged here:
test_review_s53_torchrun_empty_batch.py and test_train_student_skipped.py):

* **Unequal streams.** Shards are dealt round-robin to ranks, so ranks can hold different numbers of samples:
  here rank 0 reads 6, rank 1 reads 5. The rank that ran dry left the epoch while the others waited in the
  next step's all_reduce, and from then on their collectives met different ones (the job hung until killed).
  Now every rank ends the epoch at the same step, and rank 0 says once what the others left unused.
* **A batch empty on one rank.** A batch whose every image failed to decode on one rank is skipped by every
  rank together (before, that rank skipped alone: with 1 bad image in 4 on 2 ranks, both waited until killed).
  Rank 1's share holds 3 undecodable images and rank 0's 1, so some step is empty on rank 1 alone.
* **Skipped images of every rank, each once.** Each rank decodes only its share, so rank 1's bad images are
  known only to rank 1 (the summary, stderr line and log.jsonl held rank 0's share alone). The shard list names
  `shared.tar` twice and both ranks read it: its bad image counts once, as a CSV row whose file is missing (known
  to every rank) did in the merged test.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from clipforge.train.selfcheck import free_port

STEPS = 6  # also the nominal epoch's batches (no samples_per_epoch): longer than rank 1's share, which runs dry
SHARDS = {"shared": (3, {1}), "only0": (3, set()), "only1": (2, {0, 1})}  # name: (samples, undecodable ones)
ROOT_ORDER = ("only1", "shared", "shared", "only0")  # seed 0 deals: rank 0 shared+only0, rank 1 shared+only1


def _shards(folder: Path) -> tuple[str, list[str]]:
    """The tar shards; (the --root pattern, the `<shard>::<key>` sources of their undecodable samples)."""
    rng, bad = np.random.default_rng(3), []
    for name, (count, broken) in SHARDS.items():
        with tarfile.open(folder / f"{name}.tar", "w") as tar:
            for k in range(count):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, format="JPEG")
                image = b"not an image" if k in broken else buf.getvalue()
                for ext, data in (("jpg", image), ("txt", f"{name} photo number {k}".encode())):
                    info = tarfile.TarInfo(f"{name}{k}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        bad += [f"{folder / name}.tar::{name}{k}" for k in sorted(broken)]
    return f"{folder}/{{{','.join(ROOT_ORDER)}}}.tar", sorted(bad)  # a brace pattern: one name listed twice


def _two_ranks(args: list[str], timeout: float) -> list[tuple[int | None, str, str]]:
    """Two workers with the environment torchrun gives them (gloo on CPU); (exit code, or None when killed at
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


def test_ranks_with_unequal_streams_and_bad_images_stay_in_step(tmp_path: Path) -> None:
    from clipforge.data import WebDatasetImageText

    root, bad = _shards(tmp_path)
    dealt = [WebDatasetImageText(root, seed=0).shards_for(rank, 2) for rank in (0, 1)]
    assert [[Path(u).stem for u in urls] for urls in dealt] == [["shared", "only0"], ["shared", "only1"]]
    out = tmp_path / "run"
    args = ["--model", "test-vit-tiny", "--set", "data=webdataset", "--root", root, "--batch-size", "1"]
    args += [
        "--steps",
        str(STEPS),
        "--set",
        "precision=fp32",
        "--set",
        "tensorboard=false",
        "--set",
        "device=cpu",
    ]
    args += ["--set", "workers=0", "--set", "log_every=1", "--out", str(out), "--json"]
    results = _two_ranks(args, timeout=90)
    assert [code for code, _, _ in results] == [0, 0], [err[-600:] for _, _, err in results]
    summary = json.loads(results[0][1])
    # every rank ended epoch 1 when rank 1's stream ran dry, and both trained the same steps to the end
    assert summary["steps"] == STEPS and summary["epoch"] >= 1
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("kind") == "train"] == list(range(1, STEPS + 1))
    stderr = results[0][2].replace("\r", "\n").splitlines()
    uneven = [s for s in stderr if "ran out" in s]
    assert len(uneven) == 1, stderr[-20:]
    assert re.fullmatch(
        r"epoch 1: rank 1's share of the training stream ran out after \d+ batch(es)?; every rank ended the epoch "
        r"there, leaving (the batch in hand \(1 sample\) and )?any later samples of rank 0's share unused \(.*\)",
        uneven[0],
    ), uneven[0]
    # the skipped images of both ranks, each once (shared.tar's bad image was read by both)
    skipped = summary["skipped_images"]["train"]
    assert skipped["skipped"] == 3
    assert sorted(e["source"] for e in skipped["examples"]) == bad
    told = [r for r in records if r.get("kind") == "skipped"]
    assert [(r["data"], r["skipped"]) for r in told] == [("train", 3)]
    assert sorted(e["source"] for e in told[0]["examples"]) == bad
    lines = [s for s in stderr if s.startswith("training data:") and "left out" not in s]  # (trimmed: s58 test)
    assert len(lines) == 1 and lines[0].startswith("training data: 3 images skipped: "), lines


def test_map_style_ranks_skip_a_batch_empty_on_one_rank_and_count_every_rank_once(tmp_path: Path) -> None:
    """The same for map-style data (a caption CSV, split by the distributed sampler): 4 images, one a text file
    named .png, and a CSV row whose file the disk lacks (known to every rank). With `--batch-size 1` on 2 ranks
    the undecodable image makes one step empty on one rank alone: every rank skips it together (before, that
    rank skipped alone and both waited until killed), and each bad file counts once in the job's summary."""
    root, rng = tmp_path / "data", np.random.default_rng(3)
    root.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "2.png").write_text("not an image")
    csv = root / "captions.csv"
    csv.write_text("image,caption\n" + "".join(f"{i}.png,a photo number {i}\n" for i in (0, 1, 2, 3, 9)))
    out = tmp_path / "run"
    args = ["--model", "test-vit-tiny", "--set", "data=csv", "--root", str(csv), "--batch-size", "1", "--epochs",
            "1", "--set", "precision=fp32", "--set", "tensorboard=false", "--set", "device=cpu", "--workers", "0",
            "--out", str(out), "--json"]
    results = _two_ranks(args, timeout=90)
    assert [code for code, _, _ in results] == [0, 0], [err[-600:] for _, _, err in results]
    summary = json.loads(results[0][1])
    assert summary["steps"] == 2  # 2 rows a rank at batch 1: both steps done (the job hung before)
    skipped = summary["skipped_images"]["train"]
    assert skipped["skipped"] == 2
    assert sorted(e["source"] for e in skipped["examples"]) == [str(root / "2.png"), str(root / "9.png")]
    told = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [(r["data"], r["skipped"]) for r in told if r.get("kind") == "skipped"] == [("train", 2)]
