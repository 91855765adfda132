"""`clipforge similarity` with one text says why every image scores 1.0000, as `classify` does for one label.

A softmax over one text is always 1: the table of one column looked like a perfect match for every image.
"""

from __future__ import annotations

from PIL import Image

from clipforge.cli.main import main


def test_one_text_is_said_once_and_two_texts_say_nothing(tmp_path, capsys):
    photo = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 30, 40)).save(photo)
    assert main(["similarity", str(photo), "--text", "a snake", "--model", "clipforge-tiny"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1].split()[-1] == "1.0000"
    notices = [line for line in err.splitlines() if line.startswith("notice: one text")]
    assert notices == [
        "notice: one text ('a snake'): a softmax over one text is always 1.0000; give the texts it competes with, "
        'e.g. --text "a dog" "a cat" (the cosine is in --json)'
    ], err
    assert main(["similarity", str(photo), "--text", "a snake", "a dog", "--model", "clipforge-tiny"]) == 0
    assert "notice: one text" not in capsys.readouterr().err
    assert main(["similarity", str(photo), "--text", "a snake", "--model", "clipforge-tiny", "-q"]) == 0
    assert "notice: one text" not in capsys.readouterr().err
