"""The CLI speaks one language: --version, descriptions, one-line errors, extras, pipes, shared flags."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import pytest
from PIL import Image

from clipforge import __version__
from clipforge.cli.main import build_parser, main, missing_extra_message


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subcommands(sub, (*prefix, name))


@pytest.fixture()
def image(tmp_path: Path) -> str:
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (220, 20, 20)).save(path)
    return str(path)


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"clipforge {__version__}\n"


def test_every_subcommand_has_a_description() -> None:
    commands = dict(_subcommands(build_parser()))
    assert {"classify", "embed", "eval", "similarity", "search", "serve"} <= {p[0] for p in commands}
    missing = sorted(" ".join(path) for path, sub in commands.items() if not sub.description)
    assert missing == [], f"subcommands without a --help description: {missing}"


def test_user_errors_are_one_line_with_a_non_zero_exit(image, capsys) -> None:
    cases = {
        ("classify", image, "--labels", "a,b", "--model", "no-such-model"): "error: model 'no-such-model' is neither",
        ("classify", image, "--labels", "a,b", "--model", "test-vit-tiny", "--device", "gpu0"):
            "error: unknown device 'gpu0'",
        ("classify", image, "--labels", "a,b", "--model", "test-vit-tiny", "--top-k", "0"):
            "error: --top-k must be at least 1, got 0",
        ("similarity", image, "--text", "a", "--model", "random:NoSuchArch"): "error: unknown architecture",
    }
    for argv, start in cases.items():
        assert main(list(argv)) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1 and "Traceback" not in err, (argv, err)


def test_a_template_that_formats_badly_is_a_user_error(image, capsys) -> None:
    code = main(["classify", image, "--labels", "a,b", "--model", "test-vit-tiny", "--device", "cpu",
                 "--templates", "{:>10}{}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize(("missing", "command", "extra"), [
    ("uvicorn", "serve", "app"), ("gradio", "serve", "app"), ("onnxruntime", "export", "onnx"),
    ("webdataset", "train", "train"), ("fastapi.responses", "serve", "app"),
])
def test_missing_extra_names_the_extra(missing, command, extra) -> None:
    exc = ModuleNotFoundError(f"No module named '{missing}'", name=missing)
    assert missing_extra_message(exc, command) == (
        f"clipforge {command} needs the '{extra}' extra (missing module {missing!r}): "
        f"pip install 'clipforge[{extra}]'")
    assert missing_extra_message(ModuleNotFoundError("x", name="numpyy"), command) is None
    assert missing_extra_message(ValueError("uvicorn"), command) is None


def test_onnx_exporter_error_names_the_onnx_extra() -> None:
    class OnnxExporterError(RuntimeError):  # what torch.onnx raises when onnx/onnxscript are absent
        pass

    assert missing_extra_message(OnnxExporterError("Module onnx is not installed!"), "export") == (
        "clipforge export needs the 'onnx' extra (missing module 'onnx'): pip install 'clipforge[onnx]'")


def test_serve_without_the_app_extra_says_which_extra(monkeypatch, tmp_path, capsys) -> None:
    for name in ("uvicorn", "gradio", "fastapi"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ModuleNotFoundError
    code = main(["serve", "--library", str(tmp_path / "lib"), "--create", "--port", "0", "--model", "test-vit-tiny"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: clipforge serve needs the 'app' extra (missing module ")
    assert err.rstrip().endswith("pip install 'clipforge[app]'")
    assert not (tmp_path / "lib").exists()  # nothing is created for a server that cannot start


def test_a_closed_stdout_ends_quietly_with_sigpipes_status(monkeypatch, capsys) -> None:
    """`clipforge models --json | head`: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `head` that already exited: every write raises EPIPE
    closed = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        code = main(["train", "--list-recipes"])  # any command's output goes through the same handler
    finally:
        monkeypatch.undo()
        closed.close()  # stdout was pointed at /dev/null by the handler, so this flush cannot fail
    assert code == 141
    assert capsys.readouterr().err == ""


def test_classify_has_one_templates_flag_and_states_its_default(image, capsys) -> None:
    sub = dict(_subcommands(build_parser()))
    help_text = sub[("classify",)].format_help()
    assert "--templates SET_OR_TEMPLATE" in help_text and "(default: simple)" in help_text
    assert "--template " not in help_text and "--template\n" not in help_text
    zs_help = sub[("eval", "zeroshot")].format_help()
    assert "--templates SET_OR_TEMPLATE" in zs_help and "--plot [DIR]" in zs_help
    # the old spelling still works, as a hidden alias
    assert main(["classify", image, "--labels", "a,b", "--template", "art of {}", "--model", "test-vit-tiny",
                 "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["templates"] == ["art of {}"]


def test_quiet_hides_the_librarys_default_model_notice(monkeypatch, image, tmp_path, capsys) -> None:
    """A new library without --model takes the shipped model with a notice the library layer gives; `index add -q`
    and `search -q` printed it all the same (the library printed it itself; now it is a `Notice` warning the CLI
    shows as one line, and --quiet hides). `search` had no --quiet at all."""
    monkeypatch.setattr("clipforge.weights.is_cached", lambda name, root=None: False)
    folder = Path(image).parent
    line = "notice: ViT-B/32 weights are not downloaded; using the small shipped model 'clipforge-tiny'"
    for argv in (["index", "add", str(folder), "--library", str(tmp_path / "a"), "--workers", "0"],
                 ["search", "red", "--in", str(folder), "--library", str(tmp_path / "b")]):
        assert main([*argv, "-q"]) == 0
        assert capsys.readouterr().err == "", argv
        assert main([*argv[:-2], "--library", str(tmp_path / f"{argv[0]}-loud")]) == 0
        assert capsys.readouterr().err.count(line) == 1, argv  # once, in the CLI's words


def test_json_stays_pure_when_the_default_model_notice_is_printed(monkeypatch, image, capsys) -> None:
    monkeypatch.setattr("clipforge.weights.is_cached", lambda name, root=None: False)
    assert main(["similarity", image, "--text", "red", "blue", "--json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["model"] == "clipforge-tiny" and len(out["probabilities"][0]) == 2
    assert captured.err.startswith("notice: ViT-B/32 weights are not downloaded; using the small shipped model")


def test_models_lists_the_shipped_model(capsys) -> None:
    assert main(["models", "--json"]) == 0
    assert "clipforge-tiny" in {row["name"] for row in json.loads(capsys.readouterr().out)}


def test_the_readme_query_arithmetic_example_works_as_written(tmp_path, monkeypatch, capsys) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    line = next(row for row in readme.splitlines() if row.startswith("clipforge search") and "arithmetic" in row)
    argv = shlex.split(line, comments=True)  # as a shell passes it: `~` inside the quotes stays a `~`
    assert argv[:2] == ["clipforge", "search"] and "~/Pictures/sofa.jpg" in argv[2]
    home = tmp_path / "home"
    (home / "Pictures").mkdir(parents=True)
    Image.new("RGB", (40, 40), (120, 80, 40)).save(home / "Pictures" / "sofa.jpg")
    monkeypatch.setenv("HOME", str(home))
    library = str(tmp_path / "lib")
    assert main(["index", "add", str(home / "Pictures"), "--library", library, "--model", "test-vit-tiny",
                 "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main([*argv[1:], "--library", library, "--json"]) == 0, capsys.readouterr().err
    results = json.loads(capsys.readouterr().out)["results"]
    assert [Path(hit["path"]).name for hit in results] == ["sofa.jpg"]


def test_help_does_not_load_torch_and_names_the_api_defaults() -> None:
    import subprocess

    from clipforge import api
    from clipforge.cli import common

    assert (common.PREFERRED_DEFAULT, common.OFFLINE_DEFAULT) == (api.PREFERRED_DEFAULT, api.OFFLINE_DEFAULT)
    code = "import sys; from clipforge.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": src})
    assert out.stdout.strip() == "False", "building the parser (clipforge --help) imported torch"


def test_embed_flags_reach_the_library_and_match_its_output(tmp_path, capsys) -> None:
    import numpy as np

    from clipforge.library.export import export_embeddings, read_export

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photos / "a.jpg", quality=90)
    Image.new("RGB", (48, 64), (30, 30, 200)).save(photos / "sub" / "b.jpg", quality=90)
    assert main(["embed", str(photos), "--out", str(tmp_path / "cli"), "--model", "test-vit-tiny", "--device", "cpu",
                 "--float32", "--exact-decode", "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2  # recursive by default
    export_embeddings([photos], tmp_path / "lib", "test-vit-tiny", dtype="float32", draft=False, workers=0,
                      device="cpu", progress=False)
    cli_vectors, cli_rows = read_export(tmp_path / "cli")
    lib_vectors, lib_rows = read_export(tmp_path / "lib")
    assert [r["image_path"] for r in cli_rows] == [r["image_path"] for r in lib_rows]
    np.testing.assert_array_equal(cli_vectors, lib_vectors)
    assert main(["embed", str(photos), "--out", str(tmp_path / "top"), "--model", "test-vit-tiny", "--device", "cpu",
                 "--no-recursive", "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1


def test_precision_is_checked_by_the_parser(image, capsys) -> None:
    sub = dict(_subcommands(build_parser()))
    for path in [("classify",), ("similarity",), ("embed",), ("eval", "zeroshot"), ("eval", "retrieval"),
                 ("eval", "linear-probe")]:
        help_text = sub[path].format_help()
        assert "--precision {fp32,bf16}" in help_text and "--exact-decode" in help_text, path
    with pytest.raises(SystemExit) as info:
        main(["classify", image, "--labels", "a,b", "--precision", "fp16"])
    assert info.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err


def test_library_warnings_are_one_line_in_the_cli_wording(image, monkeypatch, capsys) -> None:
    import warnings

    from clipforge import api

    real = api.load_model

    def warning_loader(spec, device=None, **kwargs):
        warnings.warn("x.pt does not record its activation; assumed quick_gelu", UserWarning, stacklevel=2)
        return real(spec, device, **kwargs)

    monkeypatch.setattr(api, "load_model", warning_loader)
    assert main(["similarity", image, "--text", "a", "b", "--model", "test-vit-tiny", "--device", "cpu",
                 "--json"]) == 0
    err = capsys.readouterr().err
    assert err == "warning: x.pt does not record its activation; assumed quick_gelu\n"


def _no_model_loads(monkeypatch) -> list:
    from clipforge import api

    calls: list = []
    monkeypatch.setattr(api, "load_model", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    return calls


@pytest.mark.parametrize("argv", [
    ["classify", "nope.jpg", "--labels", "a,b"], ["similarity", "nope.jpg", "--text", "a"],
    ["eval", "zeroshot", "--dataset", "cifar10", "--root", "/nonexistent/cifar"],
    ["train", "--model", "random:test-vit-tiny", "--root", "/nonexistent/data"],
])
def test_local_inputs_are_checked_before_any_model_loads(argv, monkeypatch, capsys) -> None:
    """A file that never existed is 'no such file' (not 'removed while reading'), one line, before a
    model is loaded or downloaded (issue 20.3, 20.8)."""
    calls = _no_model_loads(monkeypatch)
    assert main([*argv, "--model", "ViT-B/32"] if argv[0] != "train" else argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no such file or folder" in err, err
    assert "removed while reading" not in err and calls == []


def test_classify_walks_a_folder_like_index_add(tmp_path, capsys) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, place in enumerate(["a.png", "sub/b.jpg", ".hidden.png"]):
        Image.new("RGB", (40, 30), (40 * i, 20, 20)).save(folder / place)
    (folder / "notes.txt").write_text("not an image")
    assert main(["classify", str(folder), "--labels", "a,b", "--model", "test-vit-tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(Path(r["image"]).name for r in out["results"]) == ["a.png", "b.jpg"] and out["errors"] == []
    (tmp_path / "empty").mkdir()
    assert main(["classify", str(tmp_path / "empty"), "--labels", "a,b", "--model", "test-vit-tiny"]) == 2
    assert "holds no image files" in capsys.readouterr().err


def test_the_reader_says_file_not_found_without_guessing_why(tmp_path) -> None:
    from clipforge.data.reading import _read_error

    assert _read_error(FileNotFoundError(2, "No such file")) == "file not found"


def test_train_json_prints_only_json_on_stdout(tmp_path, capsys) -> None:
    root = tmp_path / "captions"
    for name in ("a_red_cat", "a_blue_dog"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), (200 * i, 30, 90)).save(root / name / f"{i}.png")
    assert main(["train", "--model", "random:test-vit-tiny", "--root", str(root), "--set", "data=folder", "--steps", "1",
                 "--batch-size", "4", "--out", str(tmp_path / "run"), "--set", "tensorboard=false",
                 "--set", "precision=fp32", "--set", "device=cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 1 and summary["checkpoint"].endswith(".safetensors")


def test_serve_help_states_the_real_device_default(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: cuda when available, else cpu)" in text and "(default: cpu)" not in text
