"""The shipped `clipforge-tiny` model: small enough, self-describing, and actually trained."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

import clipforge

PRETRAINED = Path(clipforge.__file__).resolve().parent / "pretrained" / "clipforge-tiny"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_shipped_files_are_complete_and_small():
    weights = PRETRAINED / "model.safetensors"
    assert weights.is_file(), f"{weights} missing"
    assert weights.stat().st_size <= 20 * 1024 * 1024
    config = json.loads((PRETRAINED / "config.json").read_text())
    recipe = json.loads((PRETRAINED / "recipe.json").read_text())
    assert recipe["script"] == "benchmarks/train_cifar10_from_scratch.py"
    assert recipe["recipe"] == "cifar10-from-scratch" and recipe["zero_shot_top1"] >= 0.80
    assert f"{100 * recipe['zero_shot_top1']:.2f}%" in (PRETRAINED / "README.md").read_text()
    assert "CIFAR-10" in (PRETRAINED / "README.md").read_text()
    from clipforge.weights import load_checkpoint

    ckpt = load_checkpoint(weights)
    assert ckpt.config is not None
    assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in ckpt.config.items()} == config
    assert all(t.dtype == torch.float32 for t in ckpt.state_dict.values() if t.is_floating_point())


def test_shipped_model_classifies_cifar10_test_images_zero_shot():
    """Through the public API (load + preprocess + ZeroShotClassifier) on 200 real test images."""
    zip_path = SHARED / "cifar10_jpeg" / "test_jpeg.zip"
    if not zip_path.is_file():
        pytest.skip(f"real data {zip_path} is absent")
    from PIL import Image

    from clipforge.zeroshot import ZeroShotClassifier, get_templates

    model, preprocess = clipforge.load(str(PRETRAINED / "model.safetensors"), device="cpu")
    images, labels = [], []
    with zipfile.ZipFile(zip_path) as zf:
        for c, name in enumerate(CLASSES):
            members = sorted(n for n in zf.namelist() if n.startswith(f"test/{name}/") and n.endswith(".jpg"))[:20]
            for member in members:
                images.append(preprocess(Image.open(io.BytesIO(zf.read(member)))))
                labels.append(c)
    classifier = ZeroShotClassifier(model, CLASSES, get_templates("cifar10"), use_cache=False, progress=False)
    with torch.no_grad():
        pred = classifier.logits(model.encode_image(torch.stack(images))).argmax(dim=-1)
    accuracy = float((pred == torch.tensor(labels)).float().mean())
    assert accuracy >= 0.5, f"zero-shot top-1 {accuracy:.3f} on 200 CIFAR-10 test images (chance 0.1)"
