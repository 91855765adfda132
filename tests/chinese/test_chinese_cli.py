"""Chinese where a user types it on the command line: search, classify, models, plots, notices."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import pytest

from clipforge.cli.main import main

CIFAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10_jpeg"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Five CIFAR-10 test pictures of each class, named by their class."""
    archive = CIFAR / "test_jpeg.zip"
    if not archive.is_file():
        pytest.skip(f"{archive} not found (needs ../shared/data)")
    folder = tmp_path_factory.mktemp("photos")
    with zipfile.ZipFile(archive) as z:
        for name in CLASSES:
            for i in range(5):
                (folder / f"{name}_{i}.jpg").write_bytes(z.read(f"test/{name}/{i:04d}.jpg"))
    return folder


@pytest.mark.data
def test_search_in_chinese_finds_cats_first(photos: Path, tmp_path: Path, capsys) -> None:
    library = str(tmp_path / "lib")
    assert main(["index", "add", str(photos), "--library", library, "--model", "clipforge-tiny-zh"]) == 0
    capsys.readouterr()
    assert main(["search", "一只猫", "--library", library, "--top-k", "5", "--json"]) == 0
    out = capsys.readouterr()
    results = json.loads(out.out)
    assert results["query"] == "一只猫"
    names = [Path(r["path"]).name for r in results["results"]]
    assert names[0].startswith("cat_") and sum(n.startswith("cat_") for n in names) >= 3, names
    assert "notice" not in out.err  # a Chinese query to a model trained in Chinese
    assert main(["search", "海边的日落", "--library", library, "--top-k", "3"]) == 0  # any Chinese query runs


@pytest.mark.data
def test_classify_with_chinese_labels(photos: Path, capsys) -> None:
    images = [str(photos / "cat_0.jpg"), str(photos / "dog_1.jpg")]
    assert main(["classify", *images, "--labels", "猫,狗", "--model", "clipforge-tiny-zh", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["labels"][0] for r in out["results"]] == ["猫", "狗"]
    assert out["templates"] == ["一张{}的照片"] or "一张{}的照片" in json.dumps(out, ensure_ascii=False)


def test_chinese_query_to_an_english_model_gets_a_notice(tmp_path: Path, capsys) -> None:
    from PIL import Image

    image = tmp_path / "红色.png"
    Image.new("RGB", (32, 32), (200, 20, 20)).save(image)
    assert main(["classify", str(image), "--labels", "猫,狗", "--model", "clipforge-tiny"]) == 0
    captured = capsys.readouterr()
    assert "notice: the labels '猫, 狗' are written in zh but model clipforge-tiny was trained for en only" \
        in captured.err
    assert "红色.png" in captured.out and "猫" in captured.out  # UTF-8 file names and labels printed as they are
    assert main(["similarity", str(image), "--text", "一只猫", "--model", "clipforge-tiny"]) == 0
    assert "notice: the query '一只猫' is written in zh" in capsys.readouterr().err  # similarity says it too
    for command in (["classify", str(image), "--labels", "猫,狗"], ["similarity", str(image), "--text", "一只猫"]):
        assert main([*command, "--model", "clipforge-tiny", "--quiet"]) == 0
        assert "notice" not in capsys.readouterr().err  # --quiet: no notices, as the README says
    # a mistyped model is one error, not first a notice about a model that does not exist
    assert main(["classify", str(image), "--labels", "猫,狗", "--model", "clipfroge-tiny"]) == 2
    err = capsys.readouterr().err
    assert "notice" not in err and err.count("\n") == 1 and "clipfroge-tiny" in err


def test_models_lists_languages(capsys) -> None:
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["clipforge-tiny-zh"]["languages"] == ["zh", "en"]
    assert rows["clipforge-tiny"]["languages"] == ["en"]
    if "cn-ViT-B-16" in rows:  # transformers installed
        assert rows["cn-ViT-B-16"]["languages"] == ["zh"] and round(rows["cn-ViT-B-16"]["params"] / 1e6) == 188


def test_plots_draw_chinese_labels_or_say_they_cannot(tmp_path: Path, monkeypatch) -> None:
    from clipforge.evaluate.plots import plot_per_class_accuracy
    from clipforge.zeroshot import fonts

    names = ["飞机", "汽车", "猫"]
    style = fonts.label_style(names)
    if style.notice is None:  # a CJK font is installed (CI installs fonts-wqy-zenhei): drawn as they are
        assert style.labels == names and len(style.rc["font.family"]) > 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # matplotlib's "Glyph missing" would be a UserWarning
            plot_per_class_accuracy([0.9, 0.8, 0.7], names, tmp_path / "ok.png")
    fonts._fonts.cache_clear()
    monkeypatch.setattr(fonts, "_CJK_FAMILY_HINTS", ())  # a machine without any CJK font
    monkeypatch.setattr(fonts, "_CJK_FILE_HINTS", ())
    try:
        style = fonts.label_style(["cat", *names])
        assert style.labels == ["cat", "#1", "#2", "#3"]
        assert "3 label(s) cannot be rendered" in style.notice and "fonts-wqy-zenhei" in style.notice
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = plot_per_class_accuracy([0.9, 0.8, 0.7], names, tmp_path / "fallback.png")
        messages = [str(w.message) for w in caught]
        assert any("cannot be rendered" in m for m in messages)
        assert not any("missing from font" in m for m in messages), messages  # no boxes drawn
        assert path.stat().st_size > 0
    finally:
        fonts._fonts.cache_clear()


@pytest.mark.data
def test_similarity_plot_draws_chinese_texts_without_font_noise(photos: Path, tmp_path: Path, capsys, caplog) -> None:
    """`clipforge similarity --plot` with a Chinese text: drawn with the CJK font (no "Glyph missing" boxes), and
    matplotlib's "findfont: Failed to find font weight" line for that one-weight font does not reach the user."""
    import logging

    from clipforge.zeroshot import fonts

    if fonts.label_style(["一只猫"]).notice is not None:
        pytest.skip("no CJK font installed here (CI installs fonts-wqy-zenhei)")
    out = tmp_path / "similarity.png"
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="matplotlib.font_manager"):
        warnings.simplefilter("error")  # matplotlib's "Glyph ... missing from font(s)" is a UserWarning
        code = main(["similarity", str(photos / "cat_0.jpg"), str(photos / "dog_0.jpg"),
                     "--text", "一只猫", "a dog", "--plot", str(out)])
    assert code == 0 and out.stat().st_size > 0
    assert not [r.getMessage() for r in caplog.records if "findfont" in r.getMessage()]
    assert "findfont" not in capsys.readouterr().err


def test_texts_the_context_cuts_alike_get_a_notice(tmp_path: Path, capsys) -> None:
    """clipforge-tiny-zh's 16 BPE tokens hold about four Chinese characters: two long labels (or texts) that
    differ only at their end scored exactly the same with no word of why. Now the command names them."""
    from PIL import Image

    image = tmp_path / "p.png"
    Image.new("RGB", (32, 32), (200, 20, 20)).save(image)
    dog, cat = "一只在草地上奔跑的金毛寻回犬", "一只在草地上奔跑的金毛寻回猫"
    assert main(["similarity", str(image), "--text", dog, "--text", cat, "--text", "猫", "--model",
                 "clipforge-tiny-zh", "--json"]) == 0
    captured = capsys.readouterr()
    row = json.loads(captured.out)["probabilities"][0]
    assert row[0] == row[1] != row[2]  # what the notice explains
    assert "cannot tell these texts apart: its 16-token context cuts them to the same tokens" in captured.err
    assert f"'{dog}' = '{cat}'" in captured.err and "'猫'" not in captured.err
    assert main(["classify", str(image), "--labels", f"{dog},{cat},猫", "--model", "clipforge-tiny-zh", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["indistinct"] == [[dog, cat]]
    assert "cannot tell these labels apart" in captured.err
    assert main(["classify", str(image), "--labels", "猫,狗", "--model", "clipforge-tiny-zh", "--json"]) == 0
    captured = capsys.readouterr()
    assert "indistinct" not in json.loads(captured.out) and "cannot tell" not in captured.err


def test_tag_says_what_classify_says(tmp_path: Path, capsys) -> None:
    """`tag` with Chinese labels on an English model, or with one label, said nothing (classify and search give a
    notice for each): it tagged every photo with meaningless scores, or every photo 100% with the one label."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate(((200, 20, 20), (20, 200, 20))):
        Image.new("RGB", (32, 32), colour).save(photos / f"{i}.png")
    lib = str(tmp_path / "lib")
    assert main(["index", "add", str(photos), "--library", lib, "--model", "clipforge-tiny", "-q"]) == 0
    capsys.readouterr()
    assert main(["tag", "--labels", "猫,狗", "--library", lib]) == 0
    assert "notice: the labels '猫, 狗' are written in zh but model clipforge-tiny was trained for en only" \
        in capsys.readouterr().err
    assert main(["tag", "--labels", "cat", "--library", lib]) == 0
    assert "notice: one label ('cat'): a softmax over one label is always 100%, so every photo gets it" \
        in capsys.readouterr().err
    assert main(["tag", "--labels", "cat", "--library", lib, "--quiet"]) == 0
    assert "notice" not in capsys.readouterr().err
