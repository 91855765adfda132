"""Files -> embeddings: same vectors as encoding one image at a time; bad files counted, not fatal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.data import encode_image_files, save_embeddings
from clipforge.image import Preprocess
from clipforge.models import create_model_from_config, get_config


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 30), (200, 120), (64, 64), (300, 500)]):
        path = tmp_path / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return paths, tmp_path / "broken.jpg", tmp_path / "missing.jpg"


@pytest.mark.parametrize("workers", [0, 1])
def test_pipeline_matches_one_by_one_encoding(files, workers: int, tmp_path) -> None:
    good, broken, missing = files
    torch.manual_seed(0)
    model = create_model_from_config(get_config("test-vit-tiny")).eval()
    paths = [good[0], broken, good[1], missing, good[2], good[3]]
    result = encode_image_files(model, paths, batch_size=3, workers=workers, progress=False)
    assert result.paths == [str(p) for p in good]
    assert sorted(p for p, _ in result.failed) == sorted([str(broken), str(missing)])
    assert "2 bad images skipped" in result.failure_summary()
    pre = Preprocess(model.visual.input_resolution)
    with torch.inference_mode():
        want = model.encode_image(torch.stack([pre.load(p) for p in good]))
    want = (want / want.norm(dim=-1, keepdim=True)).numpy()
    assert np.abs(result.embeddings - want).max() <= 1e-5
    out = save_embeddings(result, tmp_path / "store")
    assert np.array_equal(np.load(out / "embeddings.npy"), result.embeddings)
    meta = json.loads((out / "embeddings.json").read_text())
    assert meta["count"] == 4 and meta["paths"] == result.paths and len(meta["failed"]) == 2
