"""audit59 newcomer finding 4: `eval suite` showed no progress inside a cell (an ImageNet cell embedded 79,840
prompts for ~110 s under an unchanged "2/4" bar): every cell ran its single command with ``progress=False``. Now a
cell's own bars (prompts, images) run on stderr under the suite's bar, each cleared when done; stdout is untouched
and ``--json`` (which turns the bars off, as the single commands do) stays one JSON document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.evaluate.suite import run_suite

pytestmark = pytest.mark.usefixtures("quiet_suite")  # tests/evaluate/conftest.py: own cache, no heat map


def _sst2(folder: Path, per_class: int = 3) -> Path:
    for name, colour in (("negative", (200, 10, 10)), ("positive", (10, 200, 10))):
        (folder / "test" / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (colour[0] - i, colour[1], 10)).save(folder / "test" / name / f"{i}.png")
    return folder


def _lines(err: str) -> list[str]:
    return [part.strip() for part in err.replace("\r", "\n").splitlines() if part.strip()]


def test_a_suite_cell_shows_its_prompt_and_image_progress_on_stderr(tmp_path: Path, capsys) -> None:
    data = _sst2(tmp_path / "sst2")
    said: list[str] = []
    summary = run_suite(["test-vit-tiny"], [f"rendered_sst2={data}"], None, tmp_path / "out", workers=0,
                        device="cpu", progress=True, echo=said.append)
    assert [c["status"] for c in summary["cells"]] == ["computed"]
    out, err = capsys.readouterr()
    assert out == ""
    lines = _lines(err)
    # the cell's own bars, nested under the suite's (how far they are drawn depends on tqdm's refresh interval):
    # its 2 prompts (2 classes x 1 SST2 template) and its 6 images
    assert any(line.startswith("class embeddings: ") and "/2 [" in line for line in lines), lines
    assert any(line.startswith("zeroshot rendered_sst2: ") and "/6 [" in line for line in lines), lines
    assert any(line.startswith("suite: 100%") and "1/1" in line for line in lines), lines
    assert said and said[0].startswith("[1/1] test-vit-tiny x rendered_sst2 (zeroshot): top1 ")


def test_without_progress_a_suite_writes_no_bars(tmp_path: Path, capsys) -> None:
    data = _sst2(tmp_path / "sst2")
    run_suite(["test-vit-tiny"], [f"rendered_sst2={data}"], None, tmp_path / "out", workers=0, device="cpu",
              progress=False, echo=lambda text: None)
    assert capsys.readouterr().err == ""


def test_suite_json_stays_one_document_on_stdout(tmp_path: Path, capsys) -> None:
    data = _sst2(tmp_path / "sst2")
    code = main(["eval", "suite", "--models", "test-vit-tiny", "--datasets", f"rendered_sst2={data}",
                 "--out", str(tmp_path / "out"), "--workers", "0", "--device", "cpu", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    assert json.loads(out)["cells"][0]["status"] == "computed"
    assert "%|" not in err  # no bar drawn
