"""The suite's merged outputs as a researcher opens them: table.csv for scripts and an Excel copy for Chinese
Windows, JSON that strict parsers read (no NaN), one bad cell counted and explained while the rest run, and a
heat map with one column per cell."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from clipforge.evaluate import suite as suite_module
from clipforge.evaluate.suite import run_suite
from clipforge.evaluate.suite_table import write_tables


def _strict(text: str):
    """JSON as a strict parser (jq, JavaScript) reads it: NaN and Infinity are errors."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


def _row(model: str, images: int, value: float | None = 0.5, **extra) -> dict:
    return {
        "model": model,
        "dataset": "cifar10",
        "task": "zeroshot",
        "split": "test",
        "prompt_set": "zh-cifar10",
        "metric": "top1",
        "value": value,
        "images_evaluated": images,
        "images_skipped": 0,
        "seconds_per_image": 0.01,
        "wall_seconds": 1.5,
        "precision": "fp32",
        "decode": "draft",
        "status": "computed",
        **extra,
    }


def _summary(cells: list[dict]) -> dict:
    return {"cells": cells, "missing": [], "expectations": [], "passed": True}


def test_table_csv_stays_plain_and_an_excel_copy_carries_a_bom(tmp_path, monkeypatch):
    """Excel on a Chinese Windows reads a BOM-less CSV as GBK: `中文模型甲.pt` showed as mojibake. table.csv stays
    what scripts and CLIP_benchmark read; table_excel.csv has the BOM and CRLF lines Excel expects."""
    import clipforge.evaluate.plots as plots

    # the heat map is not what is tested here
    monkeypatch.setattr(plots, "plot_heatmap", lambda grid, rows, cols, path, **kw: path)
    cells = [
        _row("模型/中文模型甲.pt", 20),
        _row("clipforge-tiny", 20, status="failed", error="坏图, 2 张\n第二行"),
    ]
    files = write_tables(_summary(cells), tmp_path)
    plain, excel = (tmp_path / "table.csv").read_bytes(), (tmp_path / "table_excel.csv").read_bytes()
    assert files["excel_csv"] == str(tmp_path / "table_excel.csv")
    assert not plain.startswith(b"\xef\xbb\xbf") and excel.startswith(b"\xef\xbb\xbf")
    assert excel.split(b"\r\n")[0] == b"\xef\xbb\xbf" + plain.split(b"\n")[0]
    with open(tmp_path / "table.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "table_excel.csv", encoding="utf-8-sig", newline="") as f:
        assert list(csv.DictReader(f)) == rows
    assert list(rows[0])[0] == "model" and [r["model"] for r in rows] == [
        "模型/中文模型甲.pt",
        "clipforge-tiny",
    ]
    assert rows[1]["error"] == "坏图, 2 张\n第二行" and rows[0]["ours"] == "50.0"
    markdown = (tmp_path / "table.md").read_text(encoding="utf-8").splitlines()
    assert markdown[3].endswith("| failed: 坏图, 2 张 第二行 |")  # one row of the Markdown table, not two
    pandas = pytest.importorskip("pandas")
    a, b = (
        pandas.read_csv(tmp_path / "table.csv"),
        pandas.read_csv(tmp_path / "table_excel.csv", encoding="utf-8-sig"),
    )
    assert list(a.columns) == list(b.columns) and a.columns[0] == "model" and a.equals(b)


def test_heatmap_has_a_column_per_cell_and_short_row_names(tmp_path, monkeypatch):
    """Two subsets of one dataset in one folder (a rerun with another --limit) were one column: the later cell
    drew over the earlier one. Whole checkpoint paths as row names crowded the numbers out."""
    import clipforge.evaluate.plots as plots

    drawn = {}
    monkeypatch.setattr(
        plots,
        "plot_heatmap",
        lambda grid, rows, cols, path, **kw: drawn.update(grid=grid.tolist(), rows=rows, cols=cols) or path,
    )
    write_tables(
        _summary(
            [
                _row("/data/模型/中文模型甲.pt", 20, 0.5),
                _row("/data/模型/中文模型甲.pt", 60, 0.25),
                _row("ViT-B/32", 20, 0.75),
            ]
        ),
        tmp_path,
    )
    assert drawn["cols"] == ["cifar10 [n=20]", "cifar10 [n=60]"] and drawn["rows"] == [
        "中文模型甲.pt",
        "ViT-B/32",
    ]
    assert (
        drawn["grid"][0] == [50.0, 25.0] and drawn["grid"][1][0] == 75.0 and math.isnan(drawn["grid"][1][1])
    )


@pytest.fixture()
def sst2_root(tmp_path: Path) -> Path:
    for split in ("train", "test"):
        for side, colour in (("negative", (200, 10, 10)), ("positive", (10, 200, 10))):
            (tmp_path / "data" / "rendered-sst2" / split / side).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), colour).save(
                    tmp_path / "data" / "rendered-sst2" / split / side / f"{i}.png"
                )
    return tmp_path / "data"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_nan_metric_is_written_as_null_json(sst2_root, tmp_path, monkeypatch):
    """mAP of a subset with no positives (VOC, small --limit) is NaN: it was written as `NaN` in the cell, which
    jq and JavaScript refuse, and said as `nan%`."""
    real = suite_module._run_cell

    def nan_top1(cell, *args, **kwargs):
        report = real(cell, *args, **kwargs)
        report["metrics"]["top1"] = float("nan")
        return report

    monkeypatch.setattr(suite_module, "_run_cell", nan_top1)
    said: list[str] = []
    summary = run_suite(
        ["test-vit-tiny"],
        ["rendered_sst2"],
        sst2_root,
        tmp_path / "out",
        workers=0,
        device="cpu",
        progress=False,
        echo=said.append,
    )
    cell = _strict(Path(summary["cells"][0]["cell_file"]).read_text(encoding="utf-8"))
    assert cell["metrics"]["acc1"] is None and cell["clipforge"]["paper_value"] is None
    assert cell["metrics"]["mean_per_class_recall"] == 0.5  # the others are kept
    assert cell["metrics"]["acc5"] is None  # 2 classes: top-5 is undefined (CLIP_benchmark's NaN), not 100%
    table = _strict((tmp_path / "out" / "table.json").read_text(encoding="utf-8"))
    assert table["rows"][0]["ours"] is None and summary["cells"][0]["value"] is None
    assert said == ["[1/1] test-vit-tiny x rendered_sst2 (zeroshot): top1 n/a (" + said[0].split(" (")[-1]]


def test_one_cell_failing_with_an_unexpected_error_does_not_stop_the_grid(sst2_root, tmp_path, monkeypatch):
    """A TypeError in one cell (a dataset adapter's bug) ended the whole suite: no later cell, no table."""
    real = suite_module._run_cell

    def broken_probe(cell, *args, **kwargs):
        if cell.task == "linear-probe":
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(suite_module, "_run_cell", broken_probe)
    said: list[str] = []
    summary = run_suite(
        ["test-vit-tiny"],
        ["rendered_sst2"],
        sst2_root,
        tmp_path / "out",
        workers=0,
        device="cpu",
        tasks=("linear-probe", "zeroshot"),
        progress=False,
        echo=said.append,
    )
    assert [(r["task"], r["status"]) for r in summary["cells"]] == [
        ("zeroshot", "computed"),
        ("linear-probe", "failed"),
    ]
    error = "TypeError: unsupported operand type(s) for +: 'int' and 'str'"
    assert summary["failed"] == 1 and summary["passed"] is False and summary["cells"][1]["error"] == error
    assert f"[2/2] failed test-vit-tiny x rendered_sst2 (linear-probe): {error}" in said
    markdown = (tmp_path / "out" / "table.md").read_text(encoding="utf-8")
    assert f"| failed: {error} |" in markdown and "\n2 cells: 1 computed, 1 failed\n" in markdown
    assert (tmp_path / "out" / "heatmap.png").is_file()
