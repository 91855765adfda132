"""The shipped tiny model's ONNX graph reads what `clipforge.tokenize` returns (issue 20.8): 77 ids per
row for a 16-token model, when every prompt ends within 16; a longer prompt is one clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")


def test_onnx_tiny_model_takes_77_token_rows_like_the_model_does(tmp_path):
    import clipforge
    from clipforge.inference import OnnxCLIP, export_onnx

    model = clipforge.load_model("clipforge-tiny", "cpu").model
    export_onnx(model, tmp_path / "onnx", verify=False)
    runner = OnnxCLIP(tmp_path / "onnx", threads=1)
    prompts = ["a photo of a cat.", "a blurry photo of a truck."]
    ids = clipforge.tokenize(prompts)  # 77 ids per row
    assert ids.shape[1] == 77 and model.context_length == 16
    with torch.no_grad():
        expected = model.encode_text(clipforge.tokenize(prompts, context_length=16)).numpy()
    np.testing.assert_allclose(runner.encode_text(ids), expected, atol=1e-4, rtol=0)
    long = clipforge.tokenize(["a photo of " + "a very " * 10 + "big cat."])
    with pytest.raises(ValueError, match="reads at most 16; tokenize with context_length=16"):
        runner.encode_text(long)
