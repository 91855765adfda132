"""Every command with every family, on small random weights: the family x command matrix.

Each family's checkpoint is a folder a user would have (weights + config + the tokenizer file
the config names), built by `family_fixtures`. The commands run through `clipforge.cli.main`
exactly as a user types them; what is asserted is what each family must change: its own
tokenizer reaches the text tower, sigmoid models say their probabilities do not sum to 1 (and
they do not), and softmax models' do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from clipforge.cli.main import main

FAMILIES = ["siglip", "siglip2", "worldwide", "openai", "xlmr", "nllb-siglip"]
COLORS = {"red": (230, 20, 20), "green": (20, 200, 30), "blue": (20, 40, 220)}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    out = {}
    for name, rgb in COLORS.items():
        out[name] = folder / f"{name}.png"
        Image.new("RGB", (40, 36), rgb).save(out[name])
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A class-per-folder dataset (the `folder` layout `eval zeroshot` reads)."""
    root = tmp_path_factory.mktemp("dataset")
    for name, rgb in COLORS.items():
        (root / name).mkdir()
        for i in range(2):
            Image.new("RGB", (36, 36), tuple(max(0, c - 10 * i) for c in rgb)).save(root / name / f"{i}.png")
    return root


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("family", FAMILIES)
def test_similarity(family, family_checkpoints, images, capsys) -> None:
    spec = str(family_checkpoints[family])
    assert main(["similarity", *map(str, images.values()), "--text", "a red image", "a blue image",
                 "--model", spec, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[1:] for line in out.splitlines()[1:4]]
    sums = [sum(float(v) for v in row) for row in rows]
    if "siglip" in family:
        assert "probabilities do not sum to 1" in out
        assert not all(abs(s - 1) < 1e-3 for s in sums)
    else:
        assert "note:" not in out and all(abs(s - 1) < 1e-3 for s in sums)


@pytest.mark.parametrize("family", FAMILIES)
def test_classify(family, family_checkpoints, images, capsys) -> None:
    spec = str(family_checkpoints[family])
    assert main(["classify", *map(str, images.values()), "--labels", "red,green,blue", "--model", spec,
                 "--device", "cpu", "--json", "--top-k", "3"]) == 0
    out = _json(capsys)
    assert len(out["results"]) == 3 and out["scoring"] == ("sigmoid" if "siglip" in family else "softmax")
    total = sum(out["results"][0]["probabilities"])
    if "siglip" in family:
        assert "do not sum to 1" in out["note"] and abs(total - 1) > 1e-3
    else:
        assert abs(total - 1) < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_zeroshot(family, family_checkpoints, dataset, tmp_path, capsys) -> None:
    spec = str(family_checkpoints[family])
    code = main(["eval", "zeroshot", "--dataset", "folder", "--root", str(dataset), "--model", spec,
                 "--device", "cpu", "--out", str(tmp_path / "out"), "--workers", "0"])
    assert code == 0, capsys.readouterr()
    reports = list((tmp_path / "out").rglob("*.json"))
    assert reports
    report = json.loads(reports[0].read_text())
    assert "top1" in json.dumps(report)


@pytest.mark.parametrize("family", FAMILIES)
def test_index_and_search(family, family_checkpoints, images, tmp_path, capsys) -> None:
    spec = str(family_checkpoints[family])
    library = tmp_path / "lib"
    assert main(["index", "add", str(images["red"].parent), "--library", str(library), "--model", spec,
                 "--device", "cpu", "--quiet", "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["search", "a red image", "--library", str(library), "--json", "--top-k", "3"]) == 0
    hits = _json(capsys)
    assert len(hits["results"] if isinstance(hits, dict) else hits) == 3


@pytest.mark.parametrize("family", FAMILIES)
def test_export_onnx_matches_pytorch(family, family_checkpoints, tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    spec = str(family_checkpoints[family])
    assert main(["export", "onnx", "--model", spec, "--out", str(tmp_path / "onnx")]) == 0
    capsys.readouterr()
    metas = [json.loads(p.read_text()) for p in (tmp_path / "onnx").glob("*.json")]
    parity = next(m["parity"] for m in metas if "parity" in m)  # onnxruntime vs PyTorch, verified at export
    assert parity["image_max_abs_diff"] <= 1e-4 and parity["text_max_abs_diff"] <= 1e-4


def test_tokenizer_reaches_the_text_tower(family_checkpoints) -> None:
    """SigLIP rows are padded to the full context with </s> (the tower reads the last position);
    MetaCLIP 2 rows start with <s> and are read at the first </s> (id 2)."""
    from clipforge.api import load_model

    siglip = load_model(family_checkpoints["siglip"], "cpu")
    ids = siglip.tokenize(["a red image"])
    assert ids.shape == (1, siglip.model.context_length) and ids[0, -1].item() == 1
    world = load_model(family_checkpoints["worldwide"], "cpu")
    ids = world.tokenize(["a red image"])
    assert ids[0, 0].item() == 0 and 2 in ids[0].tolist()
    assert world.model.text_pool_positions(ids).item() == ids[0].tolist().index(2)


@pytest.mark.parametrize("family", ["siglip", "siglip2", "worldwide", "xlmr", "nllb-siglip"])
def test_bf16_precision_runs(family, family_checkpoints, images, capsys) -> None:
    from clipforge.inference.cpu import bf16_supported

    if not bf16_supported():
        pytest.skip("no native bf16 on this CPU")
    spec = str(family_checkpoints[family])
    assert main(["classify", str(images["red"]), "--labels", "red,blue", "--model", spec, "--device", "cpu",
                 "--json", "--precision", "bf16"]) == 0
    out = _json(capsys)
    assert torch.isfinite(torch.tensor(out["results"][0]["probabilities"])).all()


def test_transformers_towers_read_their_tokenizer_and_mask_their_padding(family_checkpoints) -> None:
    """open_clip's HF towers: rows start with <s> and are padded with <pad> (id 1); the padding does
    not change the feature (mean pooling over the attention mask; NLLB reads position 0)."""
    from clipforge.api import load_model

    for family in ("xlmr", "nllb-siglip"):
        loaded = load_model(family_checkpoints[family], "cpu")
        ids = loaded.tokenize(["a red image"])
        assert ids.shape == (1, 77) and ids[0, -1].item() == 1 and loaded.model.text.pad_id == 1
        length = int((ids[0] != 1).sum())
        with torch.no_grad():
            full = loaded.model.encode_text(ids)
            short = loaded.model.encode_text(ids[:, : length + 3])
        assert torch.allclose(full, short, atol=1e-5)
