"""`clipforge classify`: labels, templates, JSON output, the bar-chart plot, bad files."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from clipforge.cli.main import main
from clipforge.zeroshot.files import classify_files, parse_labels, read_labels_file


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the suite shares 2 CPUs; spinning intra-op threads cost ~10x
    yield
    torch.set_num_threads(before)


def _images(tmp_path):
    paths = []
    for name, colour in (("red.png", (220, 20, 20)), ("sky.jpg", (30, 60, 230))):
        Image.new("RGB", (48, 40), colour).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    return paths, str(tmp_path / "broken.jpg")


def test_classify_json_plot_and_bad_file(tmp_path, capsys):
    (good, broken) = _images(tmp_path)
    plot = tmp_path / "out" / "pred.png"
    code = main(["classify", *good, broken, "--labels", "cat, dog,plane", "--model", "test-vit-tiny",
                 "--top-k", "2", "--json", "--plot", str(plot), "--device", "cpu"])
    assert code == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [r["image"] for r in out["results"]] == good
    for r in out["results"]:
        assert len(r["labels"]) == 2 and set(r["labels"]) <= {"cat", "dog", "plane"}
        assert r["probabilities"][0] >= r["probabilities"][1] and sum(r["probabilities"]) <= 1 + 1e-6
    assert out["templates"] == ["a photo of a {}."]
    assert len(out["errors"]) == 1 and out["errors"][0]["image"] == broken
    assert "broken.jpg" in captured.err
    with Image.open(plot) as im:  # a real PNG with one row per readable image
        assert im.format == "PNG" and im.height > 150


def test_plot_thumbnails_of_big_photos_decode_a_reduced_scale(tmp_path, capsys, largest_jpeg_decode):
    """`classify --plot` and `similarity --plot` draw 256- and 128-pixel thumbnails: a big JPEG is decoded at the
    DCT scale that keeps 1.5x that size (a 24-megapixel photo: 1/64 of its pixels), not whole."""
    Image.linear_gradient("L").convert("RGB").resize((2000, 1500)).save(tmp_path / "big.jpg", quality=90)
    assert main(["classify", str(tmp_path / "big.jpg"), "--labels", "cat,dog", "--model", "test-vit-tiny",
                 "--plot", str(tmp_path / "pred.png"), "--device", "cpu", "--quiet"]) == 0
    assert main(["similarity", str(tmp_path / "big.jpg"), "--text", "a cat", "--model", "test-vit-tiny",
                 "--plot", str(tmp_path / "sim.png"), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert (tmp_path / "pred.png").is_file() and (tmp_path / "sim.png").is_file()
    assert 0 < largest_jpeg_decode[0] <= 2000 * 1500 // 4, f"decoded {largest_jpeg_decode[0]:,} pixels"


def test_classify_matches_library_and_templates_option(tmp_path, capsys):
    (good, _) = _images(tmp_path)
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# my classes\ncat\ndog\n\nplane\n")
    assert main(["classify", good[0], "--labels-file", str(labels_file), "--templates", "imagenet7",
                 "--model", "test-vit-tiny", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["templates"]) == 7
    lib = classify_files([good[0]], ["cat", "dog", "plane"], "test-vit-tiny", templates="imagenet7",
                         device="cpu", progress=False)
    assert lib["results"][0]["labels"] == out["results"][0]["labels"]
    assert lib["results"][0]["probabilities"] == pytest.approx(out["results"][0]["probabilities"], abs=1e-6)


def test_classify_text_output_and_errors(tmp_path, capsys):
    (good, broken) = _images(tmp_path)
    assert main(["classify", good[1], "--labels", "a,b", "--template", "art of {}", "--model",
                 "test-vit-tiny", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(good[1]) and text.count("%") == 2
    assert main(["classify", broken, "--labels", "a,b", "--model", "test-vit-tiny", "--device", "cpu"]) == 2
    assert main(["classify", good[0], "--labels", " , ", "--model", "test-vit-tiny"]) == 2  # "a,,b" is a, b now
    assert "--labels ' , ': no label in it" in capsys.readouterr().err


def test_label_parsing(tmp_path):
    assert parse_labels(" cat ,dog") == ["cat", "dog"]
    with pytest.raises(ValueError, match="comma-separated"):
        parse_labels("  ")
    (tmp_path / "l.json").write_text('["x", "y z"]')
    assert read_labels_file(tmp_path / "l.json") == ["x", "y z"]
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(ValueError, match="empty.txt: no labels"):
        read_labels_file(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_labels_file(tmp_path / "nope.txt")


def test_default_model_falls_back_to_the_shipped_one_offline(monkeypatch):
    import clipforge
    import clipforge.weights
    from clipforge.api import default_model_spec as default_model

    if "clipforge-tiny" not in clipforge.available_models():
        pytest.skip("the shipped clipforge-tiny model is not in this checkout")
    monkeypatch.setattr(clipforge.weights, "is_cached", lambda name: False)
    name, notice = default_model()
    assert name == "clipforge-tiny" and "ViT-B/32 weights are not downloaded" in notice
    monkeypatch.setattr(clipforge.weights, "is_cached", lambda name: name == "ViT-B/32")
    assert default_model() == ("ViT-B/32", None)


@pytest.mark.parametrize("command", ["classify", "similarity"])
def test_plot_paths_are_settled_before_any_work(tmp_path, capsys, monkeypatch, command):
    """`--plot chart` (no extension) or `--plot some_folder` ran the whole command, then failed with
    matplotlib's "Format 'tmp' is not supported" and printed nothing: a name without an extension is a PNG,
    a folder gets the command's PNG inside it, and an extension matplotlib cannot write is refused before
    the model loads."""
    import clipforge.api

    good, _ = _images(tmp_path)
    args = [command, *good, *(["--labels", "cat,dog"] if command == "classify" else ["--text", "a cat"]),
            "--model", "test-vit-tiny", "--device", "cpu"]
    (tmp_path / "folder").mkdir()
    for given, written in (("chart", "chart.png"), ("folder", f"folder/{command}.png"), ("图表", "图表.png")):
        assert main([*args, "--plot", str(tmp_path / given)]) == 0
        assert (tmp_path / written).is_file() and f"plot written to {tmp_path / written}" in capsys.readouterr().out
    loads = []
    monkeypatch.setattr(clipforge.api, "load_model", lambda *a, **k: loads.append(a))
    assert main([*args, "--plot", str(tmp_path / "x.tmp")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--plot" in err and "x.tmp" in err and ".png" in err and not loads


def test_one_label_gets_a_notice(tmp_path, capsys):
    """`classify IMG --labels cat` answered 100.00% cat with no word that one label always scores 100%."""
    good, _ = _images(tmp_path)
    assert main(["classify", good[0], "--labels", "cat", "--model", "test-vit-tiny", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "100.00%  cat" in captured.out and "a softmax over one label is always 100%" in captured.err
    assert main(["classify", good[0], "--labels", "cat,dog", "--model", "test-vit-tiny", "--device", "cpu"]) == 0
    assert "one label" not in capsys.readouterr().err


def test_a_labels_file_that_repeats_a_label_scores_it_once(tmp_path, capsys):
    """A labels file naming `cat` twice printed `cat 31.51%` twice, the probability split between the copies
    (`--labels cat,dog,cat` kept one): each label once now, with a notice; `Cat` is another label."""
    good, _ = _images(tmp_path)
    labels = tmp_path / "dups.txt"
    labels.write_text("cat\ndog\ncat\nCat\n")
    base = ["classify", good[0], "--model", "test-vit-tiny", "--device", "cpu", "--json"]
    assert main([*base, "--labels-file", str(labels)]) == 0
    captured = capsys.readouterr()
    from_file = json.loads(captured.out)["results"][0]
    assert sorted(from_file["labels"]) == ["Cat", "cat", "dog"]
    assert captured.err.strip() == f"notice: {labels} repeats 1 label(s) (cat); each is scored once"
    assert main([*base, "--labels", "cat,dog,Cat"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0] == from_file
