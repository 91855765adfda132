"""`train.csv` / `eval.csv` keep one header for every row: a record with a column the file lacks widens the file
once (its old rows' new cells empty) instead of appending a row longer than the header."""

from __future__ import annotations

import csv

from clipforge.train.logs import RunLogger

ROW = {
    "step": 1,
    "epoch": 0.1,
    "loss": 2.5,
    "lr": 1e-4,
    "logit_scale": 14.3,
    "samples_per_s": 50.0,
    "elapsed_s": 1.0,
}


def _rows(path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    return lines[0], lines[1:]


def test_a_resumed_run_that_logs_a_new_column_widens_the_header(tmp_path) -> None:
    RunLogger(tmp_path, tensorboard=False).log("train", ROW)  # a run from before the logit_bias column
    later = RunLogger(tmp_path, tensorboard=False)
    later.log("train", {**ROW, "step": 2, "logit_bias": -9.5})
    later.log("train", {**ROW, "step": 3, "logit_bias": -9.25})
    header, rows = _rows(tmp_path / "train.csv")
    assert header == [
        "step",
        "epoch",
        "loss",
        "lr",
        "logit_scale",
        "samples_per_s",
        "elapsed_s",
        "logit_bias",
    ]
    assert [len(r) for r in rows] == [8, 8, 8]
    assert [r[0] for r in rows] == ["1", "2", "3"] and [r[-1] for r in rows] == ["", "-9.5", "-9.25"]
    later.log("eval", {"step": 2, "val_acc1": 0.5})
    later.log("eval", {"step": 4, "val_acc1": 0.6, "forget_acc1": 0.2})
    header, rows = _rows(tmp_path / "eval.csv")
    assert header == ["step", "val_acc1", "forget_acc1"] and rows == [["2", "0.5", ""], ["4", "0.6", "0.2"]]
