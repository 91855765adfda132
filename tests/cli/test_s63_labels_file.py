"""`classify --labels-file`: repeats are one label by their Unicode NFKC form, as `--labels` drops them (review 63:
the file kept "café" precomposed and as e + U+0301, splitting one class's probability), and a one-line file's
labels are split by every wide separator `--labels` takes, named in its notice."""

from __future__ import annotations

import json

from PIL import Image

from clipforge.cli.main import main


def test_a_labels_file_drops_repeats_by_their_unicode_form(tmp_path, capsys) -> None:
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "a.png")
    (tmp_path / "labels.txt").write_text("café\ncafe\u0301\nｃａｔ\ncat\ndog\n", encoding="utf-8")
    argv = ["classify", str(tmp_path / "a.png"), "--labels-file", str(tmp_path / "labels.txt"), "--model",
            "clipforge-tiny", "--json"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert sorted(json.loads(out)["results"][0]["labels"]) == ["café", "dog", "ｃａｔ"]  # the first spelling each
    assert f"notice: {tmp_path / 'labels.txt'} repeats 2 label(s) (café, ｃａｔ); each is scored once\n" in err


def test_a_one_line_labels_file_names_every_wide_separator(tmp_path, capsys) -> None:
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "a.png")
    (tmp_path / "labels.txt").write_text("猫，狗、鸟､鱼\n", encoding="utf-8")
    argv = ["classify", str(tmp_path / "a.png"), "--labels-file", str(tmp_path / "labels.txt"), "--model",
            "clipforge-tiny-zh", "--json"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert sorted(json.loads(out)["results"][0]["labels"]) == sorted(["猫", "狗", "鸟", "鱼"])
    assert (f"notice: {tmp_path / 'labels.txt'} holds one line; its labels separated by '，', '、', '､' or '،' are "
            "read as 4 labels\n") in err
