"""`export onnx` writes what using its graphs needs, and that is enough: from clipforge_onnx.json, onnxruntime,
PIL, numpy and OpenAI's reference tokenizer alone, `classify`'s probabilities come out again on real photos.

The JSON held shapes and names only: no preprocessing (clipforge-tiny: OpenAI's mean/std, shortest side + crop;
SigLIP: mean/std 0.5, squash), no logit scale (clipforge-tiny's is ~12.1, not CLIP's 100) or bias, no scoring kind
(softmax or sigmoid), no tokenizer; `softmax(100 * cos)` from the graphs was not `classify`'s answer.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.cli.main import main

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ort = pytest.importorskip("onnxruntime")

LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TEMPLATE = "a photo of a {}."


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx-tiny")
    assert main(["export", "onnx", "--model", "clipforge-tiny", "--out", str(out)]) == 0
    return out


def _photos(tmp_path: Path) -> list[Path]:
    """Four real photos: two CIFAR-10 test JPEGs (32 px) and two Flickr8k photos (~500 x 375: resized, cropped)."""
    cifar, flickr = SHARED / "cifar10_jpeg", SHARED / "flickr8k_1k"
    if not (cifar.is_dir() and flickr.is_dir()):
        pytest.skip(f"real photos in {SHARED} are absent (tests using ../shared/data skip without them)")
    out = []
    with zipfile.ZipFile(cifar / "test_jpeg.zip") as z:
        members = sorted(n for n in z.namelist() if n.lower().endswith(".jpg"))[:2]
        for i, name in enumerate(members):
            out.append(tmp_path / f"cifar{i}.jpg")
            out[-1].write_bytes(z.read(name))
    out += sorted((flickr / "images").glob("*.jpg"))[:2]
    return out


def _pixels(path: Path, pre: dict) -> np.ndarray:
    """The JSON's preprocessing, done with PIL and numpy: [3, size, size] float32."""
    size = pre["image_size"]
    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[pre["interpolation"]]
    image = Image.open(io.BytesIO(path.read_bytes()))
    if pre["resize_mode"] == "squash":
        image = image.resize((size, size), resample)
    else:  # shortest side to `size`, the other int(size * long / short); then a centre crop
        w, h = image.size
        target = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        if target != image.size:
            image = image.resize(target, resample)
        w, h = image.size
        left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image.convert(pre["convert"]), dtype=np.float32) * np.float32(pre["rescale"])
    array = (array - np.array(pre["mean"], dtype=np.float32)) / np.array(pre["std"], dtype=np.float32)
    return array.transpose(2, 0, 1)


def _ids(texts: list[str], tok: dict, reference) -> np.ndarray:
    """OpenAI's BPE ids as the JSON describes them: start, the text's tokens, end; cut to the context with the
    end kept; zeros after."""
    assert tok["kind"] == "openai-bpe" and tok["vocab"] == "bpe_simple_vocab_16e6.txt.gz"
    bpe, context = reference.SimpleTokenizer(), tok["context_length"]
    rows = np.zeros((len(texts), context), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = [tok["start_id"], *bpe.encode(text), tok["end_id"]]
        if len(ids) > context:
            ids = ids[:context]
            ids[-1] = tok["end_id"]
        rows[i, :len(ids)] = ids
    return rows


def test_the_json_alone_reproduces_classify(tiny_export, tmp_path, reference_tokenizer_module):
    from clipforge.zeroshot.files import classify_files

    meta = json.loads((tiny_export / "clipforge_onnx.json").read_text())
    photos = _photos(tmp_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    image = ort.InferenceSession(str(tiny_export / meta["image"]["file"]), options)
    text = ort.InferenceSession(str(tiny_export / meta["text"]["file"]), options)
    pixels = np.stack([_pixels(p, meta["preprocessing"]) for p in photos])
    image_embeds = image.run([meta["image"]["normalized_output"]], {meta["image"]["input"]: pixels})[0]
    ids = _ids([TEMPLATE.format(label) for label in LABELS], meta["tokenizer"], reference_tokenizer_module)
    text_embeds = text.run([meta["text"]["normalized_output"]], {meta["text"]["input"]: ids})[0]
    scoring = meta["scoring"]
    assert scoring["kind"] == "softmax" and scoring["bias"] == 0.0 and 5 < scoring["scale"] < 50  # not 100
    logits = scoring["scale"] * image_embeds @ text_embeds.T + scoring["bias"]
    logits -= logits.max(axis=1, keepdims=True)
    ours = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    torch.set_num_threads(1)
    out = classify_files(photos, LABELS, "clipforge-tiny", templates=[TEMPLATE], top_k=len(LABELS), draft=False,
                         device="cpu", progress=False, cache_dir=tmp_path / "cache")
    assert [r["image"] for r in out["results"]] == [str(p) for p in photos]
    for row, result in zip(ours, out["results"], strict=True):
        theirs = dict(zip(result["labels"], result["probabilities"], strict=True))
        np.testing.assert_allclose(row, [theirs[label] for label in LABELS], atol=5e-6)  # classify rounds to 6 decimals
    assert ours.argmax(axis=1).tolist() == [LABELS.index(r["labels"][0]) for r in out["results"]]


def test_a_siglip_export_says_sigmoid_squash_and_carries_its_tokenizer_file(tmp_path):
    from clipforge.api import load_model
    from clipforge.inference.onnx_export import export_onnx
    from clipforge.text.families import ModelTokenizer

    assert main(["export", "onnx", "--model", "test-siglip-tiny", "--out", str(tmp_path / "cli")]) == 0
    written = json.loads((tmp_path / "cli" / "clipforge_onnx.json").read_text())
    pre, scoring, tok = written["preprocessing"], written["scoring"], written["tokenizer"]
    assert (pre["image_size"], pre["resize_mode"], pre["interpolation"], pre["mean"], pre["std"]) == \
        (32, "squash", "bicubic", [0.5] * 3, [0.5] * 3)
    assert (scoring["kind"], scoring["scale"], scoring["bias"]) == ("sigmoid", 10.0, -10.0)
    assert (tok["kind"], tok["context_length"], tok["file"], tok["clean"], tok["eos_id"], tok["pad_id"]) == \
        ("sentencepiece", 64, "spiece.model", "canonicalize", 1, 1)
    assert tok["included"] is False  # random weights: no tokenizer file to copy

    loaded = load_model("test-siglip-tiny", "cpu")
    spm = tmp_path / "weights" / "spiece.model"  # the file a real SigLIP checkpoint has beside it
    spm.parent.mkdir()
    spm.write_bytes(b"sentencepiece model bytes")
    with_file = SimpleNamespace(model=loaded.model, preprocess=loaded.preprocess, scoring=loaded.scoring,
                                tokenizer=ModelTokenizer(dict(loaded.tokenizer.spec), 64, spm))
    meta = export_onnx(with_file, tmp_path / "out", name="test-siglip-tiny")
    carried = json.loads((tmp_path / "out" / "clipforge_onnx.json").read_text())
    assert {k: carried[k] for k in ("preprocessing", "scoring", "tokenizer")} == \
        {k: meta[k] for k in ("preprocessing", "scoring", "tokenizer")}
    assert carried["preprocessing"] == pre and carried["scoring"] == scoring
    import hashlib

    assert carried["tokenizer"] == {**tok, "included": True,
                                    "sha256": hashlib.sha256(b"sentencepiece model bytes").hexdigest()}
    assert (tmp_path / "out" / "spiece.model").read_bytes() == b"sentencepiece model bytes"

    bare = export_onnx(loaded.model, tmp_path / "bare", name="test-siglip-tiny")  # a module: read from it
    assert bare["scoring"] == scoring and bare["preprocessing"] == pre
    assert bare["tokenizer"]["included"] is False and not (tmp_path / "bare" / "spiece.model").exists()
