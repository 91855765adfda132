"""A pickle naming a forbidden global is refused as unsafe, never described as damage (review of session 55).

Session 55 turned what torch's weights-only unpickler raises on bytes it cannot follow (IndexError, KeyError,
TypeError, AttributeError, struct.error: "pop from empty list") into a one-line CheckpointFormatError, after
scanning the pickle for forbidden globals. These tests put such a slip in front of a malicious pickle at every
protocol, in a legacy file and in a torch zip, memory-mapped or not: the forbidden global is named each time.

Found in review: the scan read the first zip member whose name merely *ends* in ``data.pkl`` (``xdata.pkl``),
and of two members named ``archive/data.pkl`` the last (zipfile's choice) while torch reads the first; a
malicious ``data.pkl`` behind such a decoy was reported as "damaged or not a pickle". Every member named
``data.pkl`` is now scanned.

Nothing here may run: the forbidden global is ``<a module written here>.touch``, whose call would only create
a marker file, and every test checks that the marker does not exist.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import zipfile
from pathlib import Path

import pytest

from clipforge.weights.errors import CheckpointFormatError, UnsafeCheckpointError
from clipforge.weights.torch_pickle import torch_load_safely

_MODULE = "s55_review_marker"
_GLOBAL = f"{_MODULE}.touch"
_SLIPS = {  # bytes torch's weights-only unpickler takes as opcodes, then fails on with no UnpicklingError
    "TUPLE1 on an empty stack (IndexError)": b"\x85",
    "BINGET of an empty memo (KeyError)": b"h\x07",
    "SETITEM on an empty stack (IndexError)": b"s",
    "BINPUT on an empty stack (IndexError)": b"q\x00",
}


@pytest.fixture()
def evil(marker_pickler) -> tuple[type, Path]:
    """(a class whose pickle calls ``s55_review_marker.touch(marker)``, the marker), the module on sys.path."""
    return marker_pickler(_MODULE)


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, body in members:
            archive.writestr(name, body)
    return out.getvalue()


def _torch_zip(data_pkl: bytes) -> bytes:
    return _zip([("archive/data.pkl", data_pkl), ("archive/byteorder", b"little"), ("archive/version", b"3\n")])


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("slip", list(_SLIPS))
@pytest.mark.parametrize("container", ["legacy", "zip"])
def test_a_slip_before_a_forbidden_global_is_refused_as_unsafe(evil, tmp_path: Path, protocol: int, slip: str,
                                                                container: str) -> None:
    cls, marker = evil
    data = b"\x80\x02" + _SLIPS[slip] + pickle.dumps({"visual.proj": cls()}, protocol=protocol)
    path = tmp_path / "evil.pt"
    path.write_bytes(data if container == "legacy" else _torch_zip(data))
    for mmap in (False, True):
        with pytest.raises(UnsafeCheckpointError) as caught:
            torch_load_safely(path, mmap=mmap)
        assert caught.value.forbidden == _GLOBAL
    assert not marker.exists()


@pytest.mark.parametrize("slip", list(_SLIPS))
def test_a_slip_alone_is_damage_in_one_line(tmp_path: Path, slip: str) -> None:
    path = tmp_path / "damaged.pt"
    path.write_bytes(b"\x80\x02" + _SLIPS[slip] + pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointFormatError) as caught:
        torch_load_safely(path)
    message = str(caught.value)
    assert message.startswith(f"cannot read {path} as a PyTorch checkpoint: its pickle data is damaged or not a "
                              "pickle (")
    assert "\n" not in message


@pytest.mark.parametrize("layout", ["a decoy xdata.pkl listed first", "two data.pkl, the malicious one first"])
def test_a_malicious_data_pkl_behind_a_decoy_member_is_refused_as_unsafe(evil, tmp_path: Path, layout: str) -> None:
    """torch reads ``archive/data.pkl`` (the first of two such names); the scan read ``xdata.pkl``, or zipfile's
    last ``data.pkl``, and called the file damaged."""
    cls, marker = evil
    malicious = b"\x80\x02\x85" + pickle.dumps({"visual.proj": cls()}, protocol=2)
    decoy = pickle.dumps({"visual.proj": 1}, protocol=2)
    first = ("archive/xdata.pkl", decoy) if layout.startswith("a decoy") else ("archive/data.pkl", malicious)
    second = ("archive/data.pkl", malicious) if layout.startswith("a decoy") else ("archive/data.pkl", decoy)
    path = tmp_path / "evil.pt"
    with pytest.warns(UserWarning, match="Duplicate name") if first[0] == second[0] else contextlib.nullcontext():
        path.write_bytes(_zip([first, second, ("archive/byteorder", b"little"), ("archive/version", b"3\n")]))
    with pytest.raises(UnsafeCheckpointError) as caught:
        torch_load_safely(path)
    assert caught.value.forbidden == _GLOBAL
    assert not marker.exists()
