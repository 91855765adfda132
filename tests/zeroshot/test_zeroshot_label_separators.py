"""Labels typed with a Chinese input method, and label/template files as Chinese users save them.

`clipforge classify IMG --labels "猫，狗，飞机"` printed one label, "猫，狗，飞机", at 100% (the full-width
comma "，" and the enumeration comma "、" were not separators); `clipforge tag` stored "猫，狗，鸟" as one tag.
Three parsers disagreed about blanks and duplicates ("猫,,狗" was an error in classify only; "猫,猫,狗" split
one class's probability in two). A GBK labels file gave a bare codec message without the file's name, a
BOM became part of the first label, a folder "does not exist", and broken JSON had no file name.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.text.labels import LabelsError, split_labels
from clipforge.zeroshot.files import read_labels_file
from clipforge.zeroshot.prompts import get_templates

MODEL = ["--model", "test-vit-tiny", "--device", "cpu"]


@pytest.fixture()
def image(tmp_path) -> str:
    path = tmp_path / "red.png"
    Image.new("RGB", (48, 40), (220, 20, 20)).save(path)
    return str(path)


def _classify(capsys, *args: str) -> tuple[int, dict | None, str]:
    """(exit status, the JSON report or None, stderr) of `clipforge classify ... --json`."""
    code = main(["classify", *args, *MODEL, "--top-k", "10", "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


@pytest.mark.parametrize("text", ["猫，狗，飞机", "猫、狗、飞机", "猫, 狗，飞机、", " 猫 ，，狗、、飞机 , 猫"])
def test_split_labels_knows_the_chinese_commas(text):
    assert split_labels(text) == ["猫", "狗", "飞机"]


def test_split_labels_keeps_list_items_whole_and_refuses_no_label():
    assert split_labels(["a, b", "c", " c ", ""]) == ["a, b", "c"]  # a list item may hold a comma
    assert split_labels(" ，、, ", "tags", required=False) == []
    with pytest.raises(LabelsError, match=r"^--labels ' ，、 ': no label in it; expected comma-separated"):
        split_labels(" ，、 ", "--labels")
    with pytest.raises(LabelsError, match=r"^labels: no label given"):
        split_labels([" ", ""])


def test_classify_splits_chinese_commas_drops_duplicates_and_ignores_empty_items(image, capsys):
    code, out, _ = _classify(capsys, image, "--labels", "猫，狗、飞机")
    assert code == 0 and sorted(out["results"][0]["labels"]) == ["狗", "猫", "飞机"]
    assert sum(out["results"][0]["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    code, out, _ = _classify(capsys, image, "--labels", "猫,猫,,狗")  # was: an error for ",,", and 猫 twice
    assert code == 0 and sorted(out["results"][0]["labels"]) == ["狗", "猫"]
    code, out, _ = _classify(capsys, image, "--labels", "猫，狗", "--labels", "鸟")  # repeated flags join
    assert code == 0 and sorted(out["results"][0]["labels"]) == ["狗", "猫", "鸟"]


def test_classify_without_any_label_names_the_flag(image, capsys):
    code, _, err = _classify(capsys, image, "--labels", " ，、 ")
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: --labels ' ，、 ': no label in it")


def test_tag_splits_chinese_commas(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate([(220, 20, 20), (30, 60, 230), (20, 200, 40)]):
        Image.new("RGB", (40, 32), colour).save(photos / f"p{i}.png")
    lib = str(tmp_path / "lib")
    assert main(["index", "add", str(photos), "--library", lib, *MODEL[:2], "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    assert main(["tag", "--labels", "猫，狗，鸟", "--templates", "simple", "--library", lib, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["labels"] == ["猫", "狗", "鸟"] and sum(report["top1_counts"].values()) == 3
    assert main(["tag", "--list", "--library", lib, "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["tags"]) == {"猫", "狗", "鸟"}


def test_labels_file_with_a_bom_or_gbk_or_a_folder_or_broken_json(tmp_path, image, capsys):
    bom = tmp_path / "bom.txt"
    bom.write_bytes("猫\n狗\n".encode("utf-8-sig"))
    assert read_labels_file(bom) == ["猫", "狗"]  # was '\ufeff猫'
    (tmp_path / "bom.json").write_bytes('["猫", "狗"]'.encode("utf-8-sig"))
    assert read_labels_file(tmp_path / "bom.json") == ["猫", "狗"]
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("猫\n狗\n".encode("gbk"))  # 猫 is c3 a8 in GBK, valid UTF-8 by chance
    (tmp_path / "photos").mkdir()
    (tmp_path / "bad.json").write_text('["猫", "狗",]', encoding="utf-8")
    expected = {
        str(gbk): f"error: labels file {gbk} is not UTF-8 text (line 2 has byte 0xb9) but looks like GBK/GB18030",
        str(tmp_path / "photos"): f"error: labels file {tmp_path / 'photos'} is a folder, expected a file of labels",
        str(tmp_path / "bad.json"): f"error: {tmp_path / 'bad.json'}: not valid JSON at line 1 column 11",
    }
    for path, message in expected.items():
        code, _, err = _classify(capsys, image, "--labels-file", path)
        assert code == 2 and err.strip().splitlines()[-1].startswith(message), err


def test_templates_file_with_a_bom_or_gbk_or_a_folder_or_broken_json(tmp_path):
    (tmp_path / "bom.txt").write_bytes("一张{}的照片。\n".encode("utf-8-sig"))
    assert get_templates(str(tmp_path / "bom.txt")) == ["一张{}的照片。"]
    (tmp_path / "gbk.txt").write_bytes("狗的照片：{}\n".encode("gbk"))
    with pytest.raises(ValueError, match=r"template file .*gbk.txt is not UTF-8 text \(line 1 has byte 0xb9"):
        get_templates(str(tmp_path / "gbk.txt"))
    (tmp_path / "t.json").mkdir()
    with pytest.raises(ValueError, match=r"template file .*t.json is a folder, expected a file of templates"):
        get_templates(str(tmp_path / "t.json"))
    (tmp_path / "bad.json").write_text('[\n  "a {}",\n  oops\n]', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.json: not valid JSON at line 3 column 3"):
        get_templates(str(tmp_path / "bad.json"))
    with pytest.raises(FileNotFoundError, match="template file .*missing.txt does not exist"):
        get_templates(str(tmp_path / "missing.txt"))
