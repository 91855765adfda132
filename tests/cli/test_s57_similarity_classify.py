"""`similarity --plot` draws a not-UTF-8 file name as its table prints it (it was "#3" with advice to install a CJK
font, which cannot draw an undecodable byte); `classify` and `similarity` give the same exit status, 2, when no
image can be read (classify said 1) (audit 57, findings 8 and 10c)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

import clipforge.zeroshot.fonts as fonts
from clipforge.cli.main import main

TINY = ["--model", "test-vit-tiny", "--device", "cpu", "-q"]


def _photo(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path, format="JPEG")
    return path


def test_plot_labels_a_not_utf8_name_as_the_table_prints_it(tmp_path, monkeypatch, capsys) -> None:
    good = _photo(tmp_path / "good.jpg")
    raw = os.fsencode(tmp_path) + b"/bad_\xff\xfe_name.jpg"
    shutil.copyfile(_photo(tmp_path / "tmp.jpg", seed=1), os.fsdecode(raw))
    seen: list[list[str]] = []
    real = fonts.label_style

    def recording(labels):
        style = real(labels)
        seen.append(list(style.labels))
        return style

    monkeypatch.setattr(fonts, "label_style", recording)
    plot = tmp_path / "sim.png"
    assert main(["similarity", str(good), os.fsdecode(raw), "--text", "a cat", "--text", "a dog", "--plot",
                 str(plot), "--model", "test-vit-tiny", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "cannot be rendered" not in captured.err and "CJK" not in captured.err
    assert seen == [["a cat", "a dog", "good.jpg", "bad_\\xff\\xfe_name.jpg"]]
    assert "bad_\\xff\\xfe_name.jpg" in captured.out  # the table's spelling, the same
    assert plot.stat().st_size > 0


def test_nothing_readable_is_status_2_in_classify_as_in_similarity(tmp_path, capsys) -> None:
    bad = tmp_path / "zero.jpg"
    bad.write_bytes(b"")
    assert main(["similarity", str(bad), "--text", "cat", "--text", "dog", *TINY]) == 2
    capsys.readouterr()
    assert main(["classify", str(bad), "--labels", "cat,dog", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-2:] == [
        f"skipped {bad}: file is empty (0 bytes)",
        "error: none of the 1 image(s) could be read (each named above): nothing to classify",
    ]
    # one readable image among them is no error
    good = _photo(tmp_path / "good.jpg")
    assert main(["classify", str(bad), str(good), "--labels", "cat,dog", *TINY]) == 0
