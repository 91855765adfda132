"""Skipped images under torchrun: every rank's share counts, each file once.

Each rank of a job decodes only its share of the training data, so a file that does not decode is known
only to the rank that read it. Before, the summary, the stderr line and log.jsonl's "skipped" record held
rank 0's share alone: 2 processes on 16 images with 4 bad ones reported 2 (1 missing + 1 undecodable here).
Now every rank's tally is gathered at each report, and a file every rank knows (listed by the CSV but not
on disk) still counts once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from clipforge.train.selfcheck import free_port

BAD = ["caption_0/1.png", "caption_1/2.png", "caption_2/3.png"]  # text files named .png
MISSING = "caption_3/9.png"  # a CSV row whose image the disk lacks


def _csv_with_bad_images(caption_folders: Path, tmp_path: Path) -> Path:
    root = Path(shutil.copytree(caption_folders, tmp_path / "data"))
    for name in BAD:
        (root / name).write_text("not an image")
    rows = sorted(str(p.relative_to(root)) for p in root.rglob("*.png")) + [MISSING]
    csv = root / "captions.csv"
    csv.write_text("image,caption\n" + "".join(f"{r},a photo of {r.split('/')[0]}\n" for r in rows))
    return csv


def _two_ranks(args: list[str]) -> list[tuple[int, str, str]]:
    """Two workers with the environment torchrun gives them (gloo on CPU); (exit code, stdout, stderr) each."""
    port, src = free_port(), str(Path(__import__("clipforge").__file__).parents[1])  # the code under test
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "clipforge", "train", *args],
            env={
                **os.environ,
                "RANK": str(r),
                "LOCAL_RANK": "0",
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": src,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=90) for p in procs]
        return [(p.returncode, *output) for p, output in zip(procs, outputs, strict=True)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_the_summary_and_log_count_the_bad_images_of_every_rank_once(caption_folders, tmp_path):
    csv = _csv_with_bad_images(caption_folders, tmp_path)
    out = tmp_path / "run"
    results = _two_ranks(
        [
            "--model",
            "test-vit-tiny",
            "--set",
            "data=csv",
            "--root",
            str(csv),
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--set",
            "precision=fp32",
            "--set",
            "tensorboard=false",
            "--set",
            "device=cpu",
            "--json",
        ]
    )
    assert [code for code, _, _ in results] == [0, 0], [e[-400:] for _, _, e in results]
    summary = json.loads(results[0][1])["skipped_images"]["train"]
    expected = sorted([str(csv.parent / MISSING), *(str(csv.parent / n) for n in BAD)])
    assert summary["skipped"] == 4
    assert sorted(e["source"] for e in summary["examples"]) == expected
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    told = [r for r in records if r.get("kind") == "skipped"]
    assert [(r["data"], r["skipped"]) for r in told] == [("train", 4)]
    assert sorted(e["source"] for e in told[0]["examples"]) == expected
    lines = [s for s in results[0][2].replace("\r", "\n").splitlines() if s.startswith("training data:")]
    assert len(lines) == 1 and lines[0].startswith("training data: 4 images skipped: ")
