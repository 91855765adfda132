"""One loader: `clipforge.api.load_model` takes every model spec, and every command goes through it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import clipforge
from clipforge import api
from clipforge.cli.main import build_parser, main
from clipforge.models import get_config
from clipforge.weights import model_fingerprint, save_hf, save_safetensors


@pytest.fixture()
def tiny_pt(tmp_path: Path, tiny_vit) -> Path:
    path = tmp_path / "tiny.pt"
    torch.save(tiny_vit.state_dict(), path)
    return path


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "hf"])
def test_checkpoint_files_of_every_format_load_with_their_identity(fmt, tmp_path, tiny_vit) -> None:
    path = {"pt": tmp_path / "w.pt", "safetensors": tmp_path / "w.safetensors", "hf": tmp_path / "hf"}[fmt]
    if fmt == "pt":
        torch.save(tiny_vit.state_dict(), path)
    elif fmt == "safetensors":
        save_safetensors(tiny_vit, path, config=get_config("test-vit-tiny"))
    else:
        save_hf(tiny_vit, path, config=get_config("test-vit-tiny"))
    loaded = api.load_model(path, "cpu")
    assert (loaded.name, loaded.weights) == (path.name, str(path.resolve()))
    assert _same_weights(loaded.model, tiny_vit) and not loaded.model.training
    assert loaded.preprocess.n_px == 32 and loaded.device == torch.device("cpu")
    assert loaded.fingerprint == model_fingerprint(tiny_vit)


def test_random_specs_are_seeded_labelled_and_leave_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a = api.load_model("test-vit-tiny", "cpu")
    b = api.load_model("random:test-vit-tiny", "cpu", seed=0)
    c = api.load_model("random:test-vit-tiny", "cpu", seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert (a.name, a.weights) == ("test-vit-tiny", "random (seed 0)")
    assert c.weights == "random (seed 1)"
    assert _same_weights(a.model, b.model) and not _same_weights(a.model, c.model)
    source = api.resolve_spec("random:ViT-L/14-336")  # another spelling of an architecture; nothing built
    assert (source.name, source.random_arch, source.checkpoint) == ("ViT-L/14@336px", "ViT-L/14@336px", None)


def test_the_shipped_model_loads_without_network() -> None:
    loaded = api.load_model("clipforge-tiny", "cpu")
    assert (loaded.name, loaded.weights) == ("clipforge-tiny", "clipforge-tiny")
    assert loaded.fingerprint == model_fingerprint(loaded.model) and len(loaded.fingerprint) == 16


@pytest.mark.parametrize("spec", ["ViT-B/32", "ViT-B/32:openai"])
def test_registry_names_and_tags_resolve_to_the_verified_download(spec, monkeypatch, tmp_path, tiny_vit) -> None:
    fake = tmp_path / "ViT-B-32.pt"
    torch.save(tiny_vit.state_dict(), fake)
    asked: list[str] = []

    def download_pretrained(name, root=None):
        asked.append(name)
        return fake

    monkeypatch.setattr("clipforge.weights.download_pretrained", download_pretrained)
    loaded = api.load_model(spec, "cpu")
    assert asked == ["ViT-B/32"] and (loaded.name, loaded.weights) == ("ViT-B/32", "ViT-B/32")
    assert _same_weights(loaded.model, tiny_vit)
    assert api.load_model("ViT-B/32", "cpu", pretrained="openai").name == "ViT-B/32"


def test_bad_specs_and_devices_say_what_is_accepted() -> None:
    with pytest.raises(FileNotFoundError, match=r"'nope' is neither a known name .*clipforge-tiny.*random:<arch>"):
        api.load_model("nope", "cpu")
    with pytest.raises(ValueError, match=r"'nosuchtag'.*ViT-B/32"):
        api.load_model("ViT-B/32:nosuchtag", "cpu")
    with pytest.raises(ValueError, match="unknown architecture 'ViT-Q/7'"):
        api.load_model("random:ViT-Q/7", "cpu")
    with pytest.raises(ValueError, match="empty model spec"):
        api.load_model(" ", "cpu")  # not the current folder read as a checkpoint
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        api.load_model("test-vit-tiny", "gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available here; use --device cpu"):
            api.load_model("test-vit-tiny", "cuda")


def test_device_default_is_decided_once(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert api.default_device() == torch.device("cpu") == api.resolve_device(None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert api.default_device() == torch.device("cuda:1")
    monkeypatch.delenv("LOCAL_RANK")
    assert api.default_device() == torch.device("cuda")


def test_default_spec_falls_back_to_the_shipped_model_with_one_notice(monkeypatch, capsys) -> None:
    monkeypatch.setattr("clipforge.weights.is_cached", lambda name, root=None: False)
    spec, notice = api.default_model_spec()
    assert spec == "clipforge-tiny"
    assert notice == ("ViT-B/32 weights are not downloaded; using the small shipped model 'clipforge-tiny', a tiny "
                      "demo model trained on 32x32 CIFAR-10 images: results on real photos are rough; --model "
                      "ViT-B/32 downloads the real weights (offline, it names the file to fetch and where to save "
                      "it), or pass --model to choose another")
    assert capsys.readouterr().err == ""  # the library never prints it
    from clipforge.cli.common import model_spec

    assert model_spec(argparse.Namespace(model=None)) == "clipforge-tiny"
    assert capsys.readouterr().err == f"notice: {notice}\n"
    assert model_spec(argparse.Namespace(model=None, quiet=True)) == "clipforge-tiny"
    assert capsys.readouterr().err == ""
    monkeypatch.setattr("clipforge.weights.is_cached", lambda name, root=None: True)
    assert api.default_model_spec() == ("ViT-B/32", None)


def test_load_and_create_model_go_through_load_model(monkeypatch, tiny_pt, tiny_vit) -> None:
    calls: list[tuple] = []
    real = api.load_model

    def spy(spec, device=None, **kwargs):
        calls.append((str(spec), kwargs.get("pretrained")))
        return real(spec, device, **kwargs)

    monkeypatch.setattr(api, "load_model", spy)
    model, preprocess = clipforge.load(str(tiny_pt), device="cpu")
    assert _same_weights(model, tiny_vit) and preprocess.n_px == 32
    assert clipforge.create_model("test-vit-tiny", pretrained=tiny_pt).embed_dim == 32
    assert calls == [(str(tiny_pt), None), (str(tiny_pt), None)]
    model, _ = clipforge.load("test-vit-tiny", device="cpu")  # test configs load like everything else
    assert _same_weights(model, real("random:test-vit-tiny", "cpu").model)
    assert calls[-1] == ("test-vit-tiny", None)


class _Resolved(BaseException):
    """Raised by the spy loader: proves the command reached clipforge.api.load_model with this spec."""


SPY = "spy-model-spec"


def _model_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every (sub)command path whose parser takes --model."""
    found: set[tuple[str, ...]] = set()
    if any("--model" in a.option_strings for a in parser._actions):
        found.add(prefix)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _model_commands(sub, (*prefix, name))
    return found


@pytest.fixture()
def workspace(tmp_path: Path) -> dict[str, str]:
    photos = tmp_path / "photos"
    for cls, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (photos / cls).mkdir(parents=True)
        Image.new("RGB", (40, 40), colour).save(photos / cls / "a.png")
    captions = tmp_path / "captions.csv"
    captions.write_text("image,caption\nred/a.png,a red square\nblue/a.png,a blue square\n")
    library = tmp_path / "lib"
    assert main(["index", "add", str(photos), "-r", "--library", str(library), "--model", "test-vit-tiny",
                 "--quiet", "--device", "cpu"]) == 0
    return {"photos": str(photos), "image": str(photos / "red" / "a.png"), "captions": str(captions),
            "library": str(library), "out": str(tmp_path / "out")}


def _invocations(w: dict[str, str]) -> dict[tuple[str, ...], list[str]]:
    return {
        ("classify",): ["classify", w["image"], "--labels", "a,b"],
        ("similarity",): ["similarity", w["image"], "--text", "a", "b"],
        ("embed",): ["embed", w["photos"], "--out", w["out"]],
        ("eval", "zeroshot"): ["eval", "zeroshot", "--dataset", "folder", "--root", w["photos"], "--out", w["out"]],
        ("eval", "retrieval"): ["eval", "retrieval", "--captions", w["captions"], "--images", w["photos"],
                                "--out", w["out"]],
        ("eval", "linear-probe"): ["eval", "linear-probe", "--dataset", "folder", "--root", w["photos"],
                                   "--out", w["out"]],
        ("export", "onnx"): ["export", "onnx", "--out", w["out"]],
        ("index", "add"): ["index", "add", w["photos"], "--library", w["library"]],
        ("index", "rebuild"): ["index", "rebuild", "--library", w["library"]],
        ("search",): ["search", "red", "--library", w["library"]],
        ("tag",): ["tag", "--labels", "red,blue", "--library", w["library"]],
        ("serve",): ["serve", "--library", w["library"], "--port", "0", "--no-ui"],
        ("train",): ["train", "--root", w["captions"], "--steps", "1", "--out", w["out"]],
    }


def test_every_command_that_takes_model_resolves_it_through_load_model(workspace, monkeypatch) -> None:
    invocations = _invocations(workspace)
    assert _model_commands(build_parser()) == set(invocations), "a command with --model is missing from this test"

    def spy(spec, device=None, **kwargs):
        raise _Resolved(str(spec))

    monkeypatch.setattr(api, "load_model", spy)
    reached, missed = [], {}
    for command, argv in invocations.items():
        try:
            code = main([*argv, "--model", SPY])
        except _Resolved as resolved:
            assert str(resolved) == SPY
            reached.append(command)
        else:
            missed[command] = code
    assert missed == {}, f"these commands did not resolve --model through clipforge.api.load_model: {missed}"


def test_wise_ft_loads_both_checkpoints_through_load_model(monkeypatch, tmp_path) -> None:
    seen: list[str] = []

    def spy(spec, device=None, **kwargs):
        seen.append(str(spec))
        raise _Resolved(str(spec))

    monkeypatch.setattr(api, "load_model", spy)
    with pytest.raises(_Resolved):
        main(["wise-ft", "--zeroshot", "A-spec", "--finetuned", "B-spec", "--out", str(tmp_path / "w.safetensors")])
    assert seen == ["A-spec"]


def test_commands_share_one_model_help_and_device_default() -> None:
    from clipforge.cli.common import DEVICE_HELP, MODEL_HELP

    assert "ViT-B/32 when downloaded, else the shipped clipforge-tiny" in MODEL_HELP
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("classify", "similarity", "embed"):
        options = {o: a for a in sub.choices[name]._actions for o in a.option_strings}
        assert options["--model"].help == MODEL_HELP and options["--device"].help == DEVICE_HELP, name


def test_eval_prints_where_plots_went_and_json_is_one_document(workspace, capsys) -> None:
    argv = ["eval", "zeroshot", "--model", "test-vit-tiny", "--dataset", "folder", "--root", workspace["photos"],
            "--out", workspace["out"], "--workers", "0", "--device", "cpu", "--quiet"]
    plot_dir = Path(workspace["out"]) / "plots"
    assert main([*argv, "--plot", str(plot_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = [line for line in lines if line.startswith("plots written to ")]
    assert len(shown) == 1
    plots = [Path(p) for p in shown[0].removeprefix("plots written to ").split(", ")]
    assert [p.parent for p in plots] == [plot_dir] * 2 and all(p.is_file() and p.suffix == ".png" for p in plots)
    assert main([*argv, "--json", "--plot", "--exact-decode"]) == 0  # bare --plot: into the --out folder
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["name"] == "test-vit-tiny" and report["model"]["weights"] == "random (seed 0)"
    assert report["model"]["draft_decode"] is False and report["model"]["precision"] == "fp32"
    assert [Path(p).parent for p in report["files"]["plots"]] == [Path(workspace["out"])] * 2


def test_every_command_without_device_loads_on_the_one_default_device(workspace, monkeypatch) -> None:
    """With a GPU present (simulated), every command's default is api.default_device(), not its own."""
    invocations = _invocations(workspace)
    seen: dict[tuple[str, ...], str] = {}

    def spy(spec, device=None, **kwargs):
        raise _Resolved(str(device))

    monkeypatch.setattr(api, "load_model", spy)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    for command, argv in invocations.items():
        if command in {("train",), ("export", "onnx")}:
            continue  # training places the model itself (a process per device); ONNX export traces on the CPU
        with pytest.raises(_Resolved) as resolved:
            main([*argv, "--model", SPY])
        seen[command] = str(api.resolve_device(None if str(resolved.value) == "None" else str(resolved.value)))
    assert {c: d for c, d in seen.items() if d != "cuda"} == {}


def test_names_and_registry_tags_win_over_same_named_files_here(tmp_path, monkeypatch) -> None:
    """A folder called RN50 (or a file called openai) in the working directory must not silently
    replace the registry model of that name; `./NAME` still loads the file."""
    import warnings

    from clipforge import api

    monkeypatch.chdir(tmp_path)
    (tmp_path / "test-vit-tiny").mkdir()
    (tmp_path / "RN50").mkdir()
    (tmp_path / "openai").write_bytes(b"not weights")
    asked = []
    monkeypatch.setattr(api, "_pretrained_source",
                        lambda name, arch, tag, root: asked.append((arch, tag)) or "registry")
    with pytest.warns(UserWarning, match="pass ./RN50 to load it"):
        assert api.resolve_spec("RN50") == "registry"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert api.resolve_spec("ViT-B/32", pretrained="openai") == "registry"
        assert api.resolve_spec("ViT-B/32:openai") == "registry"
    assert asked == [("RN50", "openai"), ("ViT-B/32", "openai"), ("ViT-B/32", "openai")]
    with pytest.warns(UserWarning, match="names a model"):
        assert api.resolve_spec("test-vit-tiny").random_arch == "test-vit-tiny"
    assert api.resolve_spec("./RN50").checkpoint == (tmp_path / "RN50").resolve()


def test_a_mistyped_model_name_gets_did_you_mean() -> None:
    """`--model cn-ViT-B16` listed the shipped and OpenAI names but not Chinese-CLIP's, with no suggestion."""
    from clipforge.api import load_model

    with pytest.raises(FileNotFoundError, match=r"cn-ViT-B-16.*Did you mean cn-ViT-B-16\?$"):
        load_model("cn-ViT-B16", "cpu")
    with pytest.raises(FileNotFoundError, match=r"Did you mean clipforge-tiny-zh\?$"):
        load_model("clipforge-tiny-z", "cpu")
    with pytest.raises(ValueError, match=r"unknown architecture 'vit-b-32' \(did you mean ViT-B/32\?\)"):
        load_model("random:vit-b-32", "cpu")
    with pytest.raises(FileNotFoundError) as refused:
        load_model("something-else-entirely", "cpu")
    assert "Did you mean" not in str(refused.value)
