"""int8 dynamic quantization keeps features close; the ONNX export matches PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clipforge.inference.onnx_export import META_FILE, OnnxCLIP, export_onnx
from clipforge.inference.quantize import QuantizableSelfAttention, feature_cosine, quantize_dynamic_int8
from clipforge.models import create_model_from_config, get_config


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model_from_config(get_config(name)).eval()
    with torch.no_grad():  # non-trivial BatchNorm, so a stray training-mode forward would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.3, 1.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


def _tokens(lengths: list[int]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    out = torch.zeros(len(lengths), 77, dtype=torch.long)
    for row, length in enumerate(lengths):
        out[row, 0] = 49406
        out[row, 1:length] = torch.randint(1, 49000, (length - 1,), generator=generator)
        out[row, length] = 49407
    return out


def test_int8_features_stay_close_to_fp32() -> None:
    model = _model("test-vit-tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_dynamic_int8(model)
    kinds = {type(m).__name__ for m in quantized.modules()}
    assert "QuantizableSelfAttention" in kinds  # q/k/v projections are quantized too
    assert sum(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in quantized.modules()) == 16
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = _tokens([3, 8, 15, 40])
    with torch.inference_mode():
        image_cos = feature_cosine(model.encode_image(images), quantized.encode_image(images))
        text_cos = feature_cosine(model.encode_text(tokens), quantized.encode_text(tokens))
    assert image_cos["min"] >= 0.99 and text_cos["min"] >= 0.99
    assert image_cos["min"] < 1.0  # it really is quantized
    for key, value in model.state_dict().items():  # the original is untouched
        assert torch.equal(value, before[key])


def test_quantizable_attention_equals_the_packed_layout() -> None:
    model = _model("test-vit-tiny")
    attention = model.transformer.resblocks[0].attn
    x = torch.randn(2, 9, 128)
    with torch.inference_mode():
        torch.testing.assert_close(QuantizableSelfAttention(attention)(x, causal=True), attention(x, causal=True))


def test_int8_refuses_a_bf16_model() -> None:
    with pytest.raises(ValueError, match="needs an fp32 model"):
        quantize_dynamic_int8(_model("test-vit-tiny").to(torch.bfloat16))


@pytest.mark.parametrize("name", ["test-vit-tiny", "test-rn-tiny"])
def test_onnx_export_matches_pytorch_on_any_batch_size(tmp_path, name: str) -> None:
    pytest.importorskip("onnxruntime")
    model = _model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    meta = export_onnx(model, tmp_path, name=name)
    # exporting leaves the model as it was: eval mode everywhere, same weights and statistics
    assert not any(module.training for module in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert {p.name for p in tmp_path.iterdir()} == {"image_encoder.onnx", "text_encoder.onnx", META_FILE}
    assert json.loads((tmp_path / META_FILE).read_text())["embed_dim"] == 32
    assert max(meta["parity"]["image_max_abs_diff"], meta["parity"]["text_max_abs_diff"]) <= 1e-4
    assert max(meta["parity"]["image_max_rel_diff"], meta["parity"]["text_max_rel_diff"]) <= 1e-5
    runner = OnnxCLIP(tmp_path, threads=1)
    r = model.visual.input_resolution
    images = torch.randn(5, 3, r, r, generator=torch.Generator().manual_seed(2))  # export used batch 2
    tokens = _tokens([2, 10, 76, 5, 33, 1, 60])
    with torch.inference_mode():
        assert np.abs(runner.encode_image(images) - model.encode_image(images).numpy()).max() <= 1e-4
        assert np.abs(runner.encode_text(tokens) - model.encode_text(tokens).numpy()).max() <= 1e-4
        # an empty batch is [0, embed_dim] everywhere (a ResNet's attention pool split its rows with -1 and
        # failed on it: eager, fast path and ONNX graph alike)
        empty_images, empty_tokens = images[:0], tokens[:0]
        assert runner.encode_image(empty_images).shape == runner.encode_text(empty_tokens).shape == (0, 32)
        assert model.encode_image(empty_images).shape == model.encode_text(empty_tokens).shape == (0, 32)
    assert model.train().encode_image(empty_images).shape == (0, 32)  # the plain modules
    # the graph itself takes an empty batch (every reshape names its sizes) where onnxruntime's optimiser is off;
    # with it on, reshape fusion brings back a -1, so `OnnxCLIP` answers empty batches itself
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    raw = ort.InferenceSession(str(tmp_path / "image_encoder.onnx"), options, providers=["CPUExecutionProvider"])
    assert raw.run(None, {raw.get_inputs()[0].name: empty_images.numpy()})[0].shape == (0, 32)


def test_cli_export_onnx(tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from clipforge.cli.main import main

    assert main(["export", "onnx", "--model", "test-vit-tiny", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "image_encoder.onnx" in printed and "parity" in printed
    assert (tmp_path / "out" / "text_encoder.onnx").is_file()


def test_onnx_runner_explains_a_wrong_folder(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    with pytest.raises(FileNotFoundError, match="clipforge export onnx"):
        OnnxCLIP(tmp_path)


def test_onnx_outputs_normalised_under_hf_names_and_raw_under_their_own(tmp_path) -> None:
    """HF's `image_embeds`/`text_embeds` are L2-normalised; ours too, raw features are
    `image_features`/`text_features`. Batch and sequence axes are dynamic; int32 ids work and
    float ids are refused clearly. A GELU model exports with its activation."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    from clipforge.models import create_model_from_config, get_config

    model = create_model_from_config(get_config("test-vit-tiny") | {"activation": "gelu"}).eval()
    meta = export_onnx(model, tmp_path)
    assert meta["activation"] == "gelu" and max(meta["parity"]["image_max_abs_diff"],
                                                meta["parity"]["text_max_abs_diff"]) <= 1e-4
    image_session = ort.InferenceSession(str(tmp_path / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in image_session.get_outputs()] == ["image_features", "image_embeds"]
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    raw, embeds = image_session.run(None, {"pixel_values": images.numpy()})
    with torch.inference_mode():
        expected = model.encode_image(images).numpy()
    assert np.abs(raw - expected).max() <= 1e-4
    assert np.abs(embeds - expected / np.linalg.norm(expected, axis=-1, keepdims=True)).max() <= 1e-5
    assert np.allclose(np.linalg.norm(embeds, axis=-1), 1.0, atol=1e-5)

    runner = OnnxCLIP(tmp_path, threads=1)
    tokens = _tokens([2, 10, 5])  # EOT at most at position 11: rows may stop there
    short = tokens[:, :12]
    with torch.inference_mode():
        expected_text = model.encode_text(tokens).numpy()
    for ids in (tokens, short, short.to(torch.int32), short.numpy().astype(np.int32)):
        assert np.abs(runner.encode_text(ids) - expected_text).max() <= 1e-4
    normalised = runner.encode_text(short, normalize=True)
    assert np.allclose(np.linalg.norm(normalised, axis=-1), 1.0, atol=1e-5)
    with pytest.raises(TypeError, match="token ids must be integers"):
        runner.encode_text(short.float())
    too_long = torch.zeros(2, 78, dtype=torch.long)
    too_long[:, 77] = 49407  # a prompt that ends beyond the context (77-id rows of shorter prompts are taken)
    with pytest.raises(ValueError, match=r"78 tokens long but this model reads at most 77"):
        runner.encode_text(too_long)
