"""The family x command matrix, the rest of it: linear probe, `tag`, `serve` and `wise-ft` for every family
the loader builds (OpenAI CLIP, SigLIP, SigLIP 2, MetaCLIP 2 worldwide, Chinese-CLIP), on small random weights.

`test_family_commands` covers similarity, classify, eval zeroshot, index/search and ONNX with the same
checkpoints (`family_checkpoints`). What each row asserts is what a family must change in that command:
its own tokenizer and preprocessing reach the task (the numbers equal what `load_model` gives), sigmoid
models' scores are independent probabilities said not to sum to 1, softmax models' sum to 1.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.cli.main import main

FAMILIES = ["openai", "siglip", "siglip2", "worldwide", "chinese"]
COLORS = {"red": (230, 20, 20), "green": (20, 200, 30), "blue": (20, 40, 220)}
LABELS = "red,green,blue"
TEMPLATE = "a photo of a {}."


def _save_chinese(folder: Path, seed: int) -> Path:
    """A small Chinese-CLIP as cn_clip publishes it: ``{"state_dict": {"module.*": ...}}`` in a .pt file."""
    pytest.importorskip("transformers")
    from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip

    torch.manual_seed(seed)
    config = chinese_clip_config("cn-ViT-B-16", vision_layers=1, vision_width=64, image_resolution=32,
                                 text_num_hidden_layers=1, text_hidden_size=64, text_num_attention_heads=1,
                                 text_intermediate_size=128, embed_dim=32)
    model = create_chinese_clip(config)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "clip_cn_tiny.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(family_checkpoints, tmp_path_factory) -> dict[str, Path]:
    return {**family_checkpoints, "chinese": _save_chinese(tmp_path_factory.mktemp("cn"), 0)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name, rgb in COLORS.items():
        Image.new("RGB", (40, 36), rgb).save(folder / f"{name}.png")
    return folder


def _probe_dataset(root: Path) -> Path:
    for split, shades in (("train", range(4)), ("test", range(2))):
        for name, rgb in COLORS.items():
            (root / split / name).mkdir(parents=True)
            for i in shades:
                shade = tuple(max(0, c - 12 * i - (6 if split == "test" else 0)) for c in rgb)
                Image.new("RGB", (36, 36), shade).save(root / split / name / f"{i}.png")
    return root


def _classify(spec: str, image: Path, capsys) -> dict[str, float]:
    assert main(["classify", str(image), "--labels", LABELS, "--templates", TEMPLATE, "--model", spec,
                 "--device", "cpu", "--json", "--top-k", "3", "--quiet"]) == 0
    row = json.loads(capsys.readouterr().out)["results"][0]
    return dict(zip(row["labels"], row["probabilities"], strict=True))


def _sums_to_one(family: str) -> bool:
    return not family.startswith("siglip")


@pytest.mark.parametrize("family", FAMILIES)
def test_linear_probe(family, checkpoints, tmp_path, capsys) -> None:
    """The probe's features are the model's own: its preprocessing at its resolution, its image tower."""
    from clipforge.api import load_model

    root = _probe_dataset(tmp_path / "d")
    spec = str(checkpoints[family])
    assert main(["eval", "linear-probe", "--dataset", "folder", "--root", str(root), "--model", spec,
                 "--device", "cpu", "--workers", "0", "--quiet", "--json", "--out", str(tmp_path / "out"),
                 "--feature-cache", str(tmp_path / "feats"), "--exact-decode"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "linear_probe" and 0.0 <= report["metrics"]["top1"] <= 1.0
    loaded = load_model(spec, "cpu")
    assert loaded.fingerprint.startswith(report["model"]["fingerprint"])
    assert report["model"]["embed_dim"] == loaded.model.embed_dim
    assert report["model"]["image_resolution"] == loaded.model.visual.input_resolution
    cached = sorted((tmp_path / "feats").rglob("*"))
    assert cached, "the probe cached no features"
    first = root / "test" / "blue" / "0.png"
    with torch.no_grad():
        expected = loaded.model.encode_image(loaded.preprocess(Image.open(first).convert("RGB")).unsqueeze(0))
    from safetensors.torch import load_file

    arrays = [load_file(str(p))["features"].float().numpy() for p in cached if p.suffix == ".safetensors"]
    assert arrays, [p.name for p in cached]
    want = torch.nn.functional.normalize(expected.float(), dim=-1)[0].numpy()
    best = max(float(np.max(_unit(a) @ want)) for a in arrays if a.shape[-1] == want.shape[0])
    assert best > 1 - 1e-4, "no cached test feature equals the model's own feature of the first test image"


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _library_tags(library_path: Path) -> dict[str, dict[str, float]]:
    from clipforge.library import Library

    library = Library.open(library_path) if hasattr(Library, "open") else Library(library_path)
    try:
        out = {}
        for record in library.list_images(limit=50):
            out[Path(record.path).stem] = dict(library.tags(record.id))
        return out
    finally:
        library.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_tag(family, checkpoints, photos, tmp_path, capsys) -> None:
    """`tag` scores stored vectors the way `classify` scores the image: the same numbers, the family's scoring."""
    spec = str(checkpoints[family])
    library = tmp_path / "lib"
    assert main(["index", "add", str(photos), "--library", str(library), "--model", spec, "--device", "cpu",
                 "--quiet", "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["tag", "--labels", LABELS, "--library", str(library), "--top-k", "3", "--json",
                 "--templates", TEMPLATE]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 3
    if _sums_to_one(family):
        assert "note" not in report or not report["note"]
    else:
        assert "do not sum to 1" in report["note"]
    tags = _library_tags(library)
    for name in COLORS:
        stored = tags[name]
        assert set(stored) == set(COLORS)
        assert (abs(sum(stored.values()) - 1) < 1e-4) == _sums_to_one(family), stored
        direct = _classify(spec, photos / f"{name}.png", capsys)
        for label, p in stored.items():
            assert abs(p - direct[label]) < 1e-4, (name, label, p, direct)


@pytest.mark.parametrize("family", FAMILIES)
def test_serve_search_and_classify(family, checkpoints, photos, tmp_path, capsys) -> None:
    """The REST API answers with the family's scoring and says so; the numbers equal `classify`'s."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipforge.library import Library
    from clipforge.server import create_app

    spec = str(checkpoints[family])
    library = Library(tmp_path / "lib", spec)
    try:
        library.add(photos, workers=0, progress=False)
        with TestClient(create_app(library, ui=False)) as client:
            found = client.post("/api/search", json={"text": "a red image", "top_k": 3})
            assert found.status_code == 200, found.text
            assert len(found.json()["results"]) == 3
            buffer = io.BytesIO()
            Image.open(photos / "green.png").save(buffer, "PNG")
            answer = client.post("/api/classify", data={"labels": LABELS, "template": TEMPLATE},
                                 files={"image": ("green.png", buffer.getvalue(), "image/png")})
            assert answer.status_code == 200, answer.text
            out = answer.json()
        ui_scores, ui_status = _ui_classify(library, photos / "green.png", tmp_path)
    finally:
        library.close()
    probabilities = {row["label"]: row["probability"] for row in out["labels"]}
    assert out["scoring"] == ("softmax" if _sums_to_one(family) else "sigmoid")
    if _sums_to_one(family):
        assert abs(sum(probabilities.values()) - 1) < 1e-4 and not out.get("note")
    else:
        assert abs(sum(probabilities.values()) - 1) > 1e-3 and "do not sum to 1" in out["note"]
    direct = _classify(spec, photos / "green.png", capsys)
    for label, p in direct.items():
        assert abs(probabilities[label] - p) < 1e-4 and abs(ui_scores[label] - p) < 1e-4, (label, probabilities, direct)
    assert ("do not sum to 1" in ui_status) != _sums_to_one(family), ui_status  # the web page says it too


def _ui_classify(library, image: Path, tmp_path: Path) -> tuple[dict[str, float], str]:
    """The web page's classify handler on an uploaded file: (scores, status line)."""
    import asyncio
    import shutil

    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    upload_dir = tmp_path / "gradio"
    (upload_dir / "f00d").mkdir(parents=True)
    shutil.copy(image, upload_dir / "f00d" / image.name)
    handlers = _Handlers(LibraryService(library), str(upload_dir))
    return asyncio.run(handlers.classify({"path": str(upload_dir / "f00d" / image.name),
                                          "meta": {"_type": "gradio.FileData"}}, LABELS, TEMPLATE))


@pytest.mark.parametrize("family", FAMILIES)
def test_wise_ft(family, checkpoints, tmp_path, capsys) -> None:
    """The interpolated checkpoint is the same family: same tokenizer ids, preprocessing and scoring kind,
    and every weight is the average of the two inputs."""
    from clipforge.api import load_model

    zeroshot = checkpoints[family]
    if family == "chinese":
        finetuned = _save_chinese(tmp_path / "ft", 1)
    else:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from family_fixtures import FAMILY_TINY, save_family_checkpoint

        finetuned = save_family_checkpoint(tmp_path / "ft", FAMILY_TINY[family], seed=1)
    out = tmp_path / "elsewhere" / "wise.safetensors"
    out.parent.mkdir()
    assert main(["wise-ft", "--zeroshot", str(zeroshot), "--finetuned", str(finetuned), "--alpha", "0.5",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"wrote {out}")
    a, b, mixed = (load_model(p, "cpu") for p in (zeroshot, finetuned, out))
    assert type(mixed.model) is type(a.model)
    texts = ["a red image", "一只猫"]
    assert torch.equal(mixed.tokenize(texts), a.tokenize(texts))
    assert mixed.scoring.kind == a.scoring.kind
    assert getattr(mixed.model, "preprocess_cfg", None) == getattr(a.model, "preprocess_cfg", None)
    image = Image.new("RGB", (50, 40), (10, 120, 200))
    assert torch.equal(mixed.preprocess(image), a.preprocess(image))
    sa, sb, sm = a.model.state_dict(), b.model.state_dict(), mixed.model.state_dict()
    assert sa.keys() == sm.keys()
    for key, value in sm.items():
        if value.is_floating_point():
            assert torch.allclose(value, (sa[key] + sb[key]) / 2, atol=1e-6), key
    assert main(["classify", _png(tmp_path), "--labels", LABELS,
                 "--model", str(out), "--device", "cpu", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["scoring"] == a.scoring.kind


def _png(folder: Path) -> str:
    path = folder / "probe.png"
    Image.new("RGB", (30, 30), (200, 40, 40)).save(path)
    return str(path)


def test_class_embedding_cache_tells_tokenizers_apart(tmp_path) -> None:
    """Two checkpoints with the same weights and different tokenizer files must not share cached class
    embeddings (the cache was keyed by the weights only: the second model got the first one's vectors)."""
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from family_fixtures import save_family_checkpoint, train_spiece

    from clipforge.api import load_model
    from clipforge.zeroshot import ZeroShotClassifier

    first = save_family_checkpoint(tmp_path / "a", "test-siglip-tiny")
    (tmp_path / "b").mkdir()
    shutil.copy(first, tmp_path / "b" / first.name)
    train_spiece(tmp_path / "b", vocab_size=300)  # same weights, another vocabulary
    cache = tmp_path / "cache"
    for folder in ("a", "b"):
        model = load_model(tmp_path / folder / first.name, "cpu").model
        cached = ZeroShotClassifier(model, ["red", "blue"], TEMPLATE, cache_dir=cache, progress=False)
        fresh = ZeroShotClassifier(model, ["red", "blue"], TEMPLATE, use_cache=False, progress=False)
        assert not cached.cache_hit, folder
        assert torch.allclose(cached.class_embeddings, fresh.class_embeddings, atol=1e-6), folder
