"""Malicious pickles stay refused as malicious after session 54's "damaged or not a pickle" classification.

Why: torch's weights-only reader stops at the first opcode it does not take. For ``pickle.dumps`` at
protocol 4 or 5 (Python's default) that is FRAME, before any global; session 54 read "no global named"
as damage, so a pickle built to run ``os.system`` was described as "damaged or not a pickle", as was one
whose head also reads as a cut safetensors header and a torch zip cut short around a malicious
``data.pkl``. The pickle's opcodes are now read (never run) to name the global. None of these may run
code: each global here would create a marker file.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from clipforge.weights import CheckpointFormatError, load_checkpoint
from clipforge.weights.errors import UnsafeCheckpointError

_SYSTEM = f"{os.system.__module__}.system"


def _evil(marker: Path, protocol: int) -> bytes:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return pickle.dumps({"visual.proj": Evil()}, protocol=protocol)


def _refused(path: Path, marker: Path) -> UnsafeCheckpointError:
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_checkpoint(path)
    assert not marker.exists()
    return caught.value


@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("cut", [0, 3])
def test_protocol_4_and_5_pickles_name_their_global(tmp_path: Path, protocol: int, cut: int) -> None:
    marker = tmp_path / "ran"
    data = _evil(marker, protocol)
    path = tmp_path / "evil.pt"
    path.write_bytes(data[: len(data) - cut])  # whole, and cut after the global
    assert _refused(path, marker).forbidden == _SYSTEM


def test_pickle_dressed_as_cut_safetensors_is_refused_as_a_pickle(tmp_path: Path) -> None:
    """Bytes 0-7 read as a header length under 100 MB and byte 8 is "{": a cut safetensors file at a glance."""
    marker = tmp_path / "ran"
    payload = f"touch {marker}".encode()
    data = (
        b"\x80\x02X\x05\x00\x00\x00\x00{abc0"
        + f"c{os.system.__module__}\nsystem\n".encode()
        + b"X"
        + len(payload).to_bytes(4, "little")
        + payload
        + b"\x85R."
    )
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    assert _refused(path, marker).forbidden == _SYSTEM


def _evil_zip(marker: Path, protocol: int) -> bytes:
    buffer = io.BytesIO()
    torch.save({"visual.proj": torch.zeros(2)}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            target.writestr(info, _evil(marker, protocol) if info.filename.endswith("data.pkl") else data)
    return out.getvalue()


@pytest.mark.parametrize("protocol", [2, 4])
def test_torch_zip_cut_short_around_a_malicious_pickle_is_refused(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "ran"
    data = _evil_zip(marker, protocol)
    path = tmp_path / "model.pt"
    path.write_bytes(data[: len(data) // 2])  # no central directory: torch cannot open the archive
    assert _refused(path, marker).forbidden == _SYSTEM


def test_whole_torch_zip_with_protocol_4_pickle_names_the_global(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    path.write_bytes(_evil_zip(marker, 4))
    assert _refused(path, marker).forbidden == _SYSTEM


def test_protocol_4_pickle_of_plain_data_is_no_security_alarm(tmp_path: Path) -> None:
    """No global at all: refused as unreadable, never as a pickle that runs code."""
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"visual.proj": [1.0, 2.0]}, protocol=4))
    with pytest.raises(CheckpointFormatError) as caught:
        load_checkpoint(path)
    assert not isinstance(caught.value, UnsafeCheckpointError)
    assert str(caught.value).startswith(
        f"cannot read {path} as a PyTorch checkpoint: its pickle uses protocol 4"
    )


def test_legacy_file_whose_later_pickle_is_malicious_is_refused(tmp_path: Path) -> None:
    """torch's legacy layout: a valid protocol-2 magic-number pickle first, the state dict's pickle after it."""
    marker = tmp_path / "ran"
    path = tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + _evil(marker, 4))
    assert _refused(path, marker).forbidden == _SYSTEM


def test_legacy_file_cut_inside_a_global_is_no_security_alarm(tmp_path: Path) -> None:
    """torch reads a GLOBAL cut inside its name as "GLOBAL ." and refuses it: that was reported as "the
    forbidden global '.'", a false alarm about code on a half-copied `torch.save` file."""
    buffer = io.BytesIO()
    torch.save({"positional_embedding": torch.zeros(2)}, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    path = tmp_path / "legacy.pt"
    path.write_bytes(data[: data.index(b"ctorch\n") + 2])
    with pytest.raises(CheckpointFormatError) as caught:
        load_checkpoint(path)
    assert not isinstance(caught.value, UnsafeCheckpointError)
    assert str(caught.value) == (
        f"cannot read {path} as a PyTorch checkpoint: its pickle data is damaged or not a pickle "
        "(it ends inside a global's name)"
    )


def test_whole_protocol_4_torch_save_is_named_for_its_protocol(tmp_path: Path) -> None:
    """Not damage and not code: `torch.save(..., pickle_protocol=4)` writes FRAME opcodes that torch's
    weights-only reader stops at."""
    path = tmp_path / "model.pt"
    torch.save({"visual.proj": torch.zeros(2)}, path, pickle_protocol=4)
    with pytest.raises(CheckpointFormatError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (
        f"cannot read {path} as a PyTorch checkpoint: its pickle uses protocol 4 or later, which torch's "
        "weights-only reader does not take; save it again with torch.save's default protocol"
    )
