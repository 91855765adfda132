"""Hostile checkpoint files (issue 9, items 16 and 17): every one is refused with a
`CheckpointFormatError` naming the field or entry, before any large allocation or model build."""

from __future__ import annotations

import json
import struct
import tracemalloc
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from clipforge.models import create_model_from_config, get_config
from clipforge.weights import CheckpointFormatError, load_checkpoint, model_config, save_hf, save_safetensors

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model_from_config(get_config("test-vit-tiny")).eval()


def _traced(model, path: Path) -> Path:
    text = torch.zeros(1, 77, dtype=torch.long)
    text[0, 0], text[0, 1] = 49406, 49407
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (torch.randn(1, 3, 32, 32), text), check_trace=False)
    torch.jit.save(traced, str(path))
    return path


def _claim_size(data: bytearray, member_suffix: bytes, size: int) -> bytearray:
    """Rewrite the uncompressed size of one entry in the central directory (and local header)."""
    at = 0
    while (at := data.find(b"PK\x01\x02", at)) != -1:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        name = bytes(data[at + 46:at + 46 + name_len])
        if name.endswith(member_suffix):
            struct.pack_into("<I", data, at + 24, size)
            local = struct.unpack_from("<I", data, at + 42)[0]
            struct.pack_into("<I", data, local + 22, size)
            return data
        at += 4
    raise AssertionError(f"no entry ending in {member_suffix!r}")


def test_zip_entry_claiming_3gb_is_refused_before_allocating(tiny, tmp_path):
    archive = _traced(tiny, tmp_path / "real.pt")
    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(_claim_size(bytearray(archive.read_bytes()), b"/data/0", 3_000_000_000))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointFormatError, match=r"hostile\.pt: zip entry '.*/data/0' declares 3000000000 bytes"):
            load_checkpoint(hostile)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000  # nothing near the claimed 3 GB was allocated


def test_zip_entry_claiming_more_compressed_bytes_than_the_file_is_refused(tiny, tmp_path):
    data = bytearray(_traced(tiny, tmp_path / "real.pt").read_bytes())
    at = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, at + 20, 10**9)  # compressed size of the first entry
    (tmp_path / "bad.pt").write_bytes(data)
    with pytest.raises(CheckpointFormatError, match="declares .* but the file holds"):
        load_checkpoint(tmp_path / "bad.pt")


def _with_metadata_config(tiny, path: Path, config_text: str) -> Path:
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(path),
              metadata={"format": "pt", "clipforge_config": config_text})
    return path


@pytest.mark.parametrize(("change", "field"), [
    ({"transformer_heads": -2}, "transformer_heads"),
    ({"transformer_heads": 0}, "transformer_heads"),
    ({"transformer_heads": 3}, "transformer_heads"),  # does not divide the width
    ({"vision_width": 10**30}, "vision_width"),
    ({"embed_dim": "32"}, "embed_dim"),
    ({"vision_layers": [1, 2]}, "vision_layers"),
    ({"vision_patch_size": 0}, "vision_patch_size"),
    ({"activation": "relu"}, "activation"),
    ({"vision_mlp_ratio": float("nan")}, "vision_mlp_ratio"),
    ({"vision_head_width": 0}, "vision_head_width"),
    ({"surprise": 1}, "surprise"),
])
def test_safetensors_metadata_config_with_bad_values_names_the_field(tiny, tmp_path, change, field):
    config = {**model_config(tiny), **change}
    path = _with_metadata_config(tiny, tmp_path / "m.safetensors", json.dumps(config))
    with pytest.raises(CheckpointFormatError, match=f"m.safetensors: metadata 'clipforge_config': .*'{field}'"):
        load_checkpoint(path)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "[1, 2]", "{", '"' + "x" * 200_000 + '"'])
def test_safetensors_metadata_that_is_not_a_config_is_refused(tiny, tmp_path, text):
    path = _with_metadata_config(tiny, tmp_path / "m.safetensors", text)
    with pytest.raises(CheckpointFormatError, match="metadata 'clipforge_config'"):
        load_checkpoint(path)


def test_saved_preprocess_metadata_is_checked_too(tiny, tmp_path):
    path = save_safetensors(tiny, tmp_path / "m.safetensors", preprocess={"mean": [0.5, 0.5, 0.5],
                                                                          "std": [0.5, 0.5, 0.5]})
    assert load_checkpoint(path).preprocess["mean"] == [0.5, 0.5, 0.5]
    bad = save_safetensors(tiny, tmp_path / "bad.safetensors", preprocess={"std": [0, 1, 1]})
    with pytest.raises(CheckpointFormatError, match="'clipforge_preprocess' is invalid: field 'std'"):
        load_checkpoint(bad)


def _hf_folder(tiny, tmp_path: Path, edit) -> Path:
    folder = save_hf(tiny, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["text_config"].update(num_attention_heads=-2), "'transformer_heads'"),
    (lambda c: c["text_config"].update(num_attention_heads=0), "'transformer_heads'"),
    (lambda c: c["vision_config"].update(num_attention_heads=0), "'vision_config.num_attention_heads'"),
    (lambda c: c["vision_config"].update(num_attention_heads=-1), "'vision_config.num_attention_heads'"),
    (lambda c: c.update(text_config=[1, 2]), "'text_config' must be a JSON object"),
    (lambda c: c["vision_config"].update(layer_norm_eps="x"), "'vision_config.layer_norm_eps'"),
])
def test_hf_config_with_bad_values_names_the_field(tiny, tmp_path, edit, message):
    folder = _hf_folder(tiny, tmp_path, edit)
    with pytest.raises(CheckpointFormatError, match=message):
        load_checkpoint(folder)


def test_hf_config_that_is_not_an_object_or_too_deep_is_refused(tiny, tmp_path):
    folder = save_hf(tiny, tmp_path / "hf")
    for text, message in (("[1]", "must hold a JSON object"), ("[" * 100_000, "not valid JSON")):
        (folder / "config.json").write_text(text)
        with pytest.raises(CheckpointFormatError, match=message):
            load_checkpoint(folder)


def _short_deflated(archive: Path, out: Path) -> tuple[Path, int]:
    """`archive` rewritten with its first tensor entry deflated from half its bytes, and both zip
    headers then claiming the full size (the CRC is the half's, so zipfile's own check passes)."""
    import zipfile

    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data/0"):
                full = len(data)
                dst.writestr(info.filename, data[: full // 2], compress_type=zipfile.ZIP_DEFLATED)
            else:
                dst.writestr(info, data, compress_type=zipfile.ZIP_STORED)
    out.write_bytes(_claim_size(bytearray(out.read_bytes()), b"/data/0", full))
    return out, full


def test_a_deflated_entry_shorter_than_it_declares_is_refused_not_zero_padded(tiny, tmp_path):
    archive = _traced(tiny, tmp_path / "real.pt")
    hostile, full = _short_deflated(archive, tmp_path / "short.pt")
    with pytest.raises(CheckpointFormatError, match=rf"short\.pt: .*/data/0 holds {full // 2} bytes but declares {full}"):
        load_checkpoint(hostile)


def test_a_config_that_passes_its_field_checks_but_not_the_tensors_is_one_error(tiny, tmp_path):
    from clipforge.api import load_model

    config = {**model_config(tiny), "transformer_width": 64, "transformer_heads": 1}  # valid fields, wrong tensors
    path = _with_metadata_config(tiny, tmp_path / "m.safetensors", json.dumps(config))
    with pytest.raises(CheckpointFormatError, match=r"m\.safetensors: its tensors do not fit the architecture it "
                                                    r"records \(size mismatch for .*\)$") as info:
        load_model(path, "cpu")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("preprocess", [{"mean": [1e308, 0.5, 0.5]}, {"std": [1e-308, 0.5, 0.5]},
                                        {"mean": [-0.5, 0.5, 0.5]}, {"std": [1e6, 1, 1]}])
def test_preprocessing_metadata_out_of_range_is_refused(tiny, tmp_path, preprocess):
    path = save_safetensors(tiny, tmp_path / "p.safetensors", preprocess=preprocess)
    with pytest.raises(CheckpointFormatError, match=r"'clipforge_preprocess' is invalid: field '(mean|std)' must "
                                                    r"be 3 numbers in \["):
        load_checkpoint(path)
