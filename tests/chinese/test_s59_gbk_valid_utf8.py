"""A GBK labels file whose bytes are valid UTF-8 as well (audit 59, the Chinese student's finding 4): "猫 鹿 牛" in GBK
is UTF-8 for "è ¹ ţ", and was classified as those labels with exit 0 and no word. It is read as UTF-8 (never
guessed), with a notice showing both readings; accented UTF-8 text that does not read as Chinese says nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipforge.cli.main import main
from tests.chinese.chinese_files import write_photos


def test_a_gbk_file_that_is_valid_utf8_gets_a_notice_with_both_readings(tmp_path: Path, capsys) -> None:
    image = write_photos(tmp_path, ["p.png"])[0]
    labels = tmp_path / "labels.txt"
    labels.write_bytes("猫\r\n鹿\r\n牛\r\n".encode("gbk"))
    assert main(["classify", str(image), "--labels-file", str(labels), "--model", "clipforge-tiny-zh"]) == 0
    out, err = capsys.readouterr()
    assert (f"notice: labels file {labels} reads as UTF-8 'è ¹ ţ', but as GBK it reads '猫 鹿 牛': if the first is "
            "not what you wrote, save the file as UTF-8") in err, err
    assert "ţ" in out  # read as what the bytes say in UTF-8: nothing is guessed


def test_accented_utf8_labels_say_nothing(tmp_path: Path, capsys) -> None:
    image = write_photos(tmp_path, ["p.png"])[0]
    labels = tmp_path / "labels.txt"
    labels.write_text("crème brûlée\ncafé au lait\nStraße\n", encoding="utf-8")
    assert main(["classify", str(image), "--labels-file", str(labels), "--model", "clipforge-tiny"]) == 0
    assert "GBK" not in capsys.readouterr().err


@pytest.mark.parametrize("labels", ["кошка\nсобака\nптица\n", "γάτα\nσκύλος\n", "ねこ\nいぬ\n", "🐱\n🐶\n",
                                    "قطة\nكلب\n", "חתול\nכלב\n"])
def test_utf8_files_of_other_scripts_are_not_called_gbk(tmp_path: Path, labels: str) -> None:
    """Review: any two- or three-byte UTF-8 sequence is a valid GBK pair, so Russian, Greek, Japanese, Arabic, Hebrew
    and emoji files were told they read as Chinese in GBK."""
    import warnings

    from clipforge.text.labels import read_text_file

    path = tmp_path / "labels.txt"
    path.write_text(labels, encoding="utf-8")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert read_text_file(path, "labels file", "a file of labels") == labels
    assert [str(w.message) for w in seen] == []
