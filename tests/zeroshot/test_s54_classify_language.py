"""`clipforge classify` with a Chinese template on an English-only model says so, as `eval zeroshot` does
(session 54): `--labels cat,dog --templates 一张{}的照片 --model clipforge-tiny` printed 50.02% / 49.98%
without a word, while the same template in `eval zeroshot` got the notice."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipforge.cli.main import main


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> str:
    from PIL import Image

    path = tmp_path_factory.mktemp("s54") / "猫.png"
    Image.new("RGB", (32, 32), (200, 120, 40)).save(path)
    return str(path)


def test_a_chinese_template_on_an_english_model_gets_the_notice(
    photo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "classify",
        photo,
        "--labels",
        "cat,dog",
        "--templates",
        "一张{}的照片",
        "--model",
        "clipforge-tiny",
    ]
    assert main([*args, "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert (
        "notice: the templates '一张{}的照片' are written in zh but model clipforge-tiny was trained for en only; "
        "its scores for them are not meaningful (use a zh model, e.g. clipforge-tiny-zh offline or cn-ViT-B-16)"
    ) in err


def test_english_templates_and_a_chinese_model_stay_quiet(
    photo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["classify", photo, "--labels", "cat,dog", "--model", "clipforge-tiny", "--device", "cpu"]) == 0
    )
    assert "notice" not in capsys.readouterr().err
    args = [
        "classify",
        photo,
        "--labels",
        "猫,狗",
        "--templates",
        "一张{}的照片",
        "--model",
        "clipforge-tiny-zh",
    ]
    assert main([*args, "--device", "cpu"]) == 0
    assert "notice" not in capsys.readouterr().err


def test_the_labels_notice_comes_first(photo: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Chinese labels and a Chinese template: one notice, the labels' (the line tests/chinese already pins)."""
    args = [
        "classify",
        photo,
        "--labels",
        "猫,狗",
        "--templates",
        "一张{}的照片",
        "--model",
        "clipforge-tiny",
    ]
    assert main([*args, "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.count("notice: ") == 1 and "notice: the labels '猫, 狗' are written in zh" in err


def test_classify_files_returns_the_notice(photo: str) -> None:
    from clipforge.zeroshot.files import classify_files

    out = classify_files(
        [photo], ["cat", "dog"], "clipforge-tiny", templates="一张{}的照片", device="cpu", progress=False
    )
    assert out["notice"].startswith("notice: the templates '一张{}的照片' are written in zh")
    assert Path(out["results"][0]["image"]).name == "猫.png"
