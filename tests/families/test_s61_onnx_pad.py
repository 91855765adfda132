"""The ONNX export records the pad id of every family's tokenizer (review 61): `OnnxCLIP` cuts rows longer than the
context only where nothing but that id follows. The hf-json / hf-transformers specs leave the pad id to the tokenizer
file, so the JSON had none, `OnnxCLIP` fell back to "the highest id ends a prompt" (OpenAI's vocabulary only) and a
22-token prompt for a 16-token MetaCLIP 2 worldwide model was cut silently, its </s> dropped."""

from __future__ import annotations

import json

import pytest
import torch
from family_fixtures import save_family_checkpoint

pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")


@pytest.mark.parametrize("arch,pad", [("test-worldwide-tiny", 1), ("test-xlmr-tiny", 1)])
def test_an_hf_tokenizer_family_records_its_pad_id_and_refuses_a_prompt_longer_than_the_context(tmp_path, arch, pad):
    pytest.importorskip("transformers")
    from clipforge.api import load_model
    from clipforge.cli.main import main
    from clipforge.inference.onnx_export import OnnxCLIP

    checkpoint = save_family_checkpoint(tmp_path / "model", arch)
    assert main(["export", "onnx", "--model", str(checkpoint), "--out", str(tmp_path / "onnx"), "--no-verify"]) == 0
    meta = json.loads((tmp_path / "onnx" / "clipforge_onnx.json").read_text())
    assert meta["tokenizer"]["pad_id"] == pad
    loaded = load_model(str(checkpoint), "cpu")
    ids = loaded.tokenize(["a red image of a cat"])
    context = ids.shape[1]
    runner = OnnxCLIP(tmp_path / "onnx", threads=1)
    padded = torch.cat([ids, torch.full((1, 8), pad, dtype=ids.dtype)], dim=1)
    torch.testing.assert_close(torch.from_numpy(runner.encode_text(padded)), torch.from_numpy(runner.encode_text(ids)))
    long = padded.clone()
    long[0, context + 5] = 5  # the prompt goes on past the context, in ids smaller than the row's largest
    assert int(long[0].argmax()) < context
    with pytest.raises(ValueError, match=f"a prompt is {context + 6} tokens long but this model reads at most "
                                         f"{context}"):
        runner.encode_text(long)
