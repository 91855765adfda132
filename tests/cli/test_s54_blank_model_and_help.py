"""A blank `--model` and the `--help` texts a Chinese user reads (session 54).

- `--model ""` (an unset shell variable: `--model "$MODEL"`) ran the default model, with a notice telling the
  user to "pass --model to choose": now one line, exit status 2, in every command.
- `classify --help` said labels are "comma-separated" (the Chinese "，" and "、" separate them too);
  `eval zeroshot --help` gave the English sets as the only default (a Chinese model prompts in Chinese) and
  `~/.cache/clipforge` as the class-embedding cache (it is `class_embeddings` under `$CLIPFORGE_CACHE`).
"""

from __future__ import annotations

import pytest

from clipforge.cli.main import main

_BLANK = (
    "error: --model is empty: give a model name (clipforge-tiny, ViT-B/32, ...), ARCH:TAG, a checkpoint file "
    "or folder, or random:ARCH; leave --model out for the default\n"
)


@pytest.mark.parametrize(
    "command",
    [
        ["classify", "{photo}", "--labels", "cat,dog"],
        ["search", "a cat", "--library", "{tmp}/lib"],
        ["index", "add", "{tmp}", "--library", "{tmp}/lib"],
        ["eval", "zeroshot", "--dataset", "folder", "--root", "{tmp}"],
        ["serve", "--library", "{tmp}/lib"],
    ],
    ids=["classify", "search", "index-add", "eval", "serve"],
)
@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_model_is_one_line(command: list[str], blank: str, tmp_path, capsys) -> None:
    """Checked before anything runs (before, classify ran the default model on the photo and exited 0)."""
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    argv = [arg.format(photo=tmp_path / "photo.png", tmp=tmp_path) for arg in command]
    assert main([*argv, "--model", blank]) == 2
    captured = capsys.readouterr()
    assert captured.err == _BLANK and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]  # no library, no report written


def _help(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_classify_help_names_the_chinese_separators(capsys, monkeypatch) -> None:
    text = _help(["classify"], capsys, monkeypatch)
    assert (
        'class names separated by "," or the Chinese "，" and "、", e.g. "cat,dog,plane" or "猫，狗、飞机"'
        in text
    )
    assert '"一张{}的照片" for Chinese labels' in text


def test_eval_zeroshot_help_tells_the_chinese_default_and_the_real_cache(capsys, monkeypatch) -> None:
    text = _help(["eval", "zeroshot"], capsys, monkeypatch)
    assert (
        "for a model whose first language is Chinese (`clipforge models`: languages) its Chinese twin where "
        "one exists, zh-imagenet, zh-cifar10, zh-cifar100 or zh-simple, with Chinese class names"
    ) in text
    assert (
        "class-embedding cache (default: class_embeddings under $CLIPFORGE_CACHE, else under ~/.cache/clipforge)"
        in text
    )
    assert "one per line, in the dataset's class order" in text
