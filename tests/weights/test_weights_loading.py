"""`load_state_dict` / `load_checkpoint` across formats, wrappers, dtypes, and hostile files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from clipforge.models import build_model, create_model_from_config, get_config
from clipforge.weights import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_state_dict,
    save_safetensors,
    to_hf,
)


@pytest.fixture(scope="module")
def vit_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model_from_config(get_config("test-vit-tiny")).state_dict()


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in b)


def test_plain_state_dict_pt(tmp_path, vit_state):
    torch.save(vit_state, tmp_path / "plain.pt")
    checkpoint = load_checkpoint(tmp_path / "plain.pt")
    assert checkpoint.format == "torch" and checkpoint.config is None
    assert _equal(checkpoint.state_dict, vit_state)


def test_legacy_non_zip_torch_save(tmp_path, vit_state):
    torch.save(vit_state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert _equal(load_state_dict(tmp_path / "legacy.pth"), vit_state)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_training_checkpoint_wrappers_and_prefixes_are_removed(tmp_path, vit_state, wrapper):
    wrapped = {"epoch": 3, "optimizer": {"lr": 0.1},
               wrapper: {f"module._orig_mod.{k}": v for k, v in vit_state.items()}}
    torch.save(wrapped, tmp_path / "train.pt")
    assert _equal(load_state_dict(tmp_path / "train.pt"), vit_state)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_half_precision_weights_load_as_fp32(tmp_path, vit_state, dtype, fmt):
    half = {k: v.to(dtype) if v.is_floating_point() else v for k, v in vit_state.items()}
    path = tmp_path / f"half.{fmt}"
    if fmt == "pt":
        torch.save(half, path)
    else:
        save_file(half, str(path))
    loaded = load_state_dict(path)
    assert {v.dtype for v in loaded.values()} == {torch.float32}
    assert _equal(loaded, {k: v.float() for k, v in half.items()})


def test_safetensors_carries_its_config(tmp_path):
    config = get_config("test-vit-tiny") | {"transformer_heads": 4}  # not inferable from shapes
    torch.manual_seed(1)
    model = create_model_from_config(config).eval()
    save_safetensors(model, tmp_path / "model.safetensors")
    checkpoint = load_checkpoint(tmp_path / "model.safetensors")
    assert checkpoint.format == "safetensors" and checkpoint.config == config | {"activation": "quick_gelu"}
    rebuilt = build_model(checkpoint.state_dict, checkpoint.config)
    assert rebuilt.transformer.resblocks[0].attn.heads == 4
    gelu = create_model_from_config(config | {"activation": "gelu"}).eval()  # the activation is recorded
    assert load_checkpoint(save_safetensors(gelu, tmp_path / "g" / "m.safetensors")).config["activation"] == "gelu"
    text = torch.zeros(1, 77, dtype=torch.long)
    text[0, :3] = torch.tensor([49406, 320, 49407])
    with torch.no_grad():
        assert torch.equal(rebuilt.encode_text(text), model.encode_text(text))
    assert not [p for p in tmp_path.iterdir() if p.name not in ("model.safetensors", "g")]  # no temp files left


def test_hf_layout_in_a_single_file_is_converted(tmp_path, vit_state):
    hf_state, _ = to_hf(vit_state)
    save_file({k: v.contiguous() for k, v in hf_state.items()}, str(tmp_path / "hf.safetensors"))
    assert _equal(load_state_dict(tmp_path / "hf.safetensors"), vit_state)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("style", ["zip", "legacy", "raw-pickle"])
def test_pickle_that_runs_code_is_refused(tmp_path, style):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"visual.proj": torch.zeros(2), "evil": _RunsCode(marker)}
    if style == "raw-pickle":  # not written by torch.save at all
        path.write_bytes(pickle.dumps({"evil": _RunsCode(marker)}, protocol=2))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=style == "zip")
    with pytest.raises(UnsafeCheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert str(path) in message and "system" in info.value.forbidden and info.value.forbidden in message
    assert not marker.exists()


def test_pickled_module_is_refused_with_a_hint(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"Linear.*state_dict\(\)"):
        load_state_dict(tmp_path / "module.pt")


def test_unknown_format_names_the_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointFormatError, match=r"notes\.pt is not a checkpoint format"):
        load_state_dict(path)


def test_missing_file_and_non_tensor_entries(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_state_dict(tmp_path / "nowhere.pt")
    torch.save({"visual.proj": torch.zeros(2), "note": "hello"}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointFormatError, match=r"mixed\.pt: entry 'note' is a str"):
        load_state_dict(tmp_path / "mixed.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointFormatError, match=r"list\.pt does not hold a state dict"):
        load_state_dict(tmp_path / "list.pt")


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointFormatError, match="without config.json"):
        load_state_dict(tmp_path)


def test_loaded_weights_build_the_same_model(tmp_path, vit_state):
    torch.save(vit_state, tmp_path / "w.pt")
    model = build_model(load_state_dict(tmp_path / "w.pt"), get_config("test-vit-tiny"))
    assert _equal(model.state_dict(), vit_state)
