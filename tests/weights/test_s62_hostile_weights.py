"""Hostile weights files (audit 62, fuzzer 7 and 10).

7: a Hugging Face CLIP folder's config.json sizes were never compared with its tensors (100,000 text layers, patch
   size 0, image size 1e6, vocab 10, 5 positions, a hidden size "128", no vision_config all loaded silently), and a
   ``layer_norm_eps`` of NaN passed the "must be 1e-5" check (``abs(nan - 1e-5) > 1e-12`` is False).
10: a checkpoint holding a sparse tensor was a traceback in the fingerprint; complex and float8 tensors loaded
   silently (a complex weight's imaginary part dropped); an empty tensor said "not a CLIP state dict (tuple index
   out of range)".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from clipforge.cli.main import main
from clipforge.weights import CheckpointFormatError, load_checkpoint
from clipforge.weights.shipped import shipped_models
from tests.weights.conftest import classify_error


@pytest.fixture(scope="module")
def hf_good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test-vit-tiny as transformers writes it: text 2 layers x 128 wide, 49,408 ids, 77 positions; vision 2 layers
    x 128, patch 8 at 32 px (17 positions: a class token and a 4 x 4 grid); projection 32."""
    from clipforge.api import load_model
    from clipforge.weights import save_hf

    return save_hf(load_model("random:test-vit-tiny", device="cpu").model, tmp_path_factory.mktemp("hf") / "good")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "a.png"
    Image.new("RGB", (16, 16), (120, 30, 200)).save(path)
    return str(path)


def _edited(good: Path, tmp_path: Path, edit: Any = None, raw: str | None = None) -> Path:
    folder = tmp_path / "hf"
    shutil.copytree(good, folder)
    config = json.loads((good / "config.json").read_text())
    if edit is not None:
        edit(config)
    (folder / "config.json").write_text(raw if raw is not None else json.dumps(config))
    return folder



def _set(section: str, key: str, value: Any):
    def edit(config: dict) -> None:
        (config.setdefault(section, {}) if section else config)[key] = value
    return edit


CONTRADICTS = "contradicts the tensors:"


@pytest.mark.parametrize(("edit", "said"), [
    (_set("text_config", "num_hidden_layers", 100_000),
     f"config.json field 'text_config.num_hidden_layers' = 100000 {CONTRADICTS} the weights have 2 text layers"),
    (_set("vision_config", "num_hidden_layers", 3),
     f"config.json field 'vision_config.num_hidden_layers' = 3 {CONTRADICTS} the weights have 2 vision layers"),
    (_set("vision_config", "patch_size", 0),
     f"config.json field 'vision_config.patch_size' = 0 {CONTRADICTS} "
     "vision_model.embeddings.patch_embedding.weight has 8"),
    (_set("vision_config", "patch_size", 10**9),
     f"config.json field 'vision_config.patch_size' = 1000000000 {CONTRADICTS} "
     "vision_model.embeddings.patch_embedding.weight has 8"),
    (_set("vision_config", "image_size", 10**6),
     f"config.json field 'vision_config.image_size' = 1000000 {CONTRADICTS} the 17 position embeddings of patch 8 "
     "cover 32 pixels"),
    (_set("text_config", "vocab_size", 10),
     f"config.json field 'text_config.vocab_size' = 10 {CONTRADICTS} "
     "text_model.embeddings.token_embedding.weight has 49408"),
    (_set("text_config", "max_position_embeddings", 5),
     f"config.json field 'text_config.max_position_embeddings' = 5 {CONTRADICTS} "
     "text_model.embeddings.position_embedding.weight has 77"),
    (_set("text_config", "hidden_size", 256),
     f"config.json field 'text_config.hidden_size' = 256 {CONTRADICTS} "
     "text_model.embeddings.token_embedding.weight has 128"),
    (_set("vision_config", "hidden_size", 64),
     f"config.json field 'vision_config.hidden_size' = 64 {CONTRADICTS} "
     "vision_model.embeddings.patch_embedding.weight has 128"),
    (_set("text_config", "intermediate_size", 1024),
     f"config.json field 'text_config.intermediate_size' = 1024 {CONTRADICTS} "
     "text_model.encoder.layers.0.mlp.fc1.weight has 512"),
    (_set("vision_config", "intermediate_size", 256),
     f"config.json field 'vision_config.intermediate_size' = 256 {CONTRADICTS} "
     "vision_model.encoder.layers.0.mlp.fc1.weight has 512"),
    (_set("vision_config", "num_channels", 1),
     f"config.json field 'vision_config.num_channels' = 1 {CONTRADICTS} "
     "vision_model.embeddings.patch_embedding.weight has 3"),
    (_set("", "projection_dim", 64),
     f"config.json field 'projection_dim' = 64 {CONTRADICTS} visual_projection.weight has 32"),
    (_set("text_config_dict", "num_hidden_layers", 4),  # transformers' override of text_config: checked as well
     f"config.json field 'text_config_dict.num_hidden_layers' = 4 {CONTRADICTS} the weights have 2 text layers"),
    (_set("text_config", "hidden_size", "128"),
     "config.json field 'text_config.hidden_size' must be a finite number, got '128'"),
    (_set("vision_config", "image_size", float("inf")),
     "config.json field 'vision_config.image_size' must be a finite number, got inf"),
    (_set("vision_config", "patch_size", float("nan")),
     "config.json field 'vision_config.patch_size' must be a finite number, got nan"),
    (_set("text_config", "layer_norm_eps", float("nan")),
     "config.json field 'text_config.layer_norm_eps' is nan; clipforge uses 1e-5"),
    (_set("vision_config", "layer_norm_eps", float("inf")),
     "config.json field 'vision_config.layer_norm_eps' is inf; clipforge uses 1e-5"),
], ids=["text-layers", "vision-layers", "patch0", "patch-huge", "image-huge", "vocab", "positions", "text-width",
        "vision-width", "text-mlp", "vision-mlp", "channels", "projection", "config-dict", "width-str", "image-inf",
        "patch-nan", "eps-nan", "eps-inf"])
def test_a_config_json_that_contradicts_its_tensors_is_one_line(hf_good: Path, tmp_path: Path, image: str, capsys,
                                                                edit, said: str) -> None:
    folder = _edited(hf_good, tmp_path, edit)
    assert classify_error(image, str(folder), capsys) == f"error: {folder}: {said}"


def test_the_folder_transformers_wrote_loads_and_omitted_sizes_are_the_tensors_to_decide(hf_good: Path,
                                                                                          tmp_path: Path) -> None:
    """Positive controls: the unchanged folder loads; so does one whose config.json leaves every size out, has no
    tower objects or empty ones (nothing to compare: the tensors decide), or repeats the sizes in transformers'
    ``*_config_dict`` overrides, and to the same model."""
    good = load_checkpoint(hf_good)

    def bare(config: dict) -> None:
        for section in ("text_config", "vision_config"):
            config[section] = {"hidden_act": config[section]["hidden_act"]}
        config.pop("projection_dim")

    def overrides(config: dict) -> None:
        config["text_config_dict"] = {k: config["text_config"][k] for k in ("hidden_size", "num_hidden_layers")}
        config["vision_config_dict"] = {k: config["vision_config"][k] for k in ("patch_size", "image_size")}

    def no_towers(config: dict) -> None:  # review 62 #3: transformers and the release before load these
        config.clear()
        config["model_type"] = "clip"

    def empty_towers(config: dict) -> None:
        config.update(text_config={}, vision_config={})

    for name, edit in (("bare", bare), ("overrides", overrides), ("no-towers", no_towers),
                       ("empty-towers", empty_towers)):
        loaded = load_checkpoint(_edited(hf_good, tmp_path / name, edit))
        assert loaded.config == good.config, name
        assert loaded.state_dict.keys() == good.state_dict.keys()
        assert all(torch.equal(loaded.state_dict[k], v) for k, v in good.state_dict.items())
    assert good.config["transformer_layers"] == 2 and good.config["image_resolution"] == 32


# ---- 10: tensors no CLIP weight can be --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sd() -> dict[str, torch.Tensor]:
    return load_file(str(shipped_models()["clipforge-tiny"]))


REAL = "float32, float16, bfloat16 or float64"
ODD = {"sparse": (lambda t: t.to_sparse(), "entry 'text_projection' is a sparse_coo tensor, not a dense one: expected "
                                           "a state dict of dense weights"),
       "complex": (lambda t: t.to(torch.complex64), f"entry 'text_projection' holds complex64 numbers: CLIP weights "
                                                    f"are real ({REAL})"),
       "float8": (lambda t: t.to(torch.float8_e4m3fn), f"entry 'text_projection' holds float8_e4m3fn numbers: "
                                                       f"clipforge reads {REAL} weights (float8 ones come with scales "
                                                       "it does not apply)"),
       "qint8": (lambda t: torch.quantize_per_tensor(t.float(), 0.01, 0, torch.qint8),
                 f"entry 'text_projection' is a quantized qint8 tensor: clipforge reads {REAL} weights (it does not "
                 "apply a quantized tensor's scale and zero point)")}


@pytest.mark.parametrize(("change", "said"), [
    (lambda t: t.to_sparse(), "entry 'text_projection' is a sparse_coo tensor, not a dense one: expected a state "
                              "dict of dense weights"),
    (lambda t: t.to_sparse_csr(), "entry 'text_projection' is a sparse_csr tensor, not a dense one: expected a "
                                  "state dict of dense weights"),
    (lambda t: t.to(torch.complex64), "entry 'text_projection' holds complex64 numbers: CLIP weights are real "
                                      "(float32, float16, bfloat16 or float64)"),
    (lambda t: t.to(torch.float8_e4m3fn), "entry 'text_projection' holds float8_e4m3fn numbers: clipforge reads "
                                          "float32, float16, bfloat16 or float64 weights (float8 ones come with "
                                          "scales it does not apply)"),
    (lambda t: torch.empty(0), "entry 'text_projection' is an empty tensor (shape (0,)): not a CLIP state dict"),
    (lambda t: torch.quantize_per_tensor(t.float(), 0.01, 0, torch.qint8),
     f"entry 'text_projection' is a quantized qint8 tensor: clipforge reads {REAL} weights (it does not apply a "
     "quantized tensor's scale and zero point)"),
], ids=["sparse", "sparse-csr", "complex", "float8", "empty", "qint8"])
def test_a_tensor_no_clip_weight_can_be_is_named_in_one_line(tiny_sd, tmp_path: Path, image: str, capsys, change,
                                                             said: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save({**tiny_sd, "text_projection": change(tiny_sd["text_projection"])}, path)
    assert classify_error(image, str(path), capsys) == f"error: {path}: {said}"


def test_a_complex_tensor_in_a_safetensors_file_is_refused_too(tiny_sd, tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    save_file({**tiny_sd, "ln_final.weight": tiny_sd["ln_final.weight"].to(torch.complex64)}, str(path))
    with pytest.raises(CheckpointFormatError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (f"{path}: entry 'ln_final.weight' holds complex64 numbers: CLIP weights are real "
                                 "(float32, float16, bfloat16 or float64)")


def test_plain_fp16_and_transposed_files_still_load_equal(tiny_sd, tmp_path: Path, image: str, capsys) -> None:
    """Positive controls: the same tensors as a .pt, in fp16, or stored non-contiguous (a transposed view) load."""
    plain, half, strided = tmp_path / "plain.pt", tmp_path / "half.pt", tmp_path / "strided.pt"
    torch.save(tiny_sd, plain)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in tiny_sd.items()}, half)
    projection = tiny_sd["text_projection"].t().contiguous().t()
    assert not projection.is_contiguous()
    torch.save({**tiny_sd, "text_projection": projection}, strided)
    reference, loaded = load_checkpoint(plain).state_dict, load_checkpoint(strided).state_dict  # each read once
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())
    assert load_checkpoint(half).state_dict["text_projection"].dtype == torch.float32
    assert main(["classify", image, "--labels", "a,b", "--model", str(strided), "-q"]) == 0


# ---- review 62 #1: Chinese-CLIP checkpoint files go through the same tensor check -----------------------------
@pytest.fixture(scope="module")
def cn_sd() -> dict[str, torch.Tensor]:
    from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip

    torch.manual_seed(0)
    return create_chinese_clip(chinese_clip_config(
        "cn-ViT-B-16", vision_layers=1, text_num_hidden_layers=1, vision_width=64, text_hidden_size=64,
        text_intermediate_size=128, text_num_attention_heads=2, embed_dim=32)).state_dict()


@pytest.mark.parametrize("odd", ["sparse", "complex", "float8", "qint8"])
def test_a_cn_clip_pt_file_with_a_tensor_no_weight_can_be_is_named_in_one_line(cn_sd, tmp_path: Path, image: str,
                                                                              capsys, odd: str) -> None:
    change, said = ODD[odd]
    path = tmp_path / "cn.pt"
    torch.save({"state_dict": {**cn_sd, "text_projection": change(cn_sd["text_projection"])}}, path)
    assert classify_error(image, str(path), capsys) == f"error: {path}: {said}"


@pytest.mark.parametrize("odd", ["complex", "float8"])
def test_a_cn_clip_safetensors_file_with_an_odd_tensor_is_refused(cn_sd, tmp_path: Path, image: str, capsys,
                                                                  odd: str) -> None:
    change, said = ODD[odd]
    path = tmp_path / "cn.safetensors"
    save_file({**cn_sd, "text_projection": change(cn_sd["text_projection"])}, str(path))
    assert classify_error(image, str(path), capsys) == f"error: {path}: {said}"
    assert classify_error(image, f"cn-ViT-B-16:{path}", capsys).startswith(f"error: {path}")  # named: refused as well


def test_the_same_cn_clip_files_load_when_their_tensors_are_weights(cn_sd, tmp_path: Path, image: str) -> None:
    """Positive controls: the unchanged tensors load from .pt and .safetensors (fp16 included)."""
    torch.save({"state_dict": cn_sd}, tmp_path / "cn.pt")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in cn_sd.items()}, str(tmp_path / "cn.safetensors"))
    for name in ("cn.pt", "cn.safetensors"):
        assert main(["classify", image, "--labels", "a,b", "--model", str(tmp_path / name), "-q"]) == 0, name


# ---- review 62 #2: a ChineseCLIPModel folder's config.json sizes are compared with its tensors -----------------
@pytest.fixture(scope="module")
def cn_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ChineseCLIPModel folder as transformers writes it: BERT text 2 layers x 64 (21,128 ids, 512 positions),
    vision 2 layers x 64, patch 16 at 64 px (17 positions), projection 32."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ChineseCLIPConfig(
        text_config={"vocab_size": 21128, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 512},
        vision_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 64, "patch_size": 16}, projection_dim=32)
    folder = tmp_path_factory.mktemp("cn") / "cnclip"
    transformers.ChineseCLIPModel(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("edit", "said"), [
    (_set("text_config", "num_hidden_layers", 100_000),
     f"config.json field 'text_config.num_hidden_layers' = 100000 {CONTRADICTS} the weights have 2 text layers"),
    (_set("vision_config", "num_hidden_layers", 3),
     f"config.json field 'vision_config.num_hidden_layers' = 3 {CONTRADICTS} the weights have 2 vision layers"),
    (_set("vision_config", "patch_size", 0),
     f"config.json field 'vision_config.patch_size' = 0 {CONTRADICTS} "
     "vision_model.embeddings.patch_embedding.weight has 16"),
    (_set("vision_config", "image_size", 10**6),
     f"config.json field 'vision_config.image_size' = 1000000 {CONTRADICTS} the 17 position embeddings of patch 16 "
     "cover 64 pixels"),
    (_set("text_config", "vocab_size", 10),
     f"config.json field 'text_config.vocab_size' = 10 {CONTRADICTS} "
     "text_model.embeddings.word_embeddings.weight has 21128"),
    (_set("text_config", "max_position_embeddings", 5),
     f"config.json field 'text_config.max_position_embeddings' = 5 {CONTRADICTS} "
     "text_model.embeddings.position_embeddings.weight has 512"),
    (_set("text_config", "intermediate_size", 1024),
     f"config.json field 'text_config.intermediate_size' = 1024 {CONTRADICTS} "
     "text_model.encoder.layer.0.intermediate.dense.weight has 256"),
    (_set("", "projection_dim", 7),
     f"config.json field 'projection_dim' = 7 {CONTRADICTS} visual_projection.weight has 32"),
], ids=["text-layers", "vision-layers", "patch0", "image-huge", "vocab", "positions", "text-mlp", "projection"])
def test_a_cn_folder_config_json_that_contradicts_its_tensors_is_one_line(cn_folder: Path, tmp_path: Path,
                                                                          image: str, capsys, edit, said) -> None:
    folder = _edited(cn_folder, tmp_path, edit)
    assert classify_error(image, str(folder), capsys) == f"error: {folder}: {said}"


def test_the_cn_folder_transformers_wrote_loads_and_so_do_empty_towers(cn_folder: Path, tmp_path: Path,
                                                                       image: str, capsys) -> None:
    """Positive controls: the unchanged folder, and one whose tower objects are empty, load to the same scores."""
    def empty(config: dict) -> None:
        config.update(text_config={}, vision_config={})

    scores = []
    for folder in (cn_folder, _edited(cn_folder, tmp_path, empty)):
        assert main(["classify", image, "--labels", "a,b", "--model", str(folder), "-q"]) == 0
        scores.append(capsys.readouterr().out)
    assert scores[0] == scores[1] and "%" in scores[0]
