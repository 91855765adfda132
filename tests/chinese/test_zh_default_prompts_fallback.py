"""A Chinese-first model's default prompts on a dataset with no packaged Chinese class names.

`eval zeroshot --model clipforge-tiny-zh --dataset cub` (and every suite cell of such a dataset) was refused
by default: "template set 'zh-simple' is Chinese but no Chinese class names are packaged for dataset 'cub' ...;
pass --classnames FILE" (a flag the suite does not have). A model that reads English too is prompted in
English there; a class-folder dataset whose folders are Chinese names is prompted with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.zeroshot.languages import classnames_for, default_template_set
from tests.chinese.chinese_files import write_photos


def test_a_bilingual_model_falls_back_to_english_where_no_chinese_names_are_packaged() -> None:
    assert default_template_set("cub", ("zh", "en"), "cub") == "cub"
    assert default_template_set("folder", ("zh", "en"), "simple") == "simple"
    assert default_template_set("cifar10", ("zh", "en"), "cifar10") == "zh-cifar10"  # names packaged: Chinese
    assert default_template_set("cub", ("zh",), "cub") == "zh-simple"  # a Chinese-only model has no English


def test_a_datasets_own_chinese_names_are_its_chinese_names() -> None:
    assert classnames_for("folder", "zh-simple", 2, own=["猫", "狗"]) is None  # use them as they are
    with pytest.raises(
        ValueError,
        match=r"pass --classnames FILE \(Chinese names, one a line, in the dataset's "
        r"class order\) or an English --templates set",
    ):
        classnames_for("folder", "zh-simple", 2, own=["cat", "dog"])


def _eval_folder(root: Path, out: Path, capsys) -> dict:
    args = ["eval", "zeroshot", "--model", "clipforge-tiny-zh", "--dataset", "folder", "--root", str(root)]
    assert main([*args, "--out", str(out), "--workers", "0", "--json", "-q"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_zeroshot_with_the_bilingual_model_on_english_folders_runs(tmp_path: Path, capsys) -> None:
    for name in ("bird", "cat"):
        write_photos(tmp_path / "data" / name, ["0.png"])
    report = _eval_folder(tmp_path / "data", tmp_path / "out", capsys)
    assert report["templates"]["spec"] == "simple" and report["classnames"] == ["bird", "cat"]


def test_a_chinese_only_model_reads_chinese_folder_names(tmp_path: Path, capsys, monkeypatch) -> None:
    import clipforge.evaluate.zeroshot_eval as zeroshot_eval

    monkeypatch.setattr(zeroshot_eval, "model_languages", lambda _model: ("zh",))
    for name in ("猫", "狗"):
        write_photos(tmp_path / "数据" / name, ["0.png"])
    report = _eval_folder(tmp_path / "数据", tmp_path / "out", capsys)
    assert report["templates"]["spec"] == "zh-simple" and report["classnames"] == ["狗", "猫"]
