"""OpenAI-style TorchScript archives are read without TorchScript and without unsafe unpickling."""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from clipforge.models import create_model_from_config, get_config
from clipforge.weights import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    is_torchscript_archive,
    load_checkpoint,
    load_state_dict,
    read_torchscript_state_dict,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(scope="module")
def traced_vit(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path]:
    model = _tiny("test-vit-tiny")
    path = _trace_and_save(model, tmp_path_factory.mktemp("traced") / "vit.pt")
    return model.state_dict(), path


def _tiny(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model_from_config(get_config(name)).eval()


def _inputs(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    r = model.visual.input_resolution
    text = torch.zeros(2, 77, dtype=torch.long)
    text[:, 0], text[0, 1:4], text[0, 4], text[1, 1], text[1, 2] = 49406, 7, 49407, 9, 49407
    return torch.randn(1, 3, r, r), text


def _trace_and_save(model: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent lengths
        traced = torch.jit.trace(model, _inputs(model), check_trace=False)
    torch.jit.save(traced, str(path))
    return path


def _identity(self, x: torch.Tensor) -> torch.Tensor:
    return x


def _script_and_save(model: nn.Module, path: Path) -> Path:
    """Script the model; where our forward code is not scriptable, script its module tree with
    identity forwards on fresh subclasses (the archive's weights are what this test is about)."""
    try:
        scripted = torch.jit.script(model)
    except Exception:
        for module in model.modules():
            cls = type(module)
            if cls.__module__.startswith("clipforge."):
                module.__class__ = type(cls.__name__, (cls,), {"forward": _identity})
        scripted = torch.jit.script(model)
    torch.jit.save(scripted, str(path))
    return path


def _assert_same_state(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(loaded) == list(expected)  # same names, same order
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype, key
        assert loaded[key].shape == value.shape, key
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("name", ["test-vit-tiny", "test-rn-tiny"])
def test_traced_archive_reads_exactly(name, tmp_path, monkeypatch, traced_vit):
    if name == "test-vit-tiny":
        state, path = traced_vit
    else:
        model = _tiny(name)
        state, path = model.state_dict(), _trace_and_save(model, tmp_path / "traced.pt")
    assert is_torchscript_archive(path)
    reference = torch.jit.load(str(path)).state_dict()
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("TorchScript must not be loaded"))
    loaded = read_torchscript_state_dict(path)
    _assert_same_state(loaded, state)
    _assert_same_state(loaded, dict(reference))
    checkpoint = load_checkpoint(path)
    assert checkpoint.format == "torchscript" and checkpoint.config["activation"] == "quick_gelu"  # OpenAI: always
    _assert_same_state(checkpoint.state_dict, state)


@pytest.mark.parametrize("name", ["test-vit-tiny", "test-rn-tiny"])
def test_scripted_archive_reads_exactly(name, tmp_path):
    model = _tiny(name, seed=1)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    path = _script_and_save(model, tmp_path / "scripted.pt")
    loaded = load_state_dict(path)
    _assert_same_state(loaded, expected)
    _assert_same_state(loaded, dict(torch.jit.load(str(path)).state_dict()))


def test_fp16_archive_with_openai_extra_keys_loads_as_fp32(tmp_path):
    """OpenAI's archives are fp16 and carry input_resolution/context_length/vocab_size tensors."""
    model = _tiny("test-vit-tiny", seed=2)
    expected = {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.half()
    for key, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        if key in vars(model):
            delattr(model, key)  # a plain int attribute on our CLIP; a tensor in OpenAI's archives
        model.register_buffer(key, torch.tensor(value))
    path = _script_and_save(model, tmp_path / "openai_like.pt")
    raw = read_torchscript_state_dict(path)
    assert raw["visual.proj"].dtype == torch.float16 and int(raw["input_resolution"]) == 32
    loaded = load_state_dict(path)
    assert not {"input_resolution", "context_length", "vocab_size"} & set(loaded)
    _assert_same_state(loaded, expected)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip_with_pickle(path: Path, payload: bytes, root: str = "archive") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{root}/data.pkl", payload)
        archive.writestr(f"{root}/constants.pkl", pickle.dumps(()))
        archive.writestr(f"{root}/version", "3\n")
    return path


def test_torchscript_looking_zip_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = _zip_with_pickle(tmp_path / "evil.pt", pickle.dumps(_RunsCode(marker), protocol=2))
    assert is_torchscript_archive(path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_state_dict(path)
    assert str(path) in str(info.value) and f"{os.system.__module__}.system" in str(info.value)
    assert info.value.forbidden == f"{os.system.__module__}.system"
    assert not marker.exists()


def test_forbidden_global_nested_inside_a_module_state_is_refused(tmp_path):
    """A `__torch__` placeholder is allowed, but an evil object inside its state is not."""
    buf = io.BytesIO()
    buf.write(b"\x80\x02c__torch__.model\nCLIP\n)\x81}X\x06\x00\x00\x00helperc" b"builtins\neval\n"
              b"X\x0c\x00\x00\x00print('hi!')\x85Rsb.")
    path = _zip_with_pickle(tmp_path / "nested.pt", buf.getvalue())
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval"):
        read_torchscript_state_dict(path)


def test_archive_with_missing_tensor_data_is_a_format_error(tmp_path, traced_vit):
    source = traced_vit[1]
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith("/data/0"):
                dst.writestr(item, src.read(item))
    with pytest.raises(CheckpointFormatError, match=r"broken\.pt.*data/0 is missing"):
        load_state_dict(broken)
