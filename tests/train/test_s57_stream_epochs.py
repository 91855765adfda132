"""A WebDataset stream of unknown length (no `samples_per_epoch`): its epochs end where it runs out, and every
file counts them so.

Its epoch length was taken to be `--steps`: 150 samples at batch 16 (9 batches an epoch) logged `epoch` 0.45 at
step 9, where `model-1` and the evaluation end the first epoch, jumped to 1.05, and recorded 2.1 for step 20
(2.2222). The same stand-in made `--steps 5` name its checkpoint `model-1` (an epoch end after 5 of 9 batches),
and a run stopped at its stream's last batch could not be resumed ("epoch 1 of the training data gave no batch").
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.train.config import TrainConfig
from clipforge.train.logs import read_log
from clipforge.train.trainer import Trainer

TINY = dict(embed_dim=16, image_resolution=16, vision_layers=1, vision_width=32, vision_patch_size=8,
            context_length=12, vocab_size=49408, transformer_width=32, transformer_heads=1, transformer_layers=1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    """3 shards x 5 image-caption samples: 15 samples, 3 batches of 4 an epoch (the short last one dropped)."""
    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    for s in range(3):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for k in range(5):
                png = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(png, format="PNG")
                for ext, data in (("png", png.getvalue()), ("txt", f"photo {s} {k}".encode())):
                    info = tarfile.TarInfo(f"s{s}_{k}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / "{00000..00002}.tar")


def _config(root: str, out: Path, **kw) -> TrainConfig:
    base = dict(model_config=TINY, data="webdataset", root=root, batch_size=4, steps=8, lr=1e-3, precision="fp32",
                log_every=1, out_dir=str(out), seed=0, device="cpu", tensorboard=False, workers=0, keep_last=10)
    return TrainConfig(**{**base, **kw})


def _train(out: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["epoch"], r["loss"]) for r in read_log(out) if r["kind"] == "train"]


def test_logged_epochs_agree_with_the_checkpoints_of_a_stream_of_unknown_length(shards, tmp_path):
    out = tmp_path / "run"
    result = Trainer(_config(shards, out)).fit()
    # the first epoch's fraction is unknown until the stream runs out: whole epochs done (0), then 1 at its end
    assert [(s, e) for s, e, _ in _train(out)] == [(1, 0), (2, 0), (3, 1), (4, 1.3333), (5, 1.6667), (6, 2),
                                                  (7, 2.3333), (8, 2.6667)]
    header, *rows = (out / "train.csv").read_text().splitlines()
    assert header.split(",")[:2] == ["step", "epoch"] and [r.split(",")[1] for r in rows[2:4]] == ["1", "1.3333"]
    assert [(r["step"], r["epoch"]) for r in read_log(out) if r["kind"] == "eval"] == [(3, 1), (6, 2)]
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.safetensors")) == [
        "model-1.safetensors", "model-2.safetensors", "model-step-8.safetensors"]
    records = json.loads((checkpoints / "index.json").read_text())
    assert [(r["step"], r["epoch"]) for r in records] == [(3, 1), (6, 2), (8, 2.6667)]
    assert result["epoch"] == 2.6667
    assert json.loads((checkpoints / "latest.json").read_text())["epoch"] == 2.6667


def test_a_run_shorter_than_the_stream_ends_no_epoch(shards, tmp_path):
    out = tmp_path / "run"
    result = Trainer(_config(shards, out, steps=2)).fit()
    assert sorted(p.name for p in (out / "checkpoints").glob("*.safetensors")) == ["model-step-2.safetensors"]
    assert result["epoch"] == 0 and [e for _, e, _ in _train(out)] == [0, 0]


def test_a_run_stopped_at_its_streams_end_resumes_exactly(shards, tmp_path):
    full, parted = tmp_path / "full", tmp_path / "parted"
    Trainer(_config(shards, full, steps=5)).fit()
    first = Trainer(_config(shards, parted, steps=5, stop_after_steps=3)).fit()
    assert first["steps"] == 3 and first["checkpoint"].name == "model-1.safetensors"  # the epoch end, evaluated
    second = Trainer(_config(shards, parted, steps=5, resume="latest")).fit()
    assert (second["resumed_at_step"], second["steps"]) == (3, 5)
    assert _train(parted) == _train(full)
    assert [e for _, e, _ in _train(full)] == [0, 0, 1, 1.3333, 1.6667]
