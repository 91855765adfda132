"""`eval suite` as a researcher runs it, many models x datasets resumed into one folder: every model x dataset
cell is its own file (Chinese-named checkpoints and Chinese templates included), a rerun after a kill -9 reads
back nothing unfinished and lists every cell exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from clipforge.evaluate import suite as suite_module
from clipforge.evaluate.suite import run_suite

pytestmark = pytest.mark.filterwarnings("ignore:.*plain state dict:UserWarning")


@pytest.fixture(autouse=True)
def _isolated(quiet_suite):
    """Every test here runs the suite as `quiet_suite` sets it up (conftest)."""


@pytest.fixture()
def sst2_root(tmp_path: Path) -> Path:
    """Rendered SST2 in its own layout (train and test), two 8x8 images a class."""
    root = tmp_path / "数据"
    for split in ("train", "test"):
        for side, colour in (("negative", (200, 10, 10)), ("positive", (10, 200, 10))):
            (root / "rendered-sst2" / split / side).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (colour[0] - i, colour[1], colour[2])).save(
                    root / "rendered-sst2" / split / side / f"{i}.png"
                )
    return root


@pytest.fixture()
def chinese_checkpoints(tiny_vit, tmp_path: Path) -> list[str]:
    """test-vit-tiny's weights under three Chinese names: 甲 and 丙 the same weights, 乙 another logit scale."""
    state = tiny_vit.state_dict()
    folder = tmp_path / "模型"
    folder.mkdir()
    torch.save(state, folder / "中文模型甲.pt")
    torch.save({**state, "logit_scale": state["logit_scale"] + 0.5}, folder / "中文模型乙.pt")
    torch.save(state, folder / "中文模型丙.pt")
    return [str(folder / name) for name in ("中文模型甲.pt", "中文模型乙.pt", "中文模型丙.pt")]


def _suite(models, root, out, said=None, **kw):
    return run_suite(
        models,
        ["rendered_sst2"],
        root,
        out,
        workers=0,
        device="cpu",
        progress=False,
        echo=(said.append if said is not None else lambda text: None),
        **kw,
    )


def _counting(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = suite_module._run_cell
    monkeypatch.setattr(
        suite_module, "_run_cell", lambda cell, *a, **k: calls.append(cell.model) or real(cell, *a, **k)
    )
    return calls


def test_chinese_named_checkpoints_each_get_their_own_readable_cells(
    chinese_checkpoints, sst2_root, tmp_path, monkeypatch
):
    """All three went to one hidden folder `cells/.pt/`: 丙 (甲's weights) read 甲's cell as its own ("cached" on
    its first run) and vanished from the table of a later run that did not name it."""
    calls, said, out = _counting(monkeypatch), [], tmp_path / "结果"
    models = [*chinese_checkpoints, chinese_checkpoints[0]]  # named twice: one model, one row
    summary = _suite(models, sst2_root, out, said)
    assert [(Path(r["model"]).name, r["status"]) for r in summary["cells"]] == [
        ("中文模型甲.pt", "computed"),
        ("中文模型乙.pt", "computed"),
        ("中文模型丙.pt", "computed"),
    ]
    assert len(calls) == 3 and len({r["cell_file"] for r in summary["cells"]}) == 3
    folders = sorted(p.name for p in (out / "cells").iterdir())
    assert len(folders) == 3 and all(not f.startswith(".") for f in folders), folders
    assert sorted(f.split("中文模型")[1][:5] for f in folders) == ["丙.pt-", "乙.pt-", "甲.pt-"], folders
    for row in summary["cells"]:
        assert (
            json.loads(Path(row["cell_file"]).read_text(encoding="utf-8"))["clipforge"]["model_spec"]
            == row["model"]
        )
    assert [line.split("] ")[0] + "]" for line in said if "rendered_sst2" in line] == [
        "[1/3]",
        "[2/3]",
        "[3/3]",
    ]

    calls.clear()
    again = _suite(
        chinese_checkpoints[1:2], sst2_root, out
    )  # resume with one model: the others stay in the table
    assert calls == [] and sorted((Path(r["model"]).name, r["status"]) for r in again["cells"]) == [
        ("中文模型丙.pt", "earlier run"),
        ("中文模型乙.pt", "cached"),
        ("中文模型甲.pt", "earlier run"),
    ]
    rows = json.loads((out / "table.json").read_text(encoding="utf-8"))["rows"]
    assert sorted(Path(r["model"]).name for r in rows) == ["中文模型丙.pt", "中文模型乙.pt", "中文模型甲.pt"]


def test_a_cell_written_by_an_earlier_version_is_resumed_only_by_its_own_model(
    chinese_checkpoints, sst2_root, tmp_path, monkeypatch
):
    """An --out from before (ASCII-only names) resumes: 甲's cell in `cells/<old name>/` counts for 甲, not for 丙."""
    from clipforge.evaluate.suite_files import legacy_cell_path

    out = tmp_path / "结果"
    first = _suite(chinese_checkpoints[:1], sst2_root, out)
    new = Path(first["cells"][0]["cell_file"])
    old = legacy_cell_path(out / "cells", chinese_checkpoints[0], new.stem.split("__"))
    old.parent.mkdir(parents=True)
    new.rename(old)
    assert old.parent.name.endswith("-.pt")  # what every Chinese-named checkpoint was
    calls = _counting(monkeypatch)
    summary = _suite([chinese_checkpoints[0], chinese_checkpoints[2]], sst2_root, out)
    assert calls == [chinese_checkpoints[2]]  # 甲 resumed from the old file; 丙 computed its own
    assert [(Path(r["model"]).name, r["status"], r["cell_file"] == str(old)) for r in summary["cells"]] == [
        ("中文模型甲.pt", "cached", True),
        ("中文模型丙.pt", "computed", False),
    ]


def test_two_chinese_templates_are_two_cells_and_an_edited_template_file_a_new_one(
    sst2_root, tmp_path, monkeypatch
):
    """Every Chinese template was named `x`: the second template's run read the first one's cell ("cached")."""
    calls, out = _counting(monkeypatch), tmp_path / "结果"
    one = _suite(["test-vit-tiny"], sst2_root, out, templates="一张{}的照片")
    two = _suite(["test-vit-tiny"], sst2_root, out, templates="一幅{}的画")
    assert (one["cells"][0]["status"], two["cells"][0]["status"]) == ("computed", "computed") and len(
        calls
    ) == 2
    assert one["cells"][0]["cell_file"] != two["cells"][0]["cell_file"]
    assert "一张-的照片" in one["cells"][0]["cell_file"]  # readable
    assert (
        _suite(["test-vit-tiny"], sst2_root, out, templates="一张{}的照片")["cells"][0]["status"] == "cached"
    )
    templates = tmp_path / "模板.txt"
    templates.write_text("一张{}的照片\n", encoding="utf-8")
    assert (
        _suite(["test-vit-tiny"], sst2_root, out, templates=str(templates))["cells"][0]["status"]
        == "computed"
    )
    assert (
        _suite(["test-vit-tiny"], sst2_root, out, templates=str(templates))["cells"][0]["status"] == "cached"
    )
    templates.write_text("一张{}的图片\n", encoding="utf-8")  # edited: its cells are new ones
    assert (
        _suite(["test-vit-tiny"], sst2_root, out, templates=str(templates))["cells"][0]["status"]
        == "computed"
    )
    assert len(calls) == 4


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_resume_after_a_kill_between_writing_and_renaming_a_cell(sst2_root, tmp_path, monkeypatch):
    """The state a kill -9 leaves in the middle of the second cell's write: its complete JSON under the atomic
    writer's temporary name, half a predictions file, no cell. The rerun read the temporary as an "earlier run"
    cell and computed the cell again: the table listed it twice."""
    from clipforge.evaluate.suite_files import host_tag

    out, models = tmp_path / "结果", ["test-vit-tiny", "test-rn-tiny"]
    first = _suite(models, sst2_root, out)
    cells = {r["model"]: Path(r["cell_file"]) for r in first["cells"]}
    pid, killed = _dead_pid(), cells["test-rn-tiny"]
    here = host_tag()  # this host's writer left them (another host's are judged by age: test_evaluate_suite_hosts)
    temp = killed.with_name(f".{killed.name}.{pid}-0badc0de.tmp@{here}.json")
    killed.rename(temp)  # complete, never renamed
    preds = out / "predictions" / f".{killed.stem}.parquet.{pid}-0badc0de.tmp@{here}.parquet"
    preds.write_bytes(b"PAR1\x00half")
    truncated = out / "table.json"  # the table is rewritten, never read
    truncated.write_text('{"rows": [', encoding="utf-8")
    calls, said = _counting(monkeypatch), []
    again = _suite(models, sst2_root, out, said)
    assert calls == ["test-rn-tiny"]  # only the unfinished cell
    assert [(r["model"], r["status"]) for r in again["cells"]] == [
        ("test-vit-tiny", "cached"),
        ("test-rn-tiny", "computed"),
    ]
    rows = json.loads((out / "table.json").read_text(encoding="utf-8"))["rows"]
    assert sorted(r["model"] for r in rows) == ["test-rn-tiny", "test-vit-tiny"]
    assert not temp.exists() and not preds.exists() and killed.is_file()
    assert "removed 2 unfinished file(s) a stopped run left in" in said[0]


def test_cell_names_are_distinct_bounded_and_the_same_in_nfc_and_nfd():
    import unicodedata

    from clipforge.evaluate.suite_files import model_folder, prompts_part

    assert (
        model_folder("clipforge-tiny") == "clipforge-tiny"
        and model_folder("中文模型甲.pt") == "中文模型甲.pt"
    )
    assert model_folder("a b.pt") != model_folder("a-b.pt") and model_folder("a b.pt").startswith("a-b.pt-")
    assert model_folder("ViT-B/32").startswith("ViT-B-32-") and not model_folder("./.hidden.pt").startswith(
        "."
    )
    long = model_folder("/数据/" + "模" * 80 + ".pt")
    assert len(long.encode("utf-8")) <= 60 and long.startswith("模") and ".pt-" in long
    nfc, nfd = (model_folder(unicodedata.normalize(form, "모델.pt")) for form in ("NFC", "NFD"))
    assert nfc == nfd == "모델.pt"
    assert (
        prompts_part("zh-cifar10") == "zh-cifar10" and prompts_part("imagenet_r") == "imagenet-r"
    )  # as before
    assert prompts_part("a {} photo.") != prompts_part("a photo {}.")  # both were `a-photo-.`
