"""`similarity` and `embed` take `--max-pixels N`, the pixel limit of `index add` and `serve` (audit, stop 47).

A photo over the limit is skipped with a reason saying that `--max-pixels N` allows more; `similarity` (and
`embed`) had no such flag. The limit goes through the one reader (`clipforge.data.files.with_max_pixels`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.cli.main import main

TINY = ["--model", "test-vit-tiny", "--device", "cpu", "-q"]


def _photo(path: Path, size: tuple[int, int] = (200, 100)) -> Path:  # 20,000 pixels
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_similarity_max_pixels_reaches_the_reader(tmp_path, capsys) -> None:
    big, small = _photo(tmp_path / "big.png"), _photo(tmp_path / "small.png", (40, 30))
    argv = ["similarity", str(big), str(small), "--text", "a", "b", *TINY, "--json"]
    assert main([*argv, "--max-pixels", "10000"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == [str(small)]
    [error] = out["errors"]
    assert error["image"] == str(big) and error["error"].startswith(
        "too many pixels (200x100 = 20,000 pixels exceeds the limit of 10,000, a guard against decompression bombs: ")
    assert "--max-pixels N" in error["error"]
    assert main([*argv, "--max-pixels", "20000"]) == 0  # the limit allows exactly this many
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == [str(big), str(small)] and out["errors"] == []


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_bad_max_pixels_is_one_line(tmp_path, capsys, value: str) -> None:
    photo = _photo(tmp_path / "photos" / "a.png")
    expected = f"--max-pixels must be a positive number of pixels (the bomb guard, e.g. 178956970), got {value}"
    assert main(["similarity", str(photo), "--text", "a", *TINY, f"--max-pixels={value}"]) == 2
    assert capsys.readouterr().err == f"error: {expected}\n"
    out = tmp_path / "emb"
    assert main(["embed", str(photo.parent), "--out", str(out), *TINY, f"--max-pixels={value}"]) == 2
    assert capsys.readouterr().err == f"error: {expected}\n"
    assert not out.exists()


def test_embed_max_pixels_reaches_the_reader_and_the_job(tmp_path, capsys) -> None:
    photos = tmp_path / "photos"
    _photo(photos / "big.png"), _photo(photos / "small.png", (40, 30))
    out = tmp_path / "emb"
    assert main(["embed", str(photos), "--out", str(out), *TINY, "--max-pixels", "10000"]) == 0
    capsys.readouterr()
    stats = json.loads(next((out / "stats").glob("*.json")).read_text())
    assert stats["embedded"] == 1 and [f["path"] for f in stats["failures"]] == [str(photos / "big.png")]
    assert "exceeds the limit of 10,000" in stats["failures"][0]["reason"]
    assert json.loads((out / "job.json").read_text())["max_pixels"] == 10000
    # another limit is another job (which files fail), as `embed` refuses any other job
    assert main(["embed", str(photos), "--out", str(out), *TINY]) == 2
    assert "max_pixels 10000 there, 178956970 now" in capsys.readouterr().err


def test_classify_max_pixels_reaches_the_reader(tmp_path, capsys) -> None:
    """classify's skipped-photo reason named `--max-pixels N` flags of other commands only: it has its own now."""
    big, small = _photo(tmp_path / "big.png"), _photo(tmp_path / "small.png", (40, 30))
    argv = ["classify", str(big), str(small), "--labels", "a,b", *TINY, "--json"]
    assert main([*argv, "--max-pixels", "10000"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in out["results"]] == [str(small)]
    [error] = out["errors"]
    assert error["image"] == str(big) and "20,000 pixels exceeds the limit of 10,000" in error["error"]
    assert "`--max-pixels N` of index add, embed, classify, similarity or serve" in error["error"]
    assert main([*argv, "--max-pixels", "20000"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in out["results"]] == [str(big), str(small)] and out["errors"] == []
    assert main(["classify", str(small), "--labels", "a,b", *TINY, "--max-pixels=0"]) == 2
    assert capsys.readouterr().err == ("error: --max-pixels must be a positive number of pixels (the bomb guard, "
                                       "e.g. 178956970), got 0\n")
