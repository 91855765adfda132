"""`clipforge.load` over every checkpoint format, and the core subcommands end to end."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

import clipforge
from clipforge.cli.main import main
from clipforge.models import OPENAI_MODELS, create_model_from_config, get_config

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture()
def tiny_checkpoint(tmp_path: Path, tiny_vit) -> Path:
    """An OpenAI-layout .pt state dict; its head counts are width // 64, so shapes suffice."""
    path = tmp_path / "tiny.pt"
    torch.save(tiny_vit.state_dict(), path)
    return path


def test_available_models_lists_the_openai_nine_first() -> None:
    assert clipforge.available_models()[:9] == list(OPENAI_MODELS)


def test_load_from_path_returns_eval_model_and_matching_preprocess(tiny_checkpoint: Path, tiny_vit) -> None:
    model, preprocess = clipforge.load(str(tiny_checkpoint), device="cpu")
    assert not model.training
    assert preprocess.n_px == 32
    image = preprocess(Image.new("RGB", (50, 40), (200, 10, 10)))[None]
    tokens = clipforge.tokenize(["a red square"])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(image), tiny_vit.encode_image(image))
        torch.testing.assert_close(model.encode_text(tokens), tiny_vit.encode_text(tokens))


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "torchscript", "huggingface"])
def test_load_every_format_gives_identical_weights(fmt: str, tmp_path: Path, tiny_vit) -> None:
    from clipforge.weights import save_hf, save_safetensors

    if fmt == "pt":
        path = tmp_path / "w.pt"
        torch.save({"state_dict": {f"module.{k}": v.half() for k, v in tiny_vit.state_dict().items()}}, path)
    elif fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_safetensors(tiny_vit, path, config=get_config("test-vit-tiny"))
    elif fmt == "torchscript":
        path = tmp_path / "w.jit.pt"
        scripted = torch.jit.trace_module(
            tiny_vit, {"encode_image": torch.randn(1, 3, 32, 32)}, check_trace=False)
        torch.jit.save(scripted, path)
    else:
        path = tmp_path / "hf"
        save_hf(tiny_vit, path, config=get_config("test-vit-tiny"))
    model, _ = clipforge.load(str(path), device="cpu")
    expected = tiny_vit.state_dict()
    loaded = model.state_dict()
    assert list(loaded) == list(expected)
    tol = 1e-3 if fmt == "pt" else 0.0  # the .pt case was stored in fp16 and comes back fp32
    for key, value in expected.items():
        assert loaded[key].dtype == torch.float32 or not value.is_floating_point()
        torch.testing.assert_close(loaded[key], value, atol=tol, rtol=tol, msg=key)


def test_load_refuses_a_pickle_that_runs_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": Evil()}, path)
    with pytest.raises(Exception, match="evil.pt") as info:
        clipforge.load(str(path), device="cpu")
    assert "print" in str(info.value) or "builtins" in str(info.value)


def test_jit_flag_warns_and_returns_eager_model(tiny_checkpoint: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = clipforge.load(str(tiny_checkpoint), device="cpu", jit=True)
    assert any("TorchScript" in str(w.message) for w in caught)
    assert isinstance(model, torch.nn.Module)


def test_unknown_name_says_what_is_known() -> None:
    with pytest.raises(FileNotFoundError, match="neither a known name .*ViT-B/32"):
        clipforge.load("no-such-model-or-file", device="cpu")


def test_create_model_random_and_from_path(tiny_checkpoint: Path) -> None:
    random_model = clipforge.create_model("ViT-B-32")
    assert random_model.image_size == 224 and random_model.embed_dim == 512
    assert clipforge.create_model("test-vit-tiny", pretrained=tiny_checkpoint).embed_dim == 32
    with pytest.raises(ValueError, match="do not fit architecture"):
        clipforge.create_model("test-rn-tiny", pretrained=tiny_checkpoint)


def test_models_command_lists_parameter_counts(capsys) -> None:
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(OPENAI_MODELS) <= set(rows)
    # counts published for the OpenAI checkpoints
    assert rows["RN50"]["params"] == 102_007_137
    assert rows["ViT-B/32"]["params"] == 151_277_313
    assert rows["ViT-L/14"]["image_params"] == 303_966_208
    assert rows["ViT-L/14@336px"]["input_size"] == 336 and rows["RN50x64"]["embed_dim"] == 1024
    assert rows["ViT-B/32"]["cached"] is False


def test_help_lists_the_subcommands(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "models" in out and "similarity" in out


def _write_images(tmp_path: Path) -> list[Path]:
    paths = []
    for name, colour in (("red.png", (250, 0, 0)), ("blue.jpg", (0, 0, 250))):
        path = tmp_path / name
        Image.new("RGB", (64, 48), colour).save(path)
        paths.append(path)
    return paths


def test_similarity_prints_probabilities_and_writes_heatmap(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    images = _write_images(tmp_path)
    if (SHARED / "imagenet_sample" / "images").is_dir():
        images += sorted((SHARED / "imagenet_sample" / "images").glob("n0144*.JPEG"))[:2]
    out = tmp_path / "plots" / "heat.png"
    code = main(["similarity", *map(str, images), "--text", "a red thing", "a blue thing", "a fish",
                 "--model", str(tiny_checkpoint), "--plot", str(out)])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    rows = [line for line in printed if line.startswith(("red.png", "blue.jpg", "n0144"))]
    assert len(rows) == len(images)
    for row in rows:
        probabilities = [float(v) for v in row.split()[1:]]
        assert len(probabilities) == 3 and sum(probabilities) == pytest.approx(1.0, abs=2e-4)
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 200


def test_similarity_of_a_folder_skips_and_names_a_bad_file(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    """A folder with one unreadable file made `similarity` fail whole ("error: .../坏图.jpg: not an image"), while
    `classify` skips it: both skip it, name it once on stderr, and list it in the JSON; no row, no thumbnail."""
    folder = tmp_path / "photos"
    folder.mkdir()
    images = _write_images(folder)
    (folder / "坏图.jpg").write_bytes(b"not a picture at all")
    plot = tmp_path / "heat.png"
    assert main(["similarity", str(folder), "--text", "a red thing", "--text", "a fish", "--model",
                 str(tiny_checkpoint), "--json", "--plot", str(plot)]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert sorted(out["images"]) == sorted(map(str, images)) and len(out["probabilities"]) == 2
    assert [e["image"] for e in out["errors"]] == [str(folder / "坏图.jpg")]
    assert captured.err.count("坏图.jpg") == 1 and f"\nskipped {folder / '坏图.jpg'}: not an image" in "\n" + captured.err
    assert plot.is_file()
    assert main(["similarity", str(folder / "坏图.jpg"), "--text", "a fish", "--model", str(tiny_checkpoint)]) == 2
    assert "坏图.jpg" in capsys.readouterr().err  # nothing readable: an error naming it
    assert main(["classify", str(folder), "--labels", "red,fish", "--model", str(tiny_checkpoint), "--json"]) == 0
    assert capsys.readouterr().err.count("坏图.jpg") == 1  # `skipped P: why`, the path said once
    assert main(["classify", str(folder), "--labels", "red,fish", "-k", "1", "--model", str(tiny_checkpoint),
                 "--json"]) == 0  # -k: --top-k, as in search and tag
    assert [len(r["labels"]) for r in json.loads(capsys.readouterr().out)["results"]] == [1, 1]


def test_repeated_list_flags_accumulate(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    """`--text A --text B` compares both texts (argparse's default kept only the last --text, silently); the
    same for `classify`/`tag --labels` and `eval suite --models/--datasets`."""
    from clipforge.cli.main import build_parser

    images = _write_images(tmp_path)
    code = main(["similarity", *map(str, images), "--text", "a red thing", "--text", "a blue thing", "a fish",
                 "--model", str(tiny_checkpoint)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "a red thing" in line)
    assert "a blue thing" in header and "a fish" in header
    row = next(line for line in lines if line.startswith("red.png"))
    assert len(row.split()[1:]) == 3
    code = main(["classify", str(images[0]), "--labels", "red", "--labels", "blue,fish", "--model", str(tiny_checkpoint),
                 "--json"])
    assert code == 0
    assert sorted(json.loads(capsys.readouterr().out)["results"][0]["labels"]) == ["blue", "fish", "red"]
    args = build_parser().parse_args(["tag", "--labels", "cat", "--labels", "dog, car"])
    assert args.labels == ["cat", "dog, car"]
    args = build_parser().parse_args(["eval", "suite", "--models", "RN50", "--models", "ViT-B/32", "clipforge-tiny",
                                      "--datasets", "cifar10", "--datasets", "stl10"])
    assert args.models == ["RN50", "ViT-B/32", "clipforge-tiny"] and args.datasets == ["cifar10", "stl10"]


def test_similarity_with_texts_first_names_the_image_read_as_a_text(tmp_path: Path, tiny_checkpoint: Path,
                                                                    capsys) -> None:
    """`similarity --text A B photo.jpg`: the photo went into --text and argparse only said IMG was missing."""
    images = _write_images(tmp_path)
    code = main(["similarity", "--text", "a red thing", "a blue thing", str(images[0]), "--model", str(tiny_checkpoint)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(images[0]) in err[0] and "was read as a --text" in err[0] and "IMG... --text" in err[0]
    assert main(["similarity", "--text", "a red thing", "--model", str(tiny_checkpoint)]) == 2
    assert "no IMG given" in capsys.readouterr().err


def test_labels_split_by_spaces_get_a_hint(capsys) -> None:
    """`classify IMG --labels cat dog`: argparse's "unrecognized arguments: dog" now says labels are one comma list;
    other unrecognized arguments keep argparse's line alone."""
    for argv in (["classify", "x.jpg", "--labels", "cat", "dog"], ["tag", "--labels", "cat", "dog", "car"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "unrecognized arguments: dog" in err and '--labels "cat,dog"' in err
    with pytest.raises(SystemExit):
        main(["classify", "x.jpg", "--labels", "cat", "--bogus"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("unrecognized arguments: --bogus")


@pytest.mark.parametrize("argv, meant", [
    (["search", "a dog", "--topn", "3"], "--top-k"),  # (-k is --top-k itself)
    (["search", "a dog", "--topk", "3"], "--top-k"),
    (["search", "a dog", "--top_k=3"], "--top-k"),
    (["index", "add", "photos", "--wrkers", "2"], "--workers"),  # a subcommand's own flags
    (["similarity", "x.jpg", "--text", "a", "--plto"], "--plot"),
    (["search", "a dog", "--libary=lib"], "--library"),
    (["search", "a dog", "--colour"], None),  # nothing close: argparse's line alone
    (["search", "a dog", "-z"], None),
])
def test_a_mistyped_flag_names_the_flag_it_was_close_to(capsys, argv, meant) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unrecognized arguments: " in err
    if meant is None:
        assert "did you mean" not in err, err
    else:
        assert err.endswith(f"(did you mean {meant}?)"), err


def test_similarity_table_matches_a_direct_computation(tmp_path: Path, tiny_vit) -> None:
    from clipforge.image import build_preprocess
    from clipforge.similarity import compute_similarity

    images = _write_images(tmp_path)
    preprocess = build_preprocess(32)
    table = compute_similarity(tiny_vit, preprocess, images, ["red", "blue"])
    with torch.no_grad():
        im = tiny_vit.encode_image(torch.stack([preprocess(Image.open(p)) for p in images]))
        tx = tiny_vit.encode_text(clipforge.tokenize(["red", "blue"]))
    cosine = torch.nn.functional.normalize(im, dim=-1) @ torch.nn.functional.normalize(tx, dim=-1).T
    torch.testing.assert_close(table.cosine, cosine, atol=1e-6, rtol=0)
    torch.testing.assert_close(table.probabilities, (cosine * (1 / 0.07)).softmax(-1), atol=1e-6, rtol=0)


def test_random_config_models_are_not_loadable_by_name() -> None:
    model = create_model_from_config(get_config("test-rn-tiny"))
    assert model.image_size == 64


def test_a_mistyped_flag_shows_the_usage_of_the_command_typed(capsys) -> None:
    """`clipforge search --topk 3 cat` printed `usage: clipforge [-h] [--version] COMMAND ...`: the usage of the
    command typed (with its flags) is the one that helps."""
    for argv, usage in ((["search", "--topk", "3", "cat"], "usage: clipforge search "),
                        (["index", "add", "x", "--bogus"], "usage: clipforge index add ")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(usage) and "unrecognized arguments: " in err.splitlines()[-1]
