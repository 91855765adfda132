"""Every reader of checkpoint files refuses what ``torch.save`` holds besides a state dict in one line (session 56).

The plain path (`load_checkpoint`) already said "does not hold a state dict ... found list". The other readers
did not: Chinese-CLIP's download check said "'list' object has no attribute 'items'"; a ChineseCLIPModel folder
whose ``pytorch_model.bin`` held a list, a tensor or an int-named entry, a cn_clip-looking file with only its
marking tensors or one tensor short, an int-named entry in any file, a sharded index whose ``weight_map`` was a
list, and a ChineseCLIPModel ``config.json`` whose ``vision_config`` was a list ended in AttributeError, KeyError
or torch's multi-line RuntimeError tracebacks; the Chinese-CLIP hook's refusal and the cached ``cn-RN50`` file's
named no file; CLIP and SigLIP folders named the folder, not the file in it. Each case here runs the real
loaders on a real ``torch.save`` file and asserts the whole line; command-line cases run `clipforge.cli.main`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from clipforge.cli.main import main
from clipforge.weights import CheckpointFormatError
from tests.weights.conftest import classify_error

_WRAPPED = " (wrappers tried: state_dict, model, model_state_dict, module)"
_NOT_A_STATE_DICT = "does not hold a state dict (a mapping of names to tensors); found"
_BERT = "module.bert.embeddings.word_embeddings.weight"
_DESCRIBED = "parameters where the model its shapes describe has 24,236,225"




def _saved(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def _folder(tmp_path: Path, model_type: str, obj: Any, config: dict | None = None) -> Path:
    folder = tmp_path / f"{model_type}-folder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config or {"model_type": model_type}), encoding="utf-8")
    _saved(folder / "pytorch_model.bin", obj)
    return folder


def _tiny_cn_state() -> dict[str, torch.Tensor]:
    """A small real Chinese-CLIP's tensors in cn_clip's checkpoint names (``module.`` prefixed)."""
    pytest.importorskip("transformers")
    from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip

    torch.manual_seed(0)
    config = chinese_clip_config("cn-ViT-B-16", vision_layers=1, vision_width=64, image_resolution=32,
                                 text_num_hidden_layers=1)
    return {f"module.{k}": v for k, v in create_chinese_clip(config).state_dict().items()}


# ---- Chinese-CLIP's download check (`check_cn_architecture`): what `cn-*` downloads pass through ---------------
@pytest.mark.parametrize(("obj", "said"), [
    ([torch.zeros(2)], "it holds a list, not a dict of tensors (cn_clip's files hold one under 'state_dict')"),
    (torch.zeros(2), "it holds a Tensor, not a dict of tensors (cn_clip's files hold one under 'state_dict')"),
    (7, "it holds an int, not a dict of tensors (cn_clip's files hold one under 'state_dict')"),
    ({"state_dict": [torch.zeros(2)]}, "its 'state_dict' is a list, not a dict of tensors"),
    ({"state_dict": {_BERT: [1.0], "module.text_projection": torch.zeros(2)}},
     f"its {_BERT!r} is a list, not a tensor"),
])
def test_the_chinese_clip_download_check_says_what_the_file_holds(tmp_path: Path, obj: Any, said: str) -> None:
    from clipforge.weights.cn_clip import check_cn_architecture

    path = _saved(tmp_path / "clip_cn_rn50.pt", obj)
    with pytest.raises(CheckpointFormatError) as caught:
        check_cn_architecture(path, "cn-RN50")
    assert str(caught.value) == f"clip_cn_rn50.pt does not hold cn-RN50 weights: not a Chinese-CLIP checkpoint: {said}"


# ---- a cn_clip-looking file given by path: the Chinese-CLIP hook of `load_model` -------------------------------
def test_a_cn_clip_file_whose_marking_tensor_is_a_list_names_the_file(tmp_path: Path, image: str, capsys) -> None:
    path = _saved(tmp_path / "cn.pt", {"state_dict": {_BERT: [1.0], "module.text_projection": torch.zeros(2, 2)}})
    assert classify_error(image, str(path), capsys) == (
        f"error: {path}: not a Chinese-CLIP checkpoint: its {_BERT!r} is a list, not a tensor")


def test_a_cn_clip_file_with_only_its_marking_tensors_is_one_line(tmp_path: Path, image: str, capsys) -> None:
    path = _saved(tmp_path / "cn.pt", {"state_dict": {_BERT: torch.zeros(10, 8),
                                                      "module.text_projection": torch.zeros(8, 4)}})
    assert classify_error(image, str(path), capsys) == (
        f"error: {path} is not a whole Chinese-CLIP checkpoint: it lacks "
        "bert.encoder.layer.0.intermediate.dense.weight")


@pytest.mark.parametrize(("change", "said"), [
    ("drop", f"24,236,161 {_DESCRIBED}; it lacks visual.ln_post.weight"),
    ("reshape", f"24,236,164 {_DESCRIBED}; visual.ln_post.weight has shape (3,), not (64,)"),
    ("list", f"24,236,161 {_DESCRIBED}; it lacks visual.ln_post.weight"),
])
def test_a_cn_clip_file_a_tensor_short_or_misshapen_is_one_line(tmp_path: Path, image: str, capsys, change: str,
                                                                said: str) -> None:
    """torch's "Error(s) in loading state_dict for ChineseCLIP:" (a RuntimeError over two lines) was a traceback."""
    state = _tiny_cn_state()
    key = "module.visual.ln_post.weight"
    if change == "drop":
        del state[key]
    else:
        state[key] = torch.zeros(3) if change == "reshape" else [1.0]
    path = _saved(tmp_path / "cn.pt", {"state_dict": state})
    assert classify_error(image, str(path), capsys) == f"error: {path} is not a whole Chinese-CLIP checkpoint: {said}"


def test_the_cached_registry_file_holding_a_list_names_it(tmp_path: Path, monkeypatch, image: str, capsys) -> None:
    """``--model cn-RN50`` with its file in the cache (accepted earlier: its ``.sha256`` record matches) that was then
    replaced by a list: the hook's strict read said "not a Chinese-CLIP checkpoint: expected ..." and no file."""
    from clipforge.weights.download import sha256_file

    cache = tmp_path / "cache"
    monkeypatch.setenv("CLIPFORGE_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: no download happens
    path = _saved(cache / "OFA-Sys--chinese-clip-rn50--clip_cn_rn50.pt", [torch.zeros(2)])
    (cache / f"{path.name}.sha256").write_text(sha256_file(path) + "\n", encoding="ascii")
    assert classify_error(image, "cn-RN50", capsys) == (
        f"error: {path} does not hold cn-RN50 weights: not a Chinese-CLIP checkpoint: it holds a list, not a dict of "
        "tensors (cn_clip's files hold one under 'state_dict')")


# ---- transformers folders: CLIPModel, SiglipModel, ChineseCLIPModel ----------------------------------------------
@pytest.mark.parametrize("model_type", ["clip", "siglip", "chinese_clip"])
@pytest.mark.parametrize(("obj", "said"), [
    ([torch.zeros(2)], f" {_NOT_A_STATE_DICT} list"),
    (torch.zeros(2), f" {_NOT_A_STATE_DICT} Tensor"),
    ({"state_dict": [torch.zeros(2)]},
     f": entry 'state_dict' is a list, not a tensor; expected a state dict{_WRAPPED}"),
    ({"visual_projection.weight": [1, 2]},
     f": entry 'visual_projection.weight' is a list, not a tensor; expected a state dict{_WRAPPED}"),
    ({0: torch.zeros(2)}, f": entry 0 is named by an int, not a string; expected a state dict{_WRAPPED}"),
])
def test_a_transformers_folders_weights_file_is_named(tmp_path: Path, image: str, capsys, model_type: str, obj: Any,
                                                      said: str) -> None:
    folder = _folder(tmp_path, model_type, obj)
    assert classify_error(image, str(folder), capsys) == f"error: {folder / 'pytorch_model.bin'}{said}"


def test_a_sharded_index_whose_weight_map_is_a_list_is_one_line(tmp_path: Path, image: str, capsys) -> None:
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}), encoding="utf-8")
    index = folder / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"weight_map": ["pytorch_model-00001.bin"]}), encoding="utf-8")
    assert classify_error(image, str(folder), capsys) == (
        f"error: {index} must hold a JSON object with a 'weight_map' object (tensor names to shard files)")


@pytest.mark.parametrize(("config", "said"), [
    ({"vision_config": [1]}, "field 'vision_config' must be a JSON object, got list"),
    ({"text_config": {"num_attention_heads": "x"}},
     "field 'text_config.num_attention_heads' must be a positive whole number, got 'x'"),
])
def test_a_chinese_clip_folders_config_fields_are_checked(tmp_path: Path, image: str, capsys, config: dict,
                                                          said: str) -> None:
    """Before the weights are read: ``vision_config`` as a list was an AttributeError traceback, a head count
    "x" was int()'s "invalid literal" line naming no file."""
    folder = _folder(tmp_path, "chinese_clip", {"a": torch.zeros(1)}, {"model_type": "chinese_clip", **config})
    assert classify_error(image, str(folder), capsys) == f"error: {folder / 'config.json'} {said}"


# ---- any file: a state dict entry named by something other than a string -----------------------------------------
@pytest.mark.parametrize("spec", ["{path}", "ViT-B/32:{path}"])
def test_an_entry_named_by_an_int_is_one_line(tmp_path: Path, image: str, capsys, spec: str) -> None:
    """``.startswith`` on the int (prefix stripping) was an AttributeError traceback."""
    path = _saved(tmp_path / "ints.pt", {0: torch.zeros(2), "visual.proj": torch.zeros(2)})
    assert classify_error(image, spec.format(path=path), capsys) == (
        f"error: {path}: entry 0 is named by an int, not a string; expected a state dict{_WRAPPED}")


# ---- the open_clip forms and the other commands reach the same lines ----------------------------------------------
@pytest.mark.parametrize(("obj", "found"), [([torch.zeros(2)], "list"), (torch.zeros(2), "Tensor")])
def test_create_model_and_load_with_pretrained_give_the_same_line(tmp_path: Path, obj: Any, found: str) -> None:
    import clipforge

    path = _saved(tmp_path / "weights.pt", obj)
    line = f"{path} {_NOT_A_STATE_DICT} {found}"
    with pytest.raises(ValueError) as caught:
        clipforge.create_model("ViT-B-32", pretrained=str(path))
    assert str(caught.value) == f"weights {path} do not fit architecture 'ViT-B-32': {line}"
    with pytest.raises(CheckpointFormatError) as loaded:
        clipforge.load("ViT-B/32", pretrained=str(path))
    assert str(loaded.value) == line


def test_eval_names_the_file(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / name / "0.png")
    folder = _folder(tmp_path, "chinese_clip", [torch.zeros(2)])
    code = main(["eval", "zeroshot", "--model", str(folder), "--dataset", "folder", "--root", str(root), "-q"])
    err = capsys.readouterr().err
    assert (code, err) == (2, f"error: {folder / 'pytorch_model.bin'} {_NOT_A_STATE_DICT} list\n")
