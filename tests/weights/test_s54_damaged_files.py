"""Checkpoints that are cut short, empty, or a web page saved under the weights' name are named for what
they are, in one `CheckpointFormatError` line with the sizes that prove it (session 54).

Before: a safetensors file cut inside its header whose length byte happened to be 0x80 was taken for a
legacy pickle; `clipforge classify --model cut.safetensors` ended in a SafetensorError traceback, and the
same bytes downloaded as ``*.partial`` were refused as a pickle referencing "the forbidden global 'an
unsupported global'" (a false alarm about code execution); a Chinese-CLIP download answered with an
HTML page said "mmap can only be used with files saved with torch.save(...)".
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from clipforge.weights import CheckpointFormatError, load_checkpoint
from clipforge.weights.errors import UnsafeCheckpointError

_HTML = b"<!DOCTYPE html><html><body>Access denied</body></html>\n"


def _header_0x80(tmp_path: Path) -> bytes:
    """A small safetensors file whose 8-byte header length starts with the byte 0x80 (pickle's PROTO opcode)."""
    tensors = {"visual.proj": torch.zeros(4, 4)}
    for pad in range(400):
        path = tmp_path / "whole.safetensors"
        save_file(tensors, str(path), metadata={"pad": "x" * pad})
        data = path.read_bytes()
        if data[0] == 0x80:
            return data
    raise AssertionError("no padding gave a header length whose first byte is 0x80")


@pytest.mark.parametrize("name", ["cut.safetensors", "cut.safetensors.partial", "cut.pt"])
def test_a_safetensors_file_cut_inside_its_header_is_cut_short_not_a_pickle(
    tmp_path: Path, name: str
) -> None:
    data = _header_0x80(tmp_path)
    (header_len,) = struct.unpack("<Q", data[:8])
    path = tmp_path / name
    path.write_bytes(data[:100])
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path} is cut short: a safetensors file whose header alone is {header_len + 8:,} "
        "bytes, but the file has 100 (an interrupted download or copy?): fetch or copy it again"
    )


def test_a_safetensors_file_cut_in_its_tensors_gives_both_sizes(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"visual.proj": torch.zeros(64, 64)}, str(path))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 1000])
    with pytest.raises(
        CheckpointFormatError,
        match=rf"^{path} is cut short: its safetensors header describes "
        rf"{len(whole):,} bytes, but the file has {len(whole) - 1000:,} ",
    ):
        load_checkpoint(path)


def test_a_torch_zip_without_its_end_is_cut_short(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"visual.proj": torch.zeros(64, 64)}, buffer)
    path = tmp_path / "model.pt"
    path.write_bytes(buffer.getvalue()[:5000])
    assert zipfile.is_zipfile(io.BytesIO(buffer.getvalue()))
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path} is cut short: a zip archive (torch.save's format) of 5,000 bytes without its "
        "end, the central directory (an interrupted download or copy?): fetch or copy it again"
    )


def test_damaged_pickle_bytes_are_not_called_a_pickle_that_runs_code(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02garbage that no unpickler reads" * 3)
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert not isinstance(err.value, UnsafeCheckpointError)
    message = str(err.value)
    assert message.startswith(
        f"cannot read {path} as a PyTorch checkpoint: its pickle data is damaged or not a pickle ("
    )
    assert "\n" not in message and "weights_only` set to `False`" not in message and "global" not in message


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            _HTML,
            f"is a web page ({len(_HTML)} bytes), not weights: a server's answer (an error, a login or a redirect "
            "page) saved in place of the file",
        ),
        (b"", "is empty (0 bytes) (an interrupted download or copy?): fetch or copy it again"),
        (json.dumps({"error": "Repository not found"}).encode(), "is JSON text (33 bytes), not weights"),
    ],
)
def test_a_page_or_an_empty_file_is_named_for_what_it_is(tmp_path: Path, body: bytes, said: str) -> None:
    path = tmp_path / "ViT-B-32.pt"
    path.write_bytes(body)
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path} {said}")


def test_chinese_clip_download_check_names_a_web_page(tmp_path: Path) -> None:
    from clipforge.weights.cn_clip import check_cn_architecture

    path = tmp_path / "clip_cn_rn50.pt.partial"
    path.write_bytes(_HTML)
    with pytest.raises(CheckpointFormatError) as err:
        check_cn_architecture(path, "cn-RN50")
    assert str(err.value) == (
        f"clip_cn_rn50.pt.partial does not hold cn-RN50 weights: {path} is a web page "
        f"({len(_HTML)} bytes), not weights: a server's answer (an error, a login or a redirect "
        "page) saved in place of the file"
    )


def test_the_command_line_says_cut_short_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from clipforge.cli.main import main

    image = tmp_path / "猫.png"
    Image.new("RGB", (8, 8)).save(image)
    model = tmp_path / "截断.safetensors"
    model.write_bytes(_header_0x80(tmp_path)[:100])
    assert main(["classify", str(image), "--labels", "猫,狗", "--model", str(model), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {model} is cut short: ") and err.count("\n") == 1
