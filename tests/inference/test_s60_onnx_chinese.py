"""Chinese-CLIP exports to ONNX (audit 60, onnx 1): `export onnx` ended in a traceback (``'ChineseCLIP' object has
no attribute 'token_embedding'``) after tracing the image graph. Its BERT tower (``self.bert``, padding masked, read
at [CLS], then ``text_projection``) is now traced as `ChineseCLIP.encode_text` computes it, checked against
clipforge's own features, and the JSON describes its WordPiece tokenizer, whose vocabulary is copied beside it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clipforge.cli.main import main

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cn_export(tmp_path_factory) -> tuple[Path, Path]:
    from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip

    folder = tmp_path_factory.mktemp("cn")
    torch.manual_seed(0)
    model = create_chinese_clip(chinese_clip_config(
        "cn-ViT-B-16", vision_layers=1, vision_width=64, image_resolution=32, text_num_hidden_layers=1,
        text_hidden_size=64, text_num_attention_heads=1, text_intermediate_size=128, embed_dim=32))
    checkpoint = folder / "clip_cn_tiny.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, checkpoint)
    assert main(["export", "onnx", "--model", str(checkpoint), "--out", str(folder / "onnx")]) == 0
    return checkpoint, folder / "onnx"


def test_a_chinese_clip_exports_and_its_text_graph_gives_clipforges_features(cn_export):
    from clipforge.api import load_model
    from clipforge.inference.onnx_export import OnnxCLIP, parity_failures

    checkpoint, out = cn_export
    meta = json.loads((out / "clipforge_onnx.json").read_text())
    assert parity_failures(meta["parity"]) == [] and meta["parity"]["text_max_rel_diff"] < 1e-5
    assert meta["text"]["shape"] == ["batch", "sequence<=52"]
    loaded = load_model(str(checkpoint), "cpu")
    ids = loaded.tokenizer(["一只猫", "两只狗在草地上跑", "a photo of a dog 在海边"])
    assert ids.shape == (3, 52) and int(ids[0, 5]) == 0  # padded rows: the mask is exercised
    want = loaded.model.encode_text(ids).detach().numpy()
    runner = OnnxCLIP(out, threads=1)
    for cut in (52, int(ids.ne(0).sum(1).max())):  # full rows, and rows cut after the longest prompt
        got = runner.encode_text(ids[:, :cut].numpy())
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    image = torch.randn(2, 3, 32, 32)
    np.testing.assert_allclose(runner.encode_image(image), loaded.model.encode_image(image).detach().numpy(),
                               atol=1e-4 * 10)


def test_the_json_describes_the_wordpiece_tokenizer_and_carries_its_vocabulary(cn_export):
    from clipforge.text.wordpiece import WORDPIECE_VOCAB_PATH

    _, out = cn_export
    tok = json.loads((out / "clipforge_onnx.json").read_text())["tokenizer"]
    assert (tok["kind"], tok["context_length"], tok["cls_id"], tok["sep_id"], tok["pad_id"], tok["file"]) == \
        ("bert-wordpiece", 52, 101, 102, 0, "bert_chinese_vocab.txt")
    assert (out / tok["file"]).read_bytes() == Path(WORDPIECE_VOCAB_PATH).read_bytes()
    assert tok["sha256"] == hashlib.sha256((out / tok["file"]).read_bytes()).hexdigest()
    assert tok["rows"].startswith("[CLS] pieces [SEP], then pad_id to 52")


def test_rows_longer_than_the_context_are_cut_only_where_every_row_is_padding(cn_export):
    """Rows longer than the graph's context are cut to it only when nothing but padding lies past it. The end of a
    prompt was found by the highest id, right for OpenAI's vocabulary (its end token is the last id) only: a
    WordPiece row whose largest id lies early was cut silently, dropping the end of a prompt the model cannot read."""
    from clipforge.api import load_model
    from clipforge.inference.onnx_export import OnnxCLIP

    checkpoint, out = cn_export
    tokenizer = load_model(str(checkpoint), "cpu").tokenizer
    runner = OnnxCLIP(out, threads=1)
    short = tokenizer(["一只猫"])
    padded = torch.cat([short, torch.zeros(1, 25, dtype=short.dtype)], dim=1)  # 77 ids, padding past 52
    np.testing.assert_allclose(runner.encode_text(padded), runner.encode_text(short), atol=1e-6)
    long = padded.clone()
    long[0, 60] = 102  # a prompt that goes on past the context: its [SEP] at 60, smaller ids than the row's largest
    assert int(long[0].argmax()) < 52
    with pytest.raises(ValueError, match="a prompt is 61 tokens long but this model reads at most 52"):
        runner.encode_text(long)
