"""The inference path on a CUDA GPU: what `prepare`, `BatchEncoder` and `clipforge embed --device cuda` compute
there is what the plain fp32 model computes on the CPU (fp32 to a tolerance, bf16 to cosine >= 0.999), for every
family the one loader builds.

Skipped without a CUDA device (CI has none); run where one is lent:
``python -m pytest tests/perf/test_perf_cuda.py``. fp32 comparisons switch TF32 off, as torch's matmul
default is, so the GPU's fp32 is compared with the CPU's fp32, not with 10-bit-mantissa products.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.zoo import realistic_random_
from clipforge.inference import enable_fast_forward, prepare
from clipforge.inference.encoder import BatchEncoder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _exact_fp32() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _config_model(name: str, **overrides) -> torch.nn.Module:
    from clipforge.models import create_model_from_config, get_config

    torch.manual_seed(0)
    # non-trivial BatchNorm statistics: OpenAI's init makes every ResNet block start as the identity
    return realistic_random_(create_model_from_config({**get_config(name), **overrides})).eval()


def _hf_text(name: str, layers_field: str) -> torch.nn.Module:
    from clipforge.models import get_config

    config = get_config(name)
    text = {**config["text_hf"], "vocab_size": 4096, layers_field: 2}
    if "decoder_layers" in text:
        text["decoder_layers"] = 1
    return _config_model(name, text_hf=text, vision_layers=1, transformer_layers=1, vocab_size=4096)


def _chinese() -> torch.nn.Module:
    from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip

    torch.manual_seed(0)
    return create_chinese_clip(chinese_clip_config("cn-ViT-B-16", vision_layers=2, text_num_hidden_layers=2))


def _ids(vocab: int, pad: int, lengths: list[int], context: int, first: int, last: int) -> torch.Tensor:
    """Rows of random ids, `first` at position 0 and `last` at each row's end, pads after it."""
    ids = torch.randint(5, vocab - 5, (len(lengths), context), generator=torch.Generator().manual_seed(0))
    ends = torch.tensor(lengths).unsqueeze(1)
    ids[:, 0] = first
    ids.scatter_(1, ends - 1, last)
    return ids.masked_fill(torch.arange(context) >= ends, pad)


def _openai_ids(vocab: int, lengths: list[int], context: int = 77) -> torch.Tensor:
    return _ids(vocab, 0, lengths, context, vocab - 2, vocab - 1)


# family -> (model builder, towers the family's fast path covers and their inputs)
FAMILIES: dict[str, Callable[[], tuple[torch.nn.Module, dict[str, torch.Tensor]]]] = {
    "openai-vit": lambda: (_config_model("ViT-B/32", vision_layers=2, transformer_layers=2),
                           {"image": torch.randn(5, 3, 224, 224), "text": _openai_ids(49408, [5, 17, 40, 9, 77])}),
    "openai-resnet": lambda: (_config_model("RN50", vision_layers=[1, 1, 1, 1], transformer_layers=1),
                              {"image": torch.randn(3, 3, 224, 224)}),
    "siglip2": lambda: (_config_model("ViT-B-16-SigLIP2", vision_layers=2, transformer_layers=2),
                        {"image": torch.randn(3, 3, 224, 224),
                         "text": torch.randint(5, 1000, (4, 64), generator=torch.Generator().manual_seed(0))}),
    "chinese-clip": lambda: (_chinese(), {"image": torch.randn(3, 3, 224, 224),
                                          "text": _ids(21128, 0, [5, 17, 40, 9], 52, 101, 102)}),
    "xlm-roberta": lambda: (_hf_text("xlm-roberta-base-ViT-B-32", "num_hidden_layers"),
                            {"text": _ids(4096, 1, [5, 17, 30, 9], 77, 0, 2)}),
    "nllb": lambda: (_hf_text("nllb-clip-base", "encoder_layers"), {"text": _ids(4096, 1, [5, 17, 30, 9], 77, 4000, 2)}),
}


def _encode(model: torch.nn.Module, tower: str, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model.encode_image(x) if tower == "image" else model.encode_text(x)
    return out.float().cpu()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module, dict[str, torch.Tensor], dict]:
    model, inputs = FAMILIES[request.param]()
    reference = {tower: _encode(model, tower, x) for tower, x in inputs.items()}  # plain fp32 on the CPU
    return request.param, model, inputs, reference


def test_prepared_fp32_on_cuda_matches_the_cpu_reference(family) -> None:
    name, model, inputs, reference = family
    fast = prepare(copy.deepcopy(model).to(CUDA), "fp32")
    for tower, x in inputs.items():
        out = _encode(fast, tower, x.to(CUDA))
        scale = reference[tower].abs().max()
        assert (out - reference[tower]).abs().max() <= 2e-4 * scale, (name, tower)


def test_prepared_bf16_on_cuda_is_within_cosine_0999_of_the_cpu_reference(family) -> None:
    name, model, inputs, reference = family
    fast = prepare(copy.deepcopy(model).to(CUDA), "bf16")
    for tower, x in inputs.items():
        with torch.inference_mode():
            raw = fast.encode_image(x.to(CUDA)) if tower == "image" else fast.encode_text(x.to(CUDA))
        assert raw.device.type == "cuda" and raw.dtype == torch.bfloat16, (name, tower, raw.device, raw.dtype)
        cosine = F.cosine_similarity(raw.float().cpu(), reference[tower], dim=-1)
        assert cosine.min() >= 0.999, (name, tower, cosine)


def test_a_model_prepared_on_the_cpu_then_moved_to_cuda_gives_the_same_vectors(family) -> None:
    """LayerNorm weights stay fp32 when `prepare` ran on the CPU; CUDA's layer_norm takes no bf16 input with
    fp32 weights, so every LayerNorm on the way (transformers' embedding ones too) must still run."""
    name, model, inputs, reference = family
    moved = prepare(copy.deepcopy(model), "bf16", require_native_bf16=False).to(CUDA)
    assert any(m.weight.dtype == torch.float32 for m in moved.modules() if isinstance(m, torch.nn.LayerNorm))
    for tower, x in inputs.items():
        cosine = F.cosine_similarity(_encode(moved, tower, x.to(CUDA)), reference[tower], dim=-1)
        assert cosine.min() >= 0.999, (name, tower, cosine)


def test_prepare_on_cuda_casts_layer_norms_and_keeps_scalars_fp32(family) -> None:
    name, model, _, _ = family
    fast = prepare(copy.deepcopy(model).to(CUDA), "bf16")
    norms = [m for m in fast.modules() if isinstance(m, torch.nn.LayerNorm) and m.weight is not None]
    assert norms and all(m.weight.dtype == torch.bfloat16 for m in norms), name
    assert all(p.dtype == torch.float32 for p in fast.parameters() if p.dim() == 0), name


def test_the_loaded_model_on_cuda_runs_its_reference_forward(family) -> None:
    """`clipforge.load` gives the plain model the CPU fast path only: on a GPU it is the reference, under
    autocast too (bf16 within cosine 0.999)."""
    name, model, inputs, reference = family
    plain = enable_fast_forward(copy.deepcopy(model)).to(CUDA)
    for tower, x in inputs.items():
        out = _encode(plain, tower, x.to(CUDA))
        assert (out - reference[tower]).abs().max() <= 2e-4 * reference[tower].abs().max(), (name, tower)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mixed = _encode(plain, tower, x.to(CUDA))
        assert F.cosine_similarity(mixed, reference[tower], dim=-1).min() >= 0.999, (name, tower)


def test_batch_encoder_bf16_on_cuda_gives_unit_float32_vectors_on_the_cpu() -> None:
    model, inputs = FAMILIES["openai-vit"]()
    crops = torch.randint(0, 256, (6, 224, 224, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    cpu = BatchEncoder(copy.deepcopy(model), "fp32")
    gpu = BatchEncoder(copy.deepcopy(model).to(CUDA), "bf16")
    for ours, theirs in ((gpu.images(crops), cpu.images(crops)), (gpu.texts(inputs["text"]), cpu.texts(inputs["text"]))):
        assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        assert (ours * theirs).sum(1).min() >= 0.999


def test_embed_command_on_cuda_bf16_matches_the_cpu(tmp_path) -> None:
    from PIL import Image

    from clipforge.cli.main import main
    from clipforge.library.export import read_export

    photos = tmp_path / "photos"
    photos.mkdir()
    gen = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(gen.integers(0, 256, (48 + 16 * i, 64, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    common = ["embed", str(photos), "--model", "test-vit-tiny", "--float32", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "cpu"), "--device", "cpu"]) == 0
    assert main([*common, "--out", str(tmp_path / "gpu"), "--device", "cuda", "--precision", "bf16"]) == 0
    (a, rows_a), (b, rows_b) = read_export(tmp_path / "cpu"), read_export(tmp_path / "gpu")
    assert [r["image_path"] for r in rows_a] == [r["image_path"] for r in rows_b] and len(rows_a) == 5
    assert (a * b).sum(1).min() >= 0.999
