"""The config and tokenizer files of a weights folder, read boundedly and only when regular (audit 64, 1, 2, 9).

1: Chinese-CLIP's probe parsed every folder's config.json with a bare ``json.loads``: a deeply nested one was a
   RecursionError traceback in every command (``--model ARCH:FOLDER``, which skips the probe, said one line).
2: the size limit of a config file was applied to what had been read whole (``read_text()[:limit]``): a 1.5 GB
   sparse config.json cost 3.3 GB of memory before its refusal; languages.json had no limit at all, tokenizer.json
   was ``read_bytes()``. Each is now read at most its limit (plus a byte) and refused past it in one line.
9: a folder member that is a FIFO or a device was taken as missing ("has config.json but no model.safetensors",
   "a directory without config.json") or silently passed over (tokenizer_config.json, preprocessor_config.json:
   the defaults used), and a spiece.model FIFO was "not found" at the first text. Each is named, one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image

from clipforge.weights import CheckpointFormatError
from tests.weights.conftest import classify_error

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


@pytest.fixture(scope="module")
def hf_good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test-vit-tiny as a Hugging Face CLIPModel folder (config.json, model.safetensors, preprocessor config)."""
    from clipforge.api import load_model
    from clipforge.weights import save_hf

    return save_hf(load_model("random:test-vit-tiny", device="cpu").model, tmp_path_factory.mktemp("hf") / "good")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("img") / "a.png"
    Image.new("RGB", (16, 16), (120, 30, 200)).save(path)
    return str(path)


def _copy(good: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "hf"
    shutil.copytree(good, folder)
    return folder



def _sparse(path: Path, size: int, text: str = "{}") -> Path:
    """`text`, then NUL bytes up to `size` (a sparse file: nothing of it on disk)."""
    path.write_text(text, encoding="utf-8")
    os.truncate(path, size)
    return path


def _peak(call) -> int:
    """The most memory Python allocated while `call()` ran (its exception, if any, swallowed)."""
    tracemalloc.start()
    with contextlib.suppress(Exception):  # only the memory is asked here
        call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


# ---- 1: a deeply nested config.json ------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["{}", "cn-ViT-B-16:{}", "ViT-B-32:{}"])
def test_a_deeply_nested_config_json_is_one_line_in_every_form(hf_good, tmp_path, image, capsys, spec) -> None:
    folder = _copy(hf_good, tmp_path)
    (folder / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    line = classify_error(image, spec.format(folder), capsys)
    assert line.startswith(f"error: {folder / 'config.json'} is not valid JSON: maximum recursion depth exceeded "), line


# ---- 2: sizes bounded before the read ----------------------------------------------------------------------

MB64 = 64 << 20  # a sparse 64 MiB file: what HEAD read whole (and decoded) before slicing it


def test_a_huge_config_json_is_refused_by_its_size_without_reading_it(hf_good, tmp_path, image, capsys) -> None:
    folder = _copy(hf_good, tmp_path)
    config = _sparse(folder / "config.json", MB64, (hf_good / "config.json").read_text())
    assert classify_error(image, str(folder), capsys) == (
        f"error: {config}: file is 67.1 MB, larger than the 1.0 MB read at most")
    from clipforge.weights.errors import json_object

    assert _peak(lambda: json_object(config)) < 4 << 20


def test_a_huge_preprocessor_config_is_refused_by_its_size(hf_good, tmp_path, image, capsys) -> None:
    folder = _copy(hf_good, tmp_path)
    config = _sparse(folder / "preprocessor_config.json", MB64)
    assert classify_error(image, str(folder), capsys) == (
        f"error: {config}: file is 67.1 MB, larger than the 1.0 MB read at most")
    from clipforge.weights.hf_preprocess import read_hf_preprocess

    assert _peak(lambda: read_hf_preprocess(folder)) < 4 << 20


def test_a_huge_sharded_index_is_refused_by_its_size(hf_good, tmp_path, capsys) -> None:
    from clipforge.weights.hf import read_hf_directory

    folder = _copy(hf_good, tmp_path)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    index = _sparse(folder / "model.safetensors.index.json", MB64)
    with pytest.raises(CheckpointFormatError) as raised:
        read_hf_directory(folder)
    assert str(raised.value) == f"{index}: file is 67.1 MB, larger than the 10.0 MB read at most"
    assert _peak(lambda: read_hf_directory(folder)) < 4 << 20


def test_a_huge_languages_json_is_passed_over_without_reading_it(tmp_path) -> None:
    from clipforge.weights.save import recorded_languages

    (tmp_path / "languages.json").write_text(json.dumps({"languages": ["zh", "en"]}))
    assert recorded_languages(tmp_path) == ("zh", "en")
    _sparse(tmp_path / "languages.json", MB64, json.dumps({"languages": ["zh", "en"]}))
    assert recorded_languages(tmp_path) is None
    assert _peak(lambda: recorded_languages(tmp_path)) < 4 << 20
    (tmp_path / "languages.json").write_text("[" * 200_000 + "]" * 200_000)  # was a RecursionError traceback
    assert recorded_languages(tmp_path) is None


def test_a_huge_tokenizer_json_is_refused_by_its_size(tmp_path) -> None:
    pytest.importorskip("tokenizers")
    from clipforge.weights.hf_siglip_folder import folder_tokenizer

    tokenizer = _sparse(tmp_path / "tokenizer.json", 101 << 20)
    with pytest.raises(CheckpointFormatError) as raised:
        folder_tokenizer(tmp_path, None, 1000)
    assert str(raised.value) == f"{tokenizer}: file is 105.9 MB, larger than the 100.0 MB read at most"
    assert _peak(lambda: folder_tokenizer(tmp_path, None, 1000)) < 4 << 20


def test_a_huge_tokenizer_config_json_is_refused_by_its_size(tmp_path) -> None:
    from clipforge.weights.hf_siglip_folder import folder_tokenizer

    config = _sparse(tmp_path / "tokenizer_config.json", MB64)
    with pytest.raises(CheckpointFormatError) as raised:
        folder_tokenizer(tmp_path, None, 1000)
    assert str(raised.value) == f"{config}: file is 67.1 MB, larger than the 5.0 MB read at most"
    assert _peak(lambda: folder_tokenizer(tmp_path, None, 1000)) < 4 << 20


def test_config_files_of_real_sizes_still_load(hf_good, tmp_path) -> None:
    """A config.json of 0.9 MB (padding whitespace) is read as before: the bounds are far above real files."""
    from clipforge.weights import load_checkpoint

    folder = _copy(hf_good, tmp_path)
    (folder / "config.json").write_text((hf_good / "config.json").read_text() + " " * 900_000)
    assert load_checkpoint(folder).format == "huggingface"


# ---- 9: members that are no regular file --------------------------------------------------------------------

@needs_fifo
@pytest.mark.parametrize("member", ["model.safetensors", "config.json", "preprocessor_config.json"])
def test_a_fifo_member_of_a_clip_folder_is_named_as_not_a_regular_file(hf_good, tmp_path, image, capsys,
                                                                       member) -> None:
    folder = _copy(hf_good, tmp_path)
    (folder / member).unlink()
    os.mkfifo(folder / member)
    assert classify_error(image, str(folder), capsys) == f"error: {folder / member} is not a regular file (a FIFO)"


@needs_fifo
def test_a_fifo_member_is_named_by_the_chinese_clip_form_too(hf_good, tmp_path, image, capsys) -> None:
    folder = _copy(hf_good, tmp_path)
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")
    assert classify_error(image, f"cn-ViT-B-16:{folder}", capsys) == (
        f"error: {folder / 'config.json'} is not a regular file (a FIFO)")


def _special(path: Path, kind: str) -> None:
    if kind == "FIFO":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


@needs_fifo
@pytest.mark.parametrize(("member", "kind"), [("spiece.model", "FIFO"), ("spiece.model", "character device"),
                                              ("tokenizer_config.json", "FIFO"), ("tokenizer.json", "FIFO")])
def test_a_special_member_of_a_siglip_folder_is_named(tmp_path, member, kind) -> None:
    from clipforge.weights.hf_siglip_folder import folder_tokenizer

    _special(tmp_path / member, kind)
    with pytest.raises(CheckpointFormatError) as raised:
        folder_tokenizer(tmp_path, None, 1000)
    assert str(raised.value) == f"{tmp_path / member} is not a regular file (a {kind})"


@needs_fifo
def test_a_fifo_languages_json_is_passed_over_at_once(tmp_path) -> None:
    """languages.json only picks prompts (a bad one is passed over); a FIFO must not block the read."""
    from clipforge.weights.save import recorded_languages

    os.mkfifo(tmp_path / "languages.json")
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(recorded_languages(tmp_path)), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # release the blocked reader (the thread is a daemon)
        with contextlib.suppress(OSError):
            os.close(os.open(tmp_path / "languages.json", os.O_WRONLY | os.O_NONBLOCK))
    assert got == [None], "a FIFO languages.json blocked the read"
