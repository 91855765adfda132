"""A safetensors file listing more tensors than any CLIP is refused by its header alone (audit 64, finding 6).

A 69 MB file of 900,000 one-byte tensors cost 37 s and 1.5 GB of memory before "not a CLIP state dict": every
tensor was read (``get_tensor``), after the Chinese-CLIP probe had listed them all once. The largest CLIP
clipforge builds (RN50x64, its BatchNorm buffers counted) has 1,353 tensors, ViT-bigG-14 974 (about 1,300 in
transformers' layout), SigLIP 2 gopt 828: past 5,000 the file is refused, naming it and the count, before
safetensors parses its header (the count of ``"data_offsets"`` in its bytes), or, for a header written to hide
that count (escaped field names, entries as arrays), once safetensors has listed its names and before any tensor
is read. Every reader of safetensors goes through this: the generic loader, the Chinese-CLIP probe and its
``cn-ARCH:PATH`` form, Hugging Face and ChineseCLIPModel folders and their shards.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import safetensors

from clipforge.weights import CheckpointFormatError, load_checkpoint
from tests.weights.conftest import classify_error

TAIL = ("tensors, more than the 5,000 a checkpoint clipforge reads may hold (the largest CLIP clipforge builds, "
        "RN50x64, has 1,353): not a CLIP checkpoint")


def _many(path: Path, n: int, hidden: bool = False) -> Path:
    """A safetensors file of `n` one-byte tensors; `hidden`: its field names escaped and every other entry an array
    (what safetensors accepts, and a byte count of ``"data_offsets"`` does not see)."""
    entries = {}
    for i in range(n):
        if hidden and i % 2:
            entries[f"t{i}"] = ["U8", [1], [i, i + 1]]
        else:
            entries[f"t{i}"] = {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]}
    header = json.dumps(entries)
    if hidden:
        header = header.replace('"data_offsets"', '"data\\u005foffsets"')
    raw = header.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * n)
    return path


@pytest.fixture()
def opened(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often safetensors was opened and a tensor (or slice) read, by any reader, while the test ran."""
    counts = {"open": 0, "read": 0}
    real = safetensors.safe_open

    class Counted:
        def __init__(self, *args, **kwargs) -> None:
            counts["open"] += 1
            self.real = real(*args, **kwargs)

        def __enter__(self) -> Counted:
            self.handle = self.real.__enter__()
            return self

        def __exit__(self, *exc) -> object:
            return self.real.__exit__(*exc)

        def __getattr__(self, name: str) -> object:
            if name in ("get_tensor", "get_slice"):
                counts["read"] += 1
            return getattr(self.handle, name)

    monkeypatch.setattr(safetensors, "safe_open", Counted)
    return counts




@pytest.mark.parametrize("form", ["{}", "cn-ViT-B-16:{}", "ViT-B-32:{}"])
def test_a_file_of_too_many_tensors_is_refused_before_safetensors_opens_it(tmp_path, image, capsys, opened,
                                                                          form) -> None:
    path = _many(tmp_path / "many.safetensors", 6_000)
    assert classify_error(image, form.format(path), capsys) == f"error: {path}: its safetensors header lists 6,000 {TAIL}"
    assert opened == {"open": 0, "read": 0}


def test_a_header_hiding_its_count_is_refused_before_any_tensor_is_read(tmp_path, image, capsys, opened) -> None:
    path = _many(tmp_path / "hidden.safetensors", 6_000, hidden=True)
    assert classify_error(image, str(path), capsys) == f"error: {path}: its safetensors header lists 6,000 {TAIL}"
    assert opened["read"] == 0


@pytest.mark.parametrize("hidden", [False, True])
def test_a_folder_whose_model_safetensors_has_too_many_tensors_is_refused(tmp_path, opened, hidden) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    weights = _many(folder / "model.safetensors", 6_000, hidden)
    with pytest.raises(CheckpointFormatError) as raised:
        load_checkpoint(folder)
    assert str(raised.value) == f"{weights}: its safetensors header lists 6,000 {TAIL}"
    assert opened == ({"open": 1, "read": 0} if hidden else {"open": 0, "read": 0})  # hidden: listed once, not read


def test_a_chinese_clip_folder_whose_weights_have_too_many_tensors_is_refused(tmp_path, opened) -> None:
    from clipforge.api import load_model

    folder = tmp_path / "cn"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "chinese_clip"}))
    weights = _many(folder / "model.safetensors", 6_000, hidden=True)
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(str(folder), device="cpu")
    assert str(raised.value) == f"{weights}: its safetensors header lists 6,000 {TAIL}"
    assert opened["read"] == 0


def test_shards_of_too_many_tensors_in_all_are_refused(tmp_path, opened) -> None:
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    for shard in ("a.safetensors", "b.safetensors"):
        _many(folder / shard, 3_000)
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"t0": "a.safetensors", "t1": "b.safetensors"}}))
    with pytest.raises(CheckpointFormatError) as raised:
        load_checkpoint(folder)
    assert str(raised.value) == f"{index}: the shards it names hold 6,000 {TAIL}"


def test_an_index_naming_too_many_tensors_is_refused_before_any_shard_is_read(tmp_path, opened) -> None:
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {f"t{i}": "a.safetensors" for i in range(5_001)}}))
    with pytest.raises(CheckpointFormatError) as raised:
        load_checkpoint(folder)
    assert str(raised.value) == f"{index}: its weight_map lists 5,001 {TAIL}"
    assert opened == {"open": 0, "read": 0}


def test_a_file_at_the_bound_is_read_as_before(tmp_path) -> None:
    """5,000 tensors are read (and then refused as no CLIP, by the loader's own rule)."""
    path = _many(tmp_path / "bound.safetensors", 5_000)
    from clipforge.weights.safetensors_file import read_safetensors

    tensors, _ = read_safetensors(path)
    assert len(tensors) == 5_000
