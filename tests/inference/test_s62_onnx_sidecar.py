"""What a re-export removes from `export onnx --out DIR` (audit 62, fuzzer 3).

The files an existing ``clipforge_onnx.json`` named that the new export did not write were deleted, the JSON trusted
whoever wrote it: a foreign or crafted one naming ``thesis.tex`` deleted the thesis, without a word. Now only what an
export of this project wrote goes: the JSON must be ours (its ``format``), each name one an export writes (a graph's
``<graph>.data``, a tokenizer file whose recorded sha256 it still has) and of its recorded size; each removal is said
on stderr, and every other file the JSON names stays, with a notice saying why.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from clipforge.cli.main import main

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

FORMAT = "clipforge-onnx-2"
EXPORTED = ["clipforge_onnx.json", "image_encoder.onnx", "text_encoder.onnx"]


def _export(out: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """`clipforge export onnx` of test-vit-tiny into `out`: its stderr lines."""
    capsys.readouterr()
    assert main(["export", "onnx", "--model", "test-vit-tiny", "--out", str(out), "--no-verify"]) == 0
    return capsys.readouterr().err.splitlines()


def _folder(tmp_path: Path, sidecar: dict, files: dict[str, bytes]) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "clipforge_onnx.json").write_text(json.dumps(sidecar))
    return out


def _ours(**parts: dict) -> dict:
    return {"format": FORMAT, "image": {"file": "image_encoder.onnx"}, "text": {"file": "text_encoder.onnx"}, **parts}


def test_a_foreign_json_naming_a_thesis_deletes_nothing_and_says_so(tmp_path: Path, capsys) -> None:
    """The audit's case: no ``format``, so no clipforge export wrote it; the thesis stays."""
    out = _folder(tmp_path, {"image": {"file": "thesis.tex"}, "text": {"file": "x"}}, {"thesis.tex": b"my thesis\n"})
    assert _export(out, capsys) == [
        f"notice: kept thesis.tex in {out}: the clipforge_onnx.json there was not written by a clipforge export "
        "(format None; an export writes 'clipforge-onnx-<n>')"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*EXPORTED, "thesis.tex"])
    assert (out / "thesis.tex").read_bytes() == b"my thesis\n"
    assert json.loads((out / "clipforge_onnx.json").read_text())["format"] == FORMAT


@pytest.mark.parametrize(("sidecar", "files", "said"), [
    (_ours(image={"file": "thesis.tex"}), {"thesis.tex": b"x"},
     "kept thesis.tex in {out}: the clipforge_onnx.json there lists it as the image graph, which an export names "
     "image_encoder.onnx"),
    (_ours(text={"file": "text_encoder.onnx", "external_data": "thesis.tex"}), {"thesis.tex": b"x"},
     "kept thesis.tex in {out}: the clipforge_onnx.json there lists it as the text graph's weights file, which an "
     "export names text_encoder.onnx.data"),
    (_ours(image={"file": "image_encoder.onnx", "external_data": "image_encoder.onnx.data",
                  "external_data_bytes": 5}), {"image_encoder.onnx.data": b"12345678"},
     "kept image_encoder.onnx.data in {out}: it holds 8 bytes, the clipforge_onnx.json there recorded 5: changed "
     "since that export"),
    (_ours(image={"file": "image_encoder.onnx", "external_data": "image_encoder.onnx.data",
                  "external_data_bytes": "8"}), {"image_encoder.onnx.data": b"12345678"},
     "kept image_encoder.onnx.data in {out}: the clipforge_onnx.json there records its size as '8', not a byte "
     "count"),
    (_ours(tokenizer={"file": "spiece.model", "included": True}), {"spiece.model": b"sp"},
     "kept spiece.model in {out}: the clipforge_onnx.json there lists it as the tokenizer file without the sha256 an "
     "export records"),
    (_ours(tokenizer={"file": "spiece.model", "included": True, "sha256": "0" * 64}), {"spiece.model": b"sp"},
     "kept spiece.model in {out}: its sha256 differs from the one the clipforge_onnx.json there recorded: changed "
     "since that export"),
    ({**_ours(tokenizer={"file": "notes.txt", "sha256": hashlib.sha256(b"n").hexdigest()}), "format": "my-format"},
     {"notes.txt": b"n"},
     "kept notes.txt in {out}: the clipforge_onnx.json there was not written by a clipforge export (format "
     "'my-format'; an export writes 'clipforge-onnx-<n>')"),
], ids=["graph-name", "data-name", "data-size", "size-not-int", "tokenizer-no-hash", "tokenizer-hash", "format"])
def test_a_file_no_export_of_ours_wrote_is_kept_with_a_notice(tmp_path: Path, capsys, sidecar: dict,
                                                               files: dict[str, bytes], said: str) -> None:
    out = _folder(tmp_path, sidecar, files)
    assert _export(out, capsys) == [f"notice: {said.format(out=out)}"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*EXPORTED, *files])
    assert all((out / name).read_bytes() == data for name, data in files.items())


def test_an_earlier_exports_own_files_are_removed_one_notice_each(tmp_path: Path, capsys) -> None:
    """Positive control: a tokenizer file of the recorded sha256 and a graph's ``.data`` file of the recorded size
    (an older JSON without sizes too) are the earlier export's, and go, each said; a path outside stays unread."""
    (tmp_path / "outside.txt").write_text("keep")
    sidecar = _ours(image={"file": "image_encoder.onnx", "external_data": "image_encoder.onnx.data",
                           "external_data_bytes": 11},
                    text={"file": "text_encoder.onnx", "external_data": "text_encoder.onnx.data"},
                    tokenizer={"file": "spiece.model", "included": True,
                               "sha256": hashlib.sha256(b"a SigLIP's tokenizer").hexdigest()})
    sidecar["text"]["shape"] = "../outside.txt"
    out = _folder(tmp_path, sidecar, {"image_encoder.onnx.data": b"old weights", "text_encoder.onnx.data": b"w",
                                      "spiece.model": b"a SigLIP's tokenizer", "notes.txt": b"mine"})
    assert _export(out, capsys) == [
        f"notice: removed image_encoder.onnx.data from {out}: the image graph's weights file of the earlier export "
        "there, which this export does not write",
        f"notice: removed spiece.model from {out}: the tokenizer file of the earlier export there, which this export "
        "does not write",
        f"notice: removed text_encoder.onnx.data from {out}: the text graph's weights file of the earlier export "
        "there, which this export does not write"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*EXPORTED, "notes.txt"])
    assert (tmp_path / "outside.txt").read_text() == "keep"


def test_a_real_export_with_a_data_file_is_cleaned_up_by_the_next_one(tmp_path: Path, capsys, monkeypatch) -> None:
    """Positive control end to end: an export whose image graph keeps its weights in ``image_encoder.onnx.data``
    (as a >2 GB tower's does, emulated) records that file's size; a re-export without it removes it."""
    from clipforge.inference import onnx_export as ox

    original = ox._export

    def big(module, example, path, *args, **kwargs):  # what torch writes for a >2 GB tower
        original(module, example, path, *args, **kwargs)
        if path.name == "image_encoder.onnx":
            onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=True,
                            all_tensors_to_one_file=False, size_threshold=1024)

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(ox, "_export", big)
        assert _export(out, capsys) == []
    meta = json.loads((out / "clipforge_onnx.json").read_text())
    data = out / "image_encoder.onnx.data"
    assert meta["image"]["external_data"] == data.name and meta["image"]["external_data_bytes"] == data.stat().st_size
    assert _export(out, capsys) == [
        f"notice: removed image_encoder.onnx.data from {out}: the image graph's weights file of the earlier export "
        "there, which this export does not write"]
    assert sorted(p.name for p in out.iterdir()) == EXPORTED
