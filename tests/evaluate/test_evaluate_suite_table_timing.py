"""The suite's table says how long each cell took as a whole: `s/image` (decode + model per image) hid
an ImageNet cell's 131 s of class embeddings (80 templates x 1,000 classes) behind 0.027 s/image."""

from __future__ import annotations

import csv
import json

from clipforge.evaluate.suite_table import write_tables


def test_tables_carry_each_cells_wall_seconds(tmp_path):
    cell = {
        "model": "clipforge-tiny",
        "dataset": "imagenet",
        "task": "zeroshot",
        "split": "val",
        "prompt_set": "imagenet",
        "metric": "top1",
        "value": None,
        "images_evaluated": 100,
        "images_skipped": 0,
        "seconds_per_image": 0.0274,
        "wall_seconds": 134.403,
        "precision": "fp32",
        "decode": "draft",
        "status": "computed",
    }
    write_tables({"cells": [cell], "missing": [], "expectations": [], "passed": True}, tmp_path)
    row = json.loads((tmp_path / "table.json").read_text())["rows"][0]
    assert row["seconds_per_image"] == 0.0274 and row["wall_seconds"] == 134.403
    assert next(csv.DictReader((tmp_path / "table.csv").open()))["wall_seconds"] == "134.403"
    header, _, line = (tmp_path / "table.md").read_text().splitlines()[:3]
    assert "| s/image | cell s |" in header and "| 0.0274 | 134.4 |" in line
