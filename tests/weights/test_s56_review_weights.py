"""Review of session 56's weight loading (``cn-ARCH:PATH``, `unwrap`/`tensor_dict`, the readers' one-line refusals).

Each test is an attack that failed on the commit under review:

- a state dict entry named by a huge key (a tuple of 100,000 ints, a million-character string) and a config.json
  field holding a 100,000-int list were printed whole (0.7-1 MB "one line");
- a Chinese-CLIP file whose ``text_projection`` is a list was said to hold "'bert.embeddings.word_embeddings.weight'
  is a Tensor, not a tensor" (the first marking name, not the odd one);
- a shard index whose ``weight_map`` maps a name to a list, or to a number beside file names, was a TypeError
  traceback from ``sorted(set(...))``;
- ``cn-ARCH:`` (nothing after the colon; ``pretrained=""``) read the current directory as the checkpoint;
- ``cn-ARCH:.`` and ``cn-ARCH:link.pt`` named the model ``cn-ARCH:`` and ``cn-ARCH:link.pt`` where ``ARCH:PATH``
  names it after the resolved file;
- a torch zip whose deflated member inflates ~1000:1 was inflated in memory by every reader but the generic
  loader's (``cn-ARCH:PATH``, a transformers folder's pytorch_model.bin): `check_zip_sizes` now runs in the one
  safe reader;
- a FIFO given as a checkpoint path blocked for ever (the fingerprint's file sample and the reader opened it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from clipforge.api import load_model
from clipforge.cli.main import main
from clipforge.weights import CheckpointFormatError

_ARCH = "cn-test-tiny"
_EXPECTED_SD = "expected a state dict (wrappers tried: state_dict, model, model_state_dict, module)"


@pytest.fixture()
def tiny(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A cn_clip checkpoint of `_ARCH` (a 64-wide one-layer ViT and BERT), `_ARCH` registered for the test."""
    from clipforge.models import chinese_configs
    from clipforge.models.chinese_clip import create_chinese_clip

    monkeypatch.setitem(chinese_configs.CN_TEXT_TOWERS, "test-bert-tiny", {
        "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128})
    monkeypatch.setitem(chinese_configs.CHINESE_CLIP_CONFIGS, _ARCH, {
        "embed_dim": 32, "image_resolution": 32, "vision_layers": 1, "vision_width": 64, "vision_patch_size": 16,
        "vision_head_width": 32, "text": "test-bert-tiny"})
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": create_chinese_clip(_ARCH).state_dict()}, path)
    return path


def _refusal(spec: str) -> str:
    with pytest.raises(CheckpointFormatError) as caught:
        load_model(spec, device="cpu")
    return str(caught.value)


def test_a_huge_entry_name_is_said_briefly(tmp_path: Path) -> None:
    named_by_tuple, named_by_text = tmp_path / "tuple.pt", tmp_path / "text.pt"
    torch.save({tuple(range(100_000)): torch.zeros(2)}, named_by_tuple)
    torch.save({"k" * 1_000_000: [1, 2]}, named_by_text)
    assert _refusal(str(named_by_tuple)) == (
        f"{named_by_tuple}: entry (0, 1, 2, 3, 4, 5, ...) is named by a tuple, not a string; {_EXPECTED_SD}")
    assert _refusal(f"ViT-B-32:{named_by_text}") == (
        f"{named_by_text}: entry '{'k' * 37}...{'k' * 38}' is a list, not a tensor; {_EXPECTED_SD}")


def test_a_marking_name_that_holds_no_tensor_is_the_one_named(tmp_path: Path) -> None:
    path = tmp_path / "cn.pt"
    torch.save({"state_dict": {"bert.embeddings.word_embeddings.weight": torch.zeros(4, 2),
                               "text_projection": list(range(1000))}}, path)
    assert _refusal(f"cn-ViT-B-16:{path}") == (
        f"{path} does not hold cn-ViT-B-16 weights: not a Chinese-CLIP checkpoint: its 'text_projection' is a "
        "list, not a tensor")


@pytest.mark.parametrize(("model_type", "config", "said"), [
    ("chinese_clip", {"vision_config": {"num_attention_heads": list(range(100_000))}},
     "field 'vision_config.num_attention_heads' must be a positive whole number, got [0, 1, 2, 3, 4, 5, ...]"),
    ("clip", {"text_config": {"layer_norm_eps": "e" * 100_000}},
     f"field 'text_config.layer_norm_eps' is '{'e' * 37}...{'e' * 38}'; clipforge uses 1e-5"),
])
def test_a_huge_config_value_is_said_briefly(tiny: Path, tmp_path: Path, model_type: str, config: dict,
                                            said: str) -> None:
    from clipforge.weights.cn_clip import save_chinese_hf
    from clipforge.weights.hf import save_hf

    folder = tmp_path / "folder"
    if model_type == "chinese_clip":  # a whole (tiny) ChineseCLIPModel folder, its config then spoiled
        save_chinese_hf(load_model(str(tiny)).model, folder)
    else:
        save_hf(load_model("random:test-vit-tiny", device="cpu").model, folder)
    base = json.loads((folder / "config.json").read_text())
    for key, value in config.items():
        base[key] = {**base.get(key, {}), **value}
    (folder / "config.json").write_text(json.dumps(base))
    message = _refusal(str(folder))
    assert message.endswith(said) and len(message) < 400


@pytest.mark.parametrize("weight_map", [{"a": ["x.bin"]}, {"a": "x.bin", "b": 3}])
def test_a_shard_index_naming_no_file_is_one_line(tmp_path: Path, capsys, weight_map: dict) -> None:
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    image = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    assert main(["classify", str(image), "--labels", "a,b", "--model", str(folder), "-q"]) == 2
    assert capsys.readouterr().err == (
        f"error: {folder / 'pytorch_model.bin.index.json'} must hold a JSON object with a 'weight_map' object "
        "(tensor names to shard files)\n")


def test_nothing_after_the_colon_reads_no_directory(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clipforge.weights.cn_clip import save_chinese_hf

    folder = save_chinese_hf(load_model(str(tiny)).model, tiny.parent / "folder")
    monkeypatch.chdir(folder)  # a ChineseCLIPModel folder: what "cn-ARCH:" read
    said = (f"model '{_ARCH}:' names no file or tag after the colon: pass {_ARCH} for its registry weights or "
            f"{_ARCH}:PATH for a Chinese-CLIP checkpoint or ChineseCLIPModel folder")
    for spec, pretrained in ((f"{_ARCH}:", None), (_ARCH, ""), (f"{_ARCH}: ", None)):
        with pytest.raises(ValueError) as caught:
            load_model(spec, device="cpu", pretrained=pretrained)
        assert str(caught.value) == said.replace(f"'{_ARCH}:'", repr(spec if pretrained is None else spec + ":"))


def test_the_name_is_that_of_the_resolved_file(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clipforge.weights.cn_clip import save_chinese_hf

    folder = save_chinese_hf(load_model(str(tiny)).model, tiny.parent / "folder")
    (tiny.parent / "link.pt").symlink_to(tiny)
    monkeypatch.chdir(folder)
    assert load_model(f"{_ARCH}:.").name == f"{_ARCH}:folder"
    assert load_model(f"{_ARCH}:{tiny.parent / 'link.pt'}").name == f"{_ARCH}:tiny.pt"


def _inflating_zip(path: Path) -> Path:
    """A torch zip whose data.pkl (``{}``, then 64 MiB of zeros torch reads and ignores) is deflated ~1000:1."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00." + bytes(64 << 20))
        archive.writestr("archive/version", "3\n")
    path.write_bytes(buf.getvalue())
    return path


def test_an_inflating_member_is_refused_by_every_reader(tmp_path: Path) -> None:
    bomb = _inflating_zip(tmp_path / "bomb.pt")
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "chinese_clip"}))
    inner = _inflating_zip(folder / "pytorch_model.bin")
    size = bomb.stat().st_size
    said = f": zip entry 'archive/data.pkl' declares {(64 << 20) + 6} bytes ("
    for spec, named in ((f"cn-ViT-B-16:{bomb}", bomb), (str(folder), inner), (f"cn-ViT-B-16:{folder}", inner)):
        message = _refusal(spec)
        assert said in message and message.endswith(f" compressed) but the file holds {size} bytes; refusing to "
                                                     "read it") and str(named) in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("spec", ["{}", "ViT-B-32:{}", "cn-ViT-B-16:{}", "shard.bin", "shard.safetensors"])
def test_a_fifo_is_refused_at_once(tmp_path: Path, spec: str) -> None:
    if spec.startswith("shard"):  # a Hugging Face folder whose index names the FIFO as its shard
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
        index = "model.safetensors.index.json" if spec.endswith(".safetensors") else "pytorch_model.bin.index.json"
        (tmp_path / index).write_text(json.dumps({"weight_map": {"logit_scale": spec}}))
        fifo, spec = tmp_path / spec, str(tmp_path)
    else:
        fifo, spec = tmp_path / "weights.pt", spec.format(tmp_path / "weights.pt")
    os.mkfifo(fifo)
    if fifo.suffix == ".safetensors":  # safetensors reads holding the GIL: a blocked read would stall this process
        _refused_in_a_process(spec, fifo)
        return
    got: list[BaseException | None] = []

    def load() -> None:
        try:
            load_model(spec, device="cpu")
            got.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test's thread
            got.append(err)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(10)
    blocked = reader.is_alive()
    if blocked:  # open the other end (if a reader waits on it) so the reader sees end of file; the thread is a daemon
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(2)
    assert not blocked, "a FIFO given as a checkpoint blocked the loader"
    assert isinstance(got[0], CheckpointFormatError) and "\n" not in str(got[0])
    assert fifo.name in str(got[0])


def _refused_in_a_process(spec: str, fifo: Path) -> None:
    """`load_model(spec)` in a child process that must say one line naming `fifo` within 60 s."""
    import subprocess
    import sys

    code = ("from clipforge.api import load_model\nfrom clipforge.weights import CheckpointFormatError\n"
            f"try:\n    load_model({spec!r}, device='cpu')\nexcept CheckpointFormatError as err:\n    print(err)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("a FIFO given as a checkpoint blocked the loader")
    assert done.returncode == 0 and done.stdout.count("\n") == 1 and fifo.name in done.stdout, done.stderr[-2000:]
