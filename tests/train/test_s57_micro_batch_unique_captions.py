"""`micro_batch` with `unique_captions` (the CIFAR recipes' setting) crashed after the data was built:
"ValueError: zip() argument 2 is shorter than argument 1" from GradCache's chunking, which pairs images and
captions one to one while the distinct captions are fewer. Refused in one line naming both settings, before the
model trains."""

from __future__ import annotations

from pathlib import Path

from clipforge.cli.main import main

CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10_jpeg" / "train_jpeg.zip"


def test_micro_batch_with_unique_captions_is_one_line(tmp_path, capsys) -> None:
    code = main(["train", "--recipe", "cifar10-from-scratch", "--root", str(CIFAR), "--out", str(tmp_path / "run"),
                 "--set", "micro_batch=16", "--set", "max_samples=64", "--set", "epochs=1",
                 "--set", "batch_size=32"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    assert "unique_captions" in err and "micro_batch" in err and "do not go together yet" in err, err
