"""`eval suite` resuming a folder an earlier version wrote, with a template file edited since.

The earlier version named a template file's cell by the file's path alone; the new scheme names it by the file's
templates, and falls back to the earlier name so an old `--out` resumes. That fallback read an old cell of the
file after the file was edited, so the edited templates were reported with the old templates' numbers ("cached").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from clipforge.evaluate import suite as suite_module
from clipforge.evaluate.suite import run_suite


@pytest.fixture(autouse=True)
def _isolated(quiet_suite):
    """Every test here runs the suite as `quiet_suite` sets it up (conftest)."""


@pytest.fixture()
def sst2_root(tmp_path: Path) -> Path:
    """Rendered SST2's test split, two 8x8 images a class."""
    root = tmp_path / "data"
    for side, colour in (("negative", (200, 10, 10)), ("positive", (10, 200, 10))):
        folder = root / "rendered-sst2" / "test" / side
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (colour[0] - i, colour[1], colour[2])).save(folder / f"{i}.png")
    return root


def _suite(root: Path, out: Path, templates: str) -> dict:
    return run_suite(
        ["test-vit-tiny"],
        ["rendered_sst2"],
        root,
        out,
        tasks=("zeroshot",),
        templates=templates,
        workers=0,
        device="cpu",
        progress=False,
        echo=lambda text: None,
    )


def slug(text: str) -> str:
    """The earlier version's ASCII-only name of a part."""
    return re.sub(r"[^A-Za-z0-9.@-]+", "-", text).strip("-") or "x"


def _as_earlier_version_named_it(new: Path, out: Path, prompts: str) -> Path:
    """Move a cell to the name the earlier version gave it (ASCII-only slugs of every part, the prompts' whole)."""
    parts = new.stem.split("__")
    parts[3] = slug(prompts)
    old = out / "cells" / slug("test-vit-tiny") / ("__".join(slug(p) for p in parts) + ".json")
    old.parent.mkdir(parents=True, exist_ok=True)
    new.rename(old)
    return old


def _counting(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = suite_module._run_cell
    monkeypatch.setattr(
        suite_module, "_run_cell", lambda cell, *a, **k: calls.append(cell.prompts) or real(cell, *a, **k)
    )
    return calls


def test_an_old_cell_of_a_template_file_edited_since_is_not_resumed(sst2_root, tmp_path, monkeypatch):
    templates, out = tmp_path / "templates.txt", tmp_path / "out"
    templates.write_text("a photo of a {}.\n", encoding="utf-8")
    new = Path(_suite(sst2_root, out, str(templates))["cells"][0]["cell_file"])
    old = _as_earlier_version_named_it(new, out, str(templates))
    templates.write_text("a blurry photo of a {}.\n", encoding="utf-8")  # edited since
    calls = _counting(monkeypatch)
    again = _suite(sst2_root, out, str(templates))["cells"]
    assert [(r["status"], r["cell_file"] == str(old)) for r in again] == [
        ("computed", False),
        ("earlier run", True),
    ]
    assert calls == [str(templates)]


def test_an_old_cell_of_a_literal_template_still_resumes(sst2_root, tmp_path, monkeypatch):
    """The fallback stays where the spec is the templates themselves (a literal template, a set name)."""
    out, template = tmp_path / "out", "a photo of a {}."
    new = Path(_suite(sst2_root, out, template)["cells"][0]["cell_file"])
    old = _as_earlier_version_named_it(new, out, template)
    assert old != new
    calls = _counting(monkeypatch)
    again = _suite(sst2_root, out, template)["cells"]
    assert [(r["status"], r["cell_file"]) for r in again] == [("cached", str(old))] and calls == []


def test_a_cell_whose_file_cannot_be_written_fails_alone(sst2_root, tmp_path, monkeypatch):
    """Writing the cell's JSON was outside the cell's error handling: a write that failed (a full disk, or the
    temporary removed by another machine's run into the same shared --out, whose pid this machine does not know)
    ended the whole grid with a traceback and no table, after the models before it had run."""
    real = suite_module.write_json_atomic
    lost = tmp_path / "out" / "cells" / ".gone.tmp.json"

    def write(path, data):
        if data["clipforge"]["model_spec"] == "test-vit-tiny":
            raise FileNotFoundError(2, "No such file or directory", str(lost))
        return real(path, data)

    monkeypatch.setattr(suite_module, "write_json_atomic", write)
    summary = run_suite(
        ["test-vit-tiny", "test-rn-tiny"],
        ["rendered_sst2"],
        sst2_root,
        tmp_path / "out",
        tasks=("zeroshot",),
        templates="simple",
        workers=0,
        device="cpu",
        progress=False,
        echo=lambda text: None,
    )
    assert [(r["model"], r["status"], r.get("error")) for r in summary["cells"]] == [
        ("test-vit-tiny", "failed", f"[Errno 2] No such file or directory: '{lost}'"),
        ("test-rn-tiny", "computed", None),
    ]
    assert summary["failed"] == 1 and (tmp_path / "out" / "table.csv").is_file()


def test_a_long_template_whose_earlier_name_is_too_long_for_a_file_is_computed(sst2_root, tmp_path):
    """A 300-character template raised "File name too long" out of the suite before any cell ran (Python 3.11's
    `Path.is_file` re-raises ENAMETOOLONG): the template was tried as a file name, and so was the earlier
    version's name of its cell (over 255 bytes). The new name holds a hash; neither is a file, so it is computed."""
    template = "a photo of a {}, " + "which is a kind of thing, " * 11
    assert len(template) > 255
    summary = _suite(sst2_root, tmp_path / "out", template)
    assert [r["status"] for r in summary["cells"]] == ["computed"]
    assert len(Path(summary["cells"][0]["cell_file"]).name.encode()) < 255


@pytest.mark.filterwarnings("ignore:.*plain state dict:UserWarning")
def test_a_checkpoint_at_a_path_over_255_bytes_is_evaluated(tiny_vit, sst2_root, tmp_path):
    """A checkpoint three 100-character folders deep: the earlier version's folder name of it (the whole path in
    one name) is over 255 bytes, and looking for it, once `cells/` held a cell, ended the suite with "File name
    too long" (a second model of a grid, or any rerun)."""
    checkpoint = tmp_path / ("d" * 100) / ("e" * 100) / ("f" * 100 + ".pt")
    checkpoint.parent.mkdir(parents=True)
    torch.save(tiny_vit.state_dict(), checkpoint)
    summary = run_suite(
        ["test-vit-tiny", str(checkpoint)],
        ["rendered_sst2"],
        sst2_root,
        tmp_path / "out",
        tasks=("zeroshot",),
        workers=0,
        device="cpu",
        progress=False,
        echo=lambda text: None,
    )
    assert [(r["model"], r["status"]) for r in summary["cells"]] == [
        ("test-vit-tiny", "computed"),
        (str(checkpoint), "computed"),
    ]
