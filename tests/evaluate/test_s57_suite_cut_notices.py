"""`eval suite` says and records what the model's context cut, as `eval zeroshot` does.

Each cell's report counted the prompts whose label clipforge-tiny-zh's 16 tokens cut (``prompts_cut``), but the
suite printed nothing of it and its cell files kept nothing: a grid of Chinese prompts on a short-context model
read as plain accuracies."""

from __future__ import annotations

import json
from pathlib import Path

from clipforge.cli.main import main

CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10_jpeg" / "test_jpeg.zip"


def test_a_suite_cell_says_and_keeps_the_prompts_its_model_cuts(tmp_path: Path, capsys) -> None:
    args = ["eval", "suite", "--models", "clipforge-tiny-zh", "--datasets", f"cifar10={CIFAR}", "--tasks", "zeroshot",
            "--templates", "zh-imagenet", "--limit", "20", "--workers", "0", "--out", str(tmp_path / "suite")]
    assert main(args) == 0
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if "lose their label to that cut" in line]
    assert len(notices) == 1 and notices[0].startswith("notice: model clipforge-tiny-zh reads 16 tokens"), err
    cell = json.loads(next((tmp_path / "suite" / "cells").rglob("*.json")).read_text(encoding="utf-8"))
    details = cell["clipforge"]
    assert details["cut_notice"] == notices[0]
    assert details["prompts_cut"]["context_length"] == 16 and details["prompts_cut"]["prompts_losing_label"] > 0
    assert details["prompts_cut"]["prompts"] == 780  # 78 distinct zh-imagenet templates x 10 labels
