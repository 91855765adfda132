"""Class embeddings (parity with the notebook recipe), the on-disk cache, and predict()."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.text import tokenize
from clipforge.zeroshot import ZeroShotClassifier, build_class_embeddings, cache_key
from clipforge.zeroshot.embeddings import encode_texts

CLASSES = ["cat", "dog", "a very long and unusual name of an aeroplane", "red fox", "sea"]
TEMPLATES = ["a photo of a {}.", "{}", "a blurry, low resolution photo of the big {} on a sunny day.", "art of {}."]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The suite shares 2 CPUs; tiny matmuls with 2 spinning intra-op threads ran ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _reference(model, classnames, templates):
    """OpenAI's notebook loop: one class at a time, all its prompts in one batch."""
    rows = []
    with torch.no_grad():
        for name in classnames:
            emb = model.encode_text(tokenize([t.format(name) for t in templates]))
            emb = emb / emb.norm(dim=-1, keepdim=True)
            emb = emb.mean(dim=0)
            rows.append(emb / emb.norm())
    return torch.stack(rows)


class _Spy:
    def __init__(self, fn):
        self.fn, self.calls, self.lengths = fn, 0, []

    def __call__(self, tokens):
        self.calls += 1
        self.lengths.append(int(tokens.argmax(dim=-1).max()) + 1)
        return self.fn(tokens)


def test_class_embeddings_match_reference_and_are_batch_independent(tiny_vit):
    expected = _reference(tiny_vit, CLASSES, TEMPLATES)
    for batch_size in (1, 3, 1000):
        got = build_class_embeddings(tiny_vit, CLASSES, TEMPLATES, batch_size=batch_size, progress=False)
        assert got.shape == (5, tiny_vit.embed_dim)
        torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)
    assert torch.allclose(got.norm(dim=-1), torch.ones(5))


def test_prompts_are_batched_by_length(tiny_vit, monkeypatch):
    spy = _Spy(tiny_vit.encode_text)
    monkeypatch.setattr(tiny_vit, "encode_text", spy)
    build_class_embeddings(tiny_vit, CLASSES, TEMPLATES, batch_size=4, progress=False)
    assert spy.calls == 5  # 20 prompts / 4
    assert spy.lengths == sorted(spy.lengths)  # short batches first
    assert spy.lengths[0] < spy.lengths[-1]


def test_encode_texts_keeps_input_order(tiny_vit):
    texts = ["a long caption about a dog running on the beach", "cat", "two birds", "x"]
    got = encode_texts(tiny_vit, texts, batch_size=2, progress=False)
    with torch.no_grad():
        ref = tiny_vit.encode_text(tokenize(texts))
    torch.testing.assert_close(got, ref / ref.norm(dim=-1, keepdim=True), atol=2e-6, rtol=1e-5)


def test_second_build_reads_cache_without_encoding_text(tiny_vit, tmp_path, monkeypatch):
    first = ZeroShotClassifier(tiny_vit, CLASSES, TEMPLATES, cache_dir=tmp_path, progress=False)
    assert not first.cache_hit and first.cache_path is not None and first.cache_path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [first.cache_path.name]  # no temp files left

    spy = _Spy(tiny_vit.encode_text)
    monkeypatch.setattr(tiny_vit, "encode_text", spy)
    second = ZeroShotClassifier(tiny_vit, CLASSES, TEMPLATES, cache_dir=tmp_path, progress=False)
    assert second.cache_hit and spy.calls == 0
    torch.testing.assert_close(second.class_embeddings, first.class_embeddings, atol=0, rtol=0)

    ZeroShotClassifier(tiny_vit, CLASSES, TEMPLATES[:2], cache_dir=tmp_path, progress=False)
    ZeroShotClassifier(tiny_vit, CLASSES[::-1], TEMPLATES, cache_dir=tmp_path, progress=False)
    assert spy.calls == 2  # other templates / other class order are cache misses
    with torch.no_grad():
        tiny_vit.visual.conv1.weight.add_(0.01)  # the image tower does not enter class embeddings
    assert ZeroShotClassifier(tiny_vit, CLASSES, TEMPLATES, cache_dir=tmp_path, progress=False).cache_hit
    with torch.no_grad():
        tiny_vit.ln_final.weight.add_(0.01)  # other text weights -> other fingerprint -> miss
    third = ZeroShotClassifier(tiny_vit, CLASSES, TEMPLATES, cache_dir=tmp_path, progress=False)
    assert not third.cache_hit and spy.calls == 3
    assert len(list(tmp_path.glob("*.safetensors"))) == 4


def test_model_class_is_part_of_the_key(tiny_vit, tmp_path):
    class Other(type(tiny_vit)):
        """Same weights, a different encode_text: must not share cached embeddings."""

        def encode_text(self, text):
            return -super().encode_text(text)

    other = Other.__new__(Other)
    other.__dict__ = tiny_vit.__dict__  # the very same parameters
    a = ZeroShotClassifier(tiny_vit, CLASSES, TEMPLATES, cache_dir=tmp_path, progress=False)
    b = ZeroShotClassifier(other, CLASSES, TEMPLATES, cache_dir=tmp_path, progress=False)
    assert a.fingerprint == b.fingerprint and not b.cache_hit
    torch.testing.assert_close(b.class_embeddings, -a.class_embeddings)


def test_cache_key_covers_every_input():
    base = cache_key("abc", ["a", "b"], ["{}"], 77, "m.CLIP")
    assert base == cache_key("abc", ["a", "b"], ["{}"], 77, "m.CLIP")
    others = {cache_key("abd", ["a", "b"], ["{}"], 77, "m.CLIP"), cache_key("abc", ["b", "a"], ["{}"], 77, "m.CLIP"),
              cache_key("abc", ["a", "b"], ["{}."], 77, "m.CLIP"), cache_key("abc", ["a", "b"], ["{}"], 76, "m.CLIP"),
              cache_key("abc", ["a b"], ["{}"], 77, "m.CLIP"), cache_key("abc", ["a", "b"], ["{}"], 77, "m.Other")}
    assert base not in others and len(others) == 6


def test_damaged_cache_is_rebuilt(tiny_vit, tmp_path, caplog):
    first = ZeroShotClassifier(tiny_vit, CLASSES, TEMPLATES, cache_dir=tmp_path, progress=False)
    first.cache_path.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        again = ZeroShotClassifier(tiny_vit, CLASSES, TEMPLATES, cache_dir=tmp_path, progress=False)
    assert not again.cache_hit and "unreadable class-embedding cache" in caplog.text
    torch.testing.assert_close(again.class_embeddings, first.class_embeddings)
    assert ZeroShotClassifier(tiny_vit, CLASSES, TEMPLATES, cache_dir=tmp_path, progress=False).cache_hit


def test_use_cache_false_writes_nothing(tiny_vit, tmp_path):
    clf = ZeroShotClassifier(tiny_vit, CLASSES, TEMPLATES, cache_dir=tmp_path / "c", use_cache=False, progress=False)
    assert not (tmp_path / "c").exists() and clf.fingerprint is None


def test_predict_and_logits(tiny_vit, tmp_path):
    clf = ZeroShotClassifier(tiny_vit, CLASSES, "a photo of a {}.", cache_dir=tmp_path, progress=False)
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = tiny_vit.encode_image(images)
    logits = clf.logits(feats)
    expected = tiny_vit.logit_scale.exp() * (feats / feats.norm(dim=-1, keepdim=True)) @ clf.class_embeddings.t()
    torch.testing.assert_close(logits, expected)
    labels, probs = clf.predict(images, top_k=3)
    full = logits.softmax(dim=-1)
    for row, names, p in zip(full, labels, probs, strict=True):
        order = torch.argsort(row, descending=True)[:3]
        assert names == [CLASSES[i] for i in order]
        torch.testing.assert_close(p, row[order])
    assert (probs[:, :-1] >= probs[:, 1:]).all()
    labels, probs = clf.predict(images[0], top_k=50)  # k beyond the class count is clipped
    assert probs.shape == (1, 5) and float(probs.sum()) == pytest.approx(1.0, abs=1e-5)


def test_predict_accepts_pil_and_paths(tiny_vit, tmp_path):
    clf = ZeroShotClassifier(tiny_vit, CLASSES, "{}", cache_dir=tmp_path, progress=False)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    image.save(tmp_path / "x.png")
    by_pil = clf.predict(image, top_k=2)
    by_path = clf.predict([tmp_path / "x.png", str(tmp_path / "x.png")], top_k=2)
    assert by_path[0] == [by_pil[0][0]] * 2
    torch.testing.assert_close(by_path[1][0], by_pil[1][0])


def test_a_path_is_read_as_every_command_reads_files(tiny_vit, tmp_path, largest_jpeg_decode):
    """`predict(path)` goes through the one file reader (`Preprocess.load`: a big JPEG at a reduced DCT scale,
    only the centre crop resampled), as `classify`, `embed` and `index add` read it, not a whole decode and
    the exact resize of a PIL image."""
    clf = ZeroShotClassifier(tiny_vit, CLASSES, "{}", cache_dir=tmp_path, progress=False)
    small = Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    small.resize((1600, 1200), Image.Resampling.BICUBIC).save(tmp_path / "big.jpg", quality=90)
    batch = clf._as_batch([tmp_path / "big.jpg"])
    assert 0 < largest_jpeg_decode[0] <= 1600 * 1200 // 16, largest_jpeg_decode[0]
    torch.testing.assert_close(batch, clf.preprocess.load(tmp_path / "big.jpg").unsqueeze(0), rtol=0, atol=0)


def test_classifier_rejects_empty_inputs(tiny_vit):
    with pytest.raises(ValueError, match="at least one class name"):
        ZeroShotClassifier(tiny_vit, [], "{}")
    with pytest.raises(ValueError, match="exactly once"):
        ZeroShotClassifier(tiny_vit, ["a"], ["no placeholder"], use_cache=False)


def test_an_unwritable_cache_is_said_once_not_per_classifier(tiny_vit, tmp_path, caplog):
    """A server on a read-only library cannot write its class-embedding cache: every anonymous classify logged
    the same warning (one log line per request). Said once per folder; classification still works."""
    import logging

    from clipforge.zeroshot.classifier import ZeroShotClassifier

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="clipforge.zeroshot.classifier"):
        for labels in (["cat", "dog"], ["car", "boat"], ["cat", "dog"]):
            classifier = ZeroShotClassifier(tiny_vit, labels, "simple", cache_dir=blocker / "cache", progress=False)
            assert classifier.class_embeddings.shape[0] == 2 and not classifier.cache_hit
    said = [r for r in caplog.records if "could not write class-embedding cache" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
