"""Chinese-CLIP's readers refuse an unsafe or damaged file with the generic loader's one line (session 55).

Before: `check_cn_architecture` (the check of a downloaded cn_clip file) and the Chinese-CLIP load hook
(`cn_clip_load`: registry ``cn-*`` weights from the cache, transformers folders) called
``torch.load(weights_only=True, mmap=True)`` themselves. A pickle naming ``os.system`` ended in torch's
several-line "Weights only load failed ..." (with its advice to set ``weights_only=False``), a torch zip
cut short in "PytorchStreamReader failed reading zip archive" out of `clipforge classify` as a traceback.
Now they read through `torch_load_safely` (with its new ``mmap`` option), which names the forbidden
global or the damage.

The malicious pickles are built by hand from opcodes: ``os.system`` is named, never imported or called
here; were any reader to run it, it would only create a marker file in the test's folder, and every test
checks that the marker does not exist.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from clipforge.weights import CheckpointFormatError, load_checkpoint
from clipforge.weights.errors import UnsafeCheckpointError

_SYSTEM = f"{os.system.__module__}.system"
_FILE = "OFA-Sys--chinese-clip-rn50--clip_cn_rn50.pt"  # cn-RN50's name in the download cache


def _evil_pickle(marker: Path) -> bytes:
    """Protocol 2: PROTO, GLOBAL os.system, a str argument, TUPLE1, REDUCE, STOP (a call of os.system)."""
    payload = f"touch {marker}".encode()
    return (b"\x80\x02" + f"c{os.system.__module__}\nsystem\n".encode() + b"X" + len(payload).to_bytes(4, "little")
            + payload + b"\x85R.")


def _torch_zip(data_pkl: bytes | None = None) -> bytes:
    """A `torch.save` zip of a cn_clip-shaped dict, its ``data.pkl`` replaced by `data_pkl` when given."""
    buffer = io.BytesIO()
    torch.save({"state_dict": {"module.text_projection": torch.zeros(4, 2)}}, buffer)
    if data_pkl is None:
        return buffer.getvalue()
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            body = data_pkl if info.filename.endswith("data.pkl") else source.read(info.filename)
            target.writestr(info, body)
    return out.getvalue()


def _generic(path: Path) -> CheckpointFormatError | UnsafeCheckpointError:
    """What the generic loader (`load_checkpoint`) raises for `path`: the line every reader must give."""
    with pytest.raises((CheckpointFormatError, UnsafeCheckpointError)) as caught:
        load_checkpoint(path)
    return caught.value


def _bad_files(tmp_path: Path) -> dict[str, bytes]:
    marker = tmp_path / "ran"
    whole = _torch_zip()
    return {
        "malicious zip": _torch_zip(_evil_pickle(marker)),
        "malicious legacy pickle": _evil_pickle(marker),
        "zip cut short": whole[: len(whole) // 2],
    }


@pytest.mark.parametrize("kind", ["malicious zip", "malicious legacy pickle", "zip cut short"])
def test_download_check_gives_the_generic_refusal(tmp_path: Path, kind: str) -> None:
    from clipforge.weights.cn_clip import check_cn_architecture
    from clipforge.weights.loading import check_architecture

    path = tmp_path / f"{_FILE}.partial"
    path.write_bytes(_bad_files(tmp_path)[kind])
    generic = _generic(path)
    with pytest.raises((CheckpointFormatError, UnsafeCheckpointError)) as caught:
        check_architecture(path, "cn-RN50")  # what the downloader's `verify` calls
    error = caught.value
    assert type(error) is type(generic)
    if isinstance(generic, UnsafeCheckpointError):  # the refusal itself, word for word
        assert str(error) == str(generic)
        assert generic.forbidden == _SYSTEM
    else:  # the loader's line, saying which check it failed
        assert str(error) == f"{path.name} does not hold cn-RN50 weights: {generic}"
    assert "\n" not in str(error) and not (tmp_path / "ran").exists()
    with pytest.raises(type(generic)):
        check_cn_architecture(path, "cn-RN50")


@pytest.mark.parametrize("kind", ["malicious zip", "malicious legacy pickle", "zip cut short"])
def test_cached_registry_file_gives_the_generic_refusal_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """A cn-RN50 file in the cache, accepted earlier (its ``.sha256`` record matches) and then replaced
    together with its record: `clipforge classify --model cn-RN50` reads it through the hook's strict read."""
    from PIL import Image

    from clipforge.cli.main import main
    from clipforge.weights.download import sha256_file

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("CLIPFORGE_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: no download happens
    path = cache / _FILE
    path.write_bytes(_bad_files(tmp_path)[kind])
    (cache / f"{_FILE}.sha256").write_text(sha256_file(path) + "\n", encoding="ascii")
    image = tmp_path / "cat.png"
    Image.new("RGB", (8, 8)).save(image)
    generic = _generic(path)
    assert main(["classify", str(image), "--labels", "猫,狗", "--model", "cn-RN50", "-q"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {generic}\n"
    assert not (tmp_path / "ran").exists()


def test_transformers_folder_with_a_malicious_bin_gives_the_generic_refusal(tmp_path: Path) -> None:
    from clipforge.api import load_model

    folder = tmp_path / "chinese-clip"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "chinese_clip"}), encoding="utf-8")
    weights = folder / "pytorch_model.bin"
    weights.write_bytes(_torch_zip(_evil_pickle(tmp_path / "ran")))
    generic = _generic(weights)
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_model(folder, "cpu")
    assert str(caught.value) == str(generic) and caught.value.forbidden == _SYSTEM
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("kind", ["malicious zip", "malicious legacy pickle", "zip cut short"])
def test_a_file_given_by_path_gives_the_generic_refusal(tmp_path: Path, kind: str) -> None:
    from clipforge.api import load_model

    path = tmp_path / "clip_cn_rn50.pt"
    path.write_bytes(_bad_files(tmp_path)[kind])
    generic = _generic(path)
    with pytest.raises(type(generic)) as caught:
        load_model(path, "cpu")
    assert str(caught.value) == str(generic) and not (tmp_path / "ran").exists()


def test_mmap_maps_zip_files_and_reads_legacy_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mmap=True`` reaches torch.load for a zip (a multi-GB cn_clip file costs no memory to check); torch
    cannot map a legacy file, which is read whole instead of refused as "mmap can only be used ..."."""
    from clipforge.weights import torch_pickle

    state = {"state_dict": {"module.text_projection": torch.arange(8.0).reshape(4, 2)}}
    zipped, legacy = tmp_path / "zip.pt", tmp_path / "legacy.pt"
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    seen: list[bool] = []
    real = torch.load

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(bool(kwargs.get("mmap")))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch_pickle.torch, "load", spy)
    for path in (zipped, legacy):
        got = torch_pickle.torch_load_safely(path, mmap=True)
        assert torch.equal(got["state_dict"]["module.text_projection"], state["state_dict"]["module.text_projection"])
    torch_pickle.torch_load_safely(zipped)
    assert seen == [True, False, False]


def test_the_crafted_bytes_name_os_system() -> None:
    """The malicious bytes are what they claim: pickletools reads a GLOBAL of os.system (nothing is run)."""
    import pickletools

    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(_evil_pickle(Path("/nonexistent/ran")))]
    assert ("GLOBAL", f"{os.system.__module__} system") in ops and ops[-1][0] == "STOP"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"PK\x03\x04abc", "is cut short: a zip archive (torch.save's format) of 7 bytes without its end"),
        (b"saved by hand", "as a PyTorch checkpoint: its pickle data is damaged or not a pickle (pop from empty list)"),
    ],
)
def test_bytes_the_unpickler_trips_over_are_one_line(tmp_path: Path, body: bytes, said: str) -> None:
    """A zip header cut under 30 bytes raised struct.error out of the global scan, and "s" (SETITEM on an empty
    stack) an IndexError out of torch's unpickler: both were tracebacks from the reader of `pytorch_model.bin`."""
    from clipforge.weights.torch_pickle import torch_load_safely

    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(body)
    with pytest.raises(CheckpointFormatError) as caught:
        torch_load_safely(path, mmap=True)
    assert said in str(caught.value) and "\n" not in str(caught.value)


def test_download_check_names_bytes_that_are_no_torch_file(tmp_path: Path) -> None:
    from clipforge.weights.cn_clip import check_cn_architecture

    path = tmp_path / _FILE
    path.write_bytes(b"saved by hand")
    with pytest.raises(CheckpointFormatError) as caught:
        check_cn_architecture(path, "cn-RN50")
    assert str(caught.value) == (
        f"{_FILE} does not hold cn-RN50 weights: {path} is not a PyTorch checkpoint: torch.save writes a zip "
        "archive (or a legacy pickle), and its first bytes are neither"
    )


def test_torch_load_is_called_in_the_weights_layer_only_by_the_safe_reader() -> None:
    """The architecture as a test: every torch pickle the weights layer reads goes through `torch_load_safely`."""
    import ast

    import clipforge.weights

    def calls_torch_load(source: str) -> bool:
        return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                   and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                   for node in ast.walk(ast.parse(source)))

    folder = Path(clipforge.weights.__file__).parent
    assert sorted(p.name for p in folder.glob("*.py") if calls_torch_load(p.read_text("utf-8"))) == ["torch_pickle.py"]
