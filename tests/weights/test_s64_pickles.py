"""Torch pickles: a lying storage size said in words, and every file unpickled once (audit 64, findings 8 and 10).

8: a legacy pickle whose storage claims 5e9 elements was refused with torch's unformatted C template ("storage has
   wrong byte size: expected %ld got %ld1620000000000").
10: the Chinese-CLIP probe unpickled every ``.pt/.pth/.bin`` before the generic loader did it again, so torch's
   warnings (a protocol 4 pickle's) printed twice. The probe now reads the pickle's strings with `pickletools`
   (nothing imported or run) and unpickles only a file naming Chinese-CLIP's marking tensors.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from clipforge.cli.main import main


def _lying_legacy(path: Path) -> Path:
    """torch.save's legacy format of one 4-float tensor whose storage and view claim 5e9 elements."""
    buf = io.BytesIO()
    torch.save({"visual.proj": torch.zeros(4)}, buf, _use_new_zipfile_serialization=False)
    raw, big = buf.getvalue(), (5 * 10**9).to_bytes(5, "little")
    i = raw.index(b"K\x04N")
    raw = raw[:i] + b"\x8a\x05" + big + raw[i + 2:]
    j = raw.index(b"K\x00K\x04\x85")
    path.write_bytes(raw[:j] + b"K\x00\x8a\x05" + big + b"\x85" + raw[j + 5:])
    return path


def test_a_legacy_pickle_with_a_lying_storage_size_is_said_in_words(tmp_path, image, capsys) -> None:
    path = _lying_legacy(tmp_path / "huge.pt")
    assert main(["classify", image, "--labels", "a,b", "--model", str(path), "-q"]) == 2
    assert capsys.readouterr().err == (f"error: cannot read {path} as a PyTorch checkpoint: its storage sizes do not "
                                       "match its data (damaged or crafted)\n")


@pytest.fixture()
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file `torch.load` was asked to read while the test ran."""
    called: list[str] = []
    real = torch.load

    def counted(f, *args, **kwargs):
        called.append(str(f))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    return called


@pytest.mark.filterwarnings("ignore:tiny.pt is a plain state dict")
def test_a_plain_state_dict_is_unpickled_once(tmp_path, loads) -> None:
    from clipforge.api import load_model

    path = tmp_path / "tiny.pt"
    torch.save(load_model("random:test-vit-tiny", device="cpu").model.state_dict(), path)
    loads.clear()
    load_model(str(path), device="cpu")
    assert loads == [str(path)]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_a_refused_pickle_is_unpickled_once(tmp_path, loads) -> None:
    from clipforge.api import load_model
    from clipforge.weights import CheckpointFormatError

    path = tmp_path / "p4.pt"
    torch.save({"visual.proj": torch.zeros(2)}, path, pickle_protocol=4)
    with pytest.raises(CheckpointFormatError, match="protocol 4 or later"):
        load_model(str(path), device="cpu")
    assert loads == [str(path)]


def test_a_chinese_clip_looking_pickle_is_read_by_the_probe_alone(tmp_path, loads) -> None:
    """Its marking tensors make it Chinese-CLIP's: the probe reads it once and its refusal stands."""
    from clipforge.api import load_model
    from clipforge.weights import CheckpointFormatError

    path = tmp_path / "cn.pt"
    torch.save({"state_dict": {"module.bert.embeddings.word_embeddings.weight": torch.zeros(4, 2),
                               "module.text_projection": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointFormatError):
        load_model(str(path), device="cpu")
    assert loads == [str(path)]


def test_torch_warnings_print_once(tmp_path) -> None:
    path = tmp_path / "p4.pt"
    torch.save({"visual.proj": torch.zeros(2)}, path, pickle_protocol=4)
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    done = subprocess.run([sys.executable, "-m", "clipforge", "classify", str(image), "--labels", "a,b", "--model",
                           str(path), "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["warning", "error"], done.stderr
    assert lines[0].startswith("warning: Detected pickle protocol 4 in the checkpoint")
