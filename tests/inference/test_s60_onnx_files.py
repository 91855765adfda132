"""The files of an ONNX export folder (audit 60, onnx 4 to 8).

4: a >2 GB tower's weights are written by torch in files beside the .onnx; only the .onnx was moved, so the final
   folder's graph pointed at deleted files (emulated here by re-saving the traced graph with external data).
5: a hard-killed export's hidden ``.onnx-export-*`` staging folder stayed in ``--out`` for good.
6: re-exporting into a folder left the previous export's tokenizer file (a SigLIP's ``spiece.model``).
7: SigLIP's text graph took rows shorter than its context and silently gave other features.
8: ``"clean": "canonicalize"`` was not defined in the JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from clipforge.cli.main import main

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def test_a_graph_with_external_data_is_moved_with_one_data_file_and_loads_from_the_final_folder(tmp_path,
                                                                                                monkeypatch):
    from clipforge.api import load_model
    from clipforge.inference import onnx_export as ox

    original = ox._export

    def big(module, example, path, *args, **kwargs):  # what torch writes for a >2 GB tower
        original(module, example, path, *args, **kwargs)
        onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=True, all_tensors_to_one_file=False,
                        size_threshold=1024)

    monkeypatch.setattr(ox, "_export", big)
    loaded = load_model("test-vit-tiny", "cpu")
    meta = ox.export_onnx(loaded, tmp_path / "out", name="test-vit-tiny")
    assert sorted(os.listdir(tmp_path / "out")) == ["clipforge_onnx.json", "image_encoder.onnx",
                                                    "image_encoder.onnx.data", "text_encoder.onnx",
                                                    "text_encoder.onnx.data"]
    assert (meta["image"]["external_data"], meta["text"]["external_data"]) == \
        ("image_encoder.onnx.data", "text_encoder.onnx.data")
    assert ox.parity_failures(meta["parity"]) == []
    session = ort.InferenceSession(str(tmp_path / "out" / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    images = torch.randn(2, 3, 32, 32)
    got = session.run(["image_features"], {"pixel_values": images.numpy()})[0]
    want = loaded.model.encode_image(images).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    runner = ox.OnnxCLIP(tmp_path / "out", threads=1)
    ids = loaded.tokenizer(["a dog", "a cat on a mat"])
    want_text = loaded.model.encode_text(ids).detach().numpy()
    np.testing.assert_allclose(runner.encode_text(ids), want_text, atol=1e-4 * np.abs(want_text).max())


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_staging_folders_of_dead_exports_are_removed_and_live_ones_kept(tmp_path):
    from clipforge.atomic import STALE_AFTER_S, host_tag

    out = tmp_path / "out"
    out.mkdir()
    here = host_tag()
    dead = out / f".onnx-export-{_dead_pid()}@{here}-0123abcd"
    live = out / f".onnx-export-{os.getpid()}@{here}-89abcdef"
    other_host = out / f".onnx-export-{_dead_pid()}@elsewhere-0123abcd"
    old_unnamed, new_unnamed = out / ".onnx-export-bygqctgh", out / ".onnx-export-k2j3h4g5"
    for folder in (dead, live, other_host, old_unnamed, new_unnamed):
        folder.mkdir()
        (folder / "image_encoder.onnx").write_bytes(b"x" * 100)
    day_ago = time.time() - STALE_AFTER_S - 60
    os.utime(old_unnamed, (day_ago, day_ago))
    assert main(["export", "onnx", "--model", "test-vit-tiny", "--out", str(out), "--no-verify"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == \
        sorted([live.name, other_host.name, new_unnamed.name])


def test_re_export_removes_the_files_the_previous_export_listed_and_only_those(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "spiece.model").write_bytes(b"a SigLIP's tokenizer")
    (out / "notes.txt").write_text("mine")
    (tmp_path / "outside.txt").write_text("keep")
    (out / "clipforge_onnx.json").write_text(json.dumps({  # an export's own (audit 62: a foreign one deletes nothing)
        "format": "clipforge-onnx-2", "image": {"file": "image_encoder.onnx", "external_data": "image_encoder.onnx.data"},
        "text": {"file": "../outside.txt"},
        "tokenizer": {"file": "spiece.model", "sha256": hashlib.sha256(b"a SigLIP's tokenizer").hexdigest()}}))
    (out / "image_encoder.onnx.data").write_bytes(b"old weights")
    assert main(["export", "onnx", "--model", "test-vit-tiny", "--out", str(out), "--no-verify"]) == 0
    assert sorted(os.listdir(out)) == ["clipforge_onnx.json", "image_encoder.onnx", "notes.txt", "text_encoder.onnx"]
    assert (tmp_path / "outside.txt").read_text() == "keep"


def test_a_siglip_text_graph_takes_full_context_rows_only_and_the_json_says_so(tmp_path):
    from clipforge.inference.onnx_export import OnnxCLIP

    assert main(["export", "onnx", "--model", "test-siglip-tiny", "--out", str(tmp_path / "s")]) == 0
    meta = json.loads((tmp_path / "s" / "clipforge_onnx.json").read_text())
    assert meta["text"]["shape"] == ["batch", 64]
    assert meta["tokenizer"]["rows"].startswith("padded with pad_id to exactly the full context")
    session = ort.InferenceSession(str(tmp_path / "s" / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1] == 64
    ids = np.ones((2, 40), np.int64)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(["text_features"], {"input_ids": ids})
    with pytest.raises(ValueError, match=r"^token rows are 40 ids long; this model's text graph takes exactly 64 "):
        OnnxCLIP(tmp_path / "s", threads=1).encode_text(ids)
    tok = meta["tokenizer"]
    assert tok["clean"] == "canonicalize" and tok["clean_steps"].startswith(
        "ftfy.fix_text, html.unescape twice, stripped; '_' to ' '; every ASCII punctuation character")


def test_a_mean_pooling_tower_keeps_a_dynamic_sequence_and_says_how_it_reads(tmp_path):
    assert main(["export", "onnx", "--model", "test-xlmr-tiny", "--out", str(tmp_path / "x"), "--no-verify"]) == 0
    meta = json.loads((tmp_path / "x" / "clipforge_onnx.json").read_text())
    assert meta["text"]["shape"][1].startswith("sequence<=")
    assert "mean-pools the positions whose id is not pad_id" in meta["tokenizer"]["rows"]
    assert "last position" not in meta["tokenizer"]["rows"]
