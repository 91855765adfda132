"""audit61 finding 2: the linear probe was fit on ``encode_image`` (after ``visual.proj``, unnormalised) and the
report did not say so. The CLIP paper's appendix A.3 probes its ViTs on the features before that projection.

Now the report's ``probe.features`` records kind, layer, dim and l2_normalized; ``--probe-features pre-projection``
fits on the tower before ``visual.proj`` (``ln_post`` of the class token for OpenAI's ViTs) through the same feature
loop and the fast path, proven equal to the value computed by hand from OpenAI's own modules; towers without a
separate projection are refused in one line naming the model; and the feature cache never hands one kind's entry
to the other (the embedding keys are the ones written before the option existed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import clipforge.evaluate.feature_cache as feature_cache
import clipforge.evaluate.features as features  # read per test: run on the code before, each test fails alone
from clipforge.cli.main import main
from clipforge.evaluate import evaluate_linear_probe
from clipforge.models import build_model

pytestmark = pytest.mark.usefixtures("isolated_cache")  # tests/evaluate/conftest.py

# OpenAI's CLIP(...) signature: embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
# context_length, vocab_size, transformer_width, transformer_heads, transformer_layers
_TINY = (32, 32, 2, 128, 16, 77, 49408, 64, 1, 1)  # OpenAI's vocabulary: a plain .pt is read with its BPE


@pytest.fixture()
def reference(reference_model_module):
    """A random ViT in OpenAI's own classes (clip-anytorch's model.py): 2 blocks, width 128, embed 32."""
    torch.manual_seed(0)
    return reference_model_module.CLIP(*_TINY).eval()


def _by_hand(visual: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """OpenAI's VisionTransformer.forward written out from its modules, stopped before ``@ proj``."""
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding
    x = visual.transformer(visual.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
    return visual.ln_post(x[:, 0, :])


def test_pre_projection_equals_the_reference_by_hand_on_the_fast_path(reference, monkeypatch):
    from clipforge.inference.encoder import fast_model
    from clipforge.inference.fast_transformer import InferenceVisionTransformer

    calls = []
    fast_forward = InferenceVisionTransformer._forward
    monkeypatch.setattr(InferenceVisionTransformer, "_forward",
                        lambda self, *a, **k: calls.append(len(a[0])) or fast_forward(self, *a, **k))

    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _by_hand(reference.visual, images)
        # it is the stage before the projection: times proj it is the reference's encode_image
        torch.testing.assert_close(expected @ reference.visual.proj, reference.encode_image(images), atol=1e-6, rtol=0)
        ours = fast_model(build_model(reference.state_dict()))
        proj_before = ours.visual.proj
        got = features.image_encoder(ours, "pre-projection")(images)
        assert got.shape == (5, 128) and sum(calls) == 5  # the packed fast path ran every image, not the reference
        one = features.image_encoder(ours, "pre-projection")(images[:1])  # batch 1: no split across threads
        torch.testing.assert_close(one, expected[:1], atol=1e-5, rtol=0)
        plain = build_model(reference.state_dict())  # no fast forward: the reference forward, stopped as well
        torch.testing.assert_close(features.image_encoder(plain, "pre-projection")(images), expected, atol=1e-5,
                                   rtol=0)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        # the model is untouched: its projection is the same tensor and encode_image is still the embedding
        assert ours.visual.proj is proj_before and "proj" in dict(ours.visual.named_parameters())
        torch.testing.assert_close(ours.encode_image(images), reference.encode_image(images), atol=1e-5, rtol=0)
        torch.testing.assert_close(features.image_encoder(ours, "embedding")(images) - got @ ours.visual.proj,
                                   torch.zeros(5, 32), atol=1e-5, rtol=0)


def test_pre_projection_in_bf16_follows_the_bf16_tower(reference):
    from clipforge.evaluate.common import resolve_model
    from clipforge.inference.cpu import bf16_supported

    if not bf16_supported():
        pytest.skip("this CPU has no native bf16 (clipforge refuses bf16 here)")
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ev = resolve_model(build_model(reference.state_dict()), "cpu", precision="bf16")
    with torch.no_grad():
        got = features.image_encoder(ev.model, "pre-projection")(images).float()
        emb = ev.model.encode_image(images).float()
        expected = _by_hand(reference.visual, images)
    assert got.shape == (4, 128)
    assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.999
    # the same bf16 tower stopped one step early: the bf16 projection of it is the bf16 embedding
    torch.testing.assert_close(got @ ev.model.visual.proj.float(), emb, atol=0.05 * emb.abs().max().item(), rtol=0)


@pytest.mark.parametrize(("name", "why"), [
    ("test-rn-tiny", "its image tower is a ResNet whose attention pooling ends in its own output projection "
                     "(visual.attnpool.c_proj), so there is no separate projection to stop before"),
    ("test-siglip-tiny", "its image tower (MapVisionTransformer) has no projection (visual.proj is None): "
                         "encode_image is already the tower's own feature"),
])
def test_towers_without_a_separate_projection_are_refused_naming_the_model(name, why):
    from clipforge.api import load_model

    model = load_model(name, device="cpu").model
    with pytest.raises(ValueError) as err:
        features.describe_image_features(model, "pre-projection", name)
    assert str(err.value) == f"--probe-features pre-projection: {name}: {why}; use --probe-features embedding"
    with pytest.raises(ValueError, match=r"^--probe-features pre-projection: "):
        features.image_encoder(model, "pre-projection")
    assert features.describe_image_features(model, "embedding")["l2_normalized"] is False


def test_clipa_pre_projection_is_the_mean_patch_feature():
    from clipforge.api import load_model

    model = load_model("test-clipa-tiny", device="cpu").model
    info = features.describe_image_features(model, "pre-projection")
    assert info == {"kind": "pre-projection", "dim": 64, "l2_normalized": False,
                    "layer": "visual.ln_post of the mean of the patch tokens, before visual.proj"}
    images = torch.randn(3, 3, model.visual.input_resolution, model.visual.input_resolution)
    with torch.no_grad():
        got = features.image_encoder(model, "pre-projection")(images)
        torch.testing.assert_close(got @ model.visual.proj, model.encode_image(images), atol=1e-5, rtol=0)
    assert got.shape == (3, 64)


def test_an_unknown_kind_is_one_line():
    with pytest.raises(ValueError) as err:
        evaluate_linear_probe("test-vit-tiny", "folder", "/nonexistent", probe_features="penultimate", progress=False)
    assert str(err.value) == "--probe-features 'penultimate': expected one of embedding, pre-projection"


def test_the_cli_choices_are_the_library_kinds():
    import argparse

    from clipforge.cli.eval import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    probe = parser._subparsers._group_actions[0].choices["eval"]._subparsers._group_actions[0].choices["linear-probe"]
    [action] = [a for a in probe._actions if a.dest == "probe_features"]
    assert tuple(action.choices) == features.FEATURE_KINDS and action.default == "embedding"


def _colours(tmp_path: Path, colour_classes) -> Path:
    root = tmp_path / "colours"
    colour_classes(root / "train", per_class=4, seed=0, side=12)
    colour_classes(root / "test", per_class=2, seed=1, side=12)
    return root


def _entries(cache: Path) -> dict[str, dict]:
    """{kind/split: {"features": tensor, "meta": metadata}} of the feature cache's entries."""
    out = {}
    for path in cache.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            out[f"{meta.get('features')}/{meta['split']}"] = {"features": f.get_tensor("features"), "meta": meta,
                                                               "path": path}
    return out


@pytest.mark.filterwarnings("ignore:tiny_openai.pt is a plain state dict that does not record its activation")
def test_the_probe_on_an_openai_checkpoint_records_and_caches_each_kind(tmp_path, colour_classes, reference):
    root = _colours(tmp_path, colour_classes)
    weights = tmp_path / "tiny_openai.pt"
    torch.save(reference.half().state_dict(), weights)  # as OpenAI ships them: fp16, loaded as fp32
    cache = tmp_path / "features"
    kw = {"out_dir": tmp_path / "out", "device": "cpu", "progress": False, "feature_cache_dir": cache}
    emb = evaluate_linear_probe(str(weights), "folder", root, **kw)
    assert emb["probe"]["features"] == {"kind": "embedding", "dim": 32, "l2_normalized": False,
                                        "layer": "encode_image: visual.ln_post of the class token @ visual.proj "
                                                 "(the joint embedding space)"}
    pre = evaluate_linear_probe(str(weights), "folder", root, probe_features="pre-projection", **kw)
    assert pre["probe"]["features"] == {"kind": "pre-projection", "dim": 128, "l2_normalized": False,
                                        "layer": "visual.ln_post of the class token, before visual.proj"}
    # the embedding entries were there: never reused for pre-projection, and never deleted by its write
    assert pre["timing"]["train"]["cached"] is False and pre["timing"]["test"]["cached"] is False
    entries = _entries(cache)
    assert sorted(entries) == ["embedding/test", "embedding/train", "pre-projection/test", "pre-projection/train"]
    proj = build_model(reference.float().state_dict()).visual.proj.detach()
    for split in ("train", "test"):
        assert entries[f"pre-projection/{split}"]["features"].shape[1] == 128
        torch.testing.assert_close(entries[f"pre-projection/{split}"]["features"] @ proj,
                                   entries[f"embedding/{split}"]["features"], atol=1e-4, rtol=1e-4)
    again = evaluate_linear_probe(str(weights), "folder", root, probe_features="pre-projection", **kw)
    assert again["timing"]["train"]["cached"] is True and again["metrics"] == pre["metrics"]
    assert again["probe"]["features"] == pre["probe"]["features"]
    log = Path(pre["files"]["log"]).read_text()
    assert "probe features: {'kind': 'pre-projection', 'layer': 'visual.ln_post of the class token" in log


def test_a_cache_entry_of_the_other_kind_is_never_read(tmp_path, colour_classes):
    from clipforge.data import open_dataset
    from clipforge.evaluate.common import resolve_model

    root = _colours(tmp_path, colour_classes)
    ev = resolve_model("test-vit-tiny", "cpu")
    ds = open_dataset("folder", root, "test", ev.preprocess)
    kw = {"fingerprint": "fp", "split": "test", "indices": None, "cache_dir": tmp_path / "features",
          "batch_size": 4, "workers": 0, "device": torch.device("cpu"), "progress": False}
    result, hit = feature_cache.cached_features(ev.model, ds, **kw)
    assert hit is False and result.features.shape[1] == 32
    [path] = (tmp_path / "features").glob("*.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["features"] == "embedding"
    assert feature_cache._load(path, meta["digest"], "embedding") is not None
    assert feature_cache._load(path, meta["digest"], "pre-projection") is None  # by content, whatever the file is named
    pre, hit = feature_cache.cached_features(ev.model, ds, features="pre-projection", **kw)
    assert hit is False and pre.features.shape[1] == 128
    assert feature_cache.cached_features(ev.model, ds, features="pre-projection", **kw)[1] is True
    assert feature_cache.cached_features(ev.model, ds, **kw)[1] is True  # the embedding entry survived the other kind's write


class _Fake:
    name, root, samples = "folder", "/data/colours", [("a.png", 0), ("b.png", 1)]

    def __len__(self) -> int:
        return 2


def test_embedding_keys_are_the_ones_written_before_the_option():
    """Golden values computed with the code before this change: existing cache entries are still found."""
    args = ("fp-fp32-draft", _Fake(), "train", [0, 1], 224, "clipforge.models.clip.CLIP")
    assert feature_cache.feature_cache_key(*args, "d" * 32) == "771f2bc947b65f591c139f0e9cbbff12"
    assert feature_cache.feature_cache_slot(*args) == "3ea5ac705af00a78"


def test_each_kind_has_its_own_key_and_slot():
    args = ("fp-fp32-draft", _Fake(), "train", [0, 1], 224, "clipforge.models.clip.CLIP")
    key, slot = feature_cache.feature_cache_key, feature_cache.feature_cache_slot
    assert key(*args, "d" * 32, "embedding") == key(*args, "d" * 32)
    assert key(*args, "d" * 32, "pre-projection") != key(*args, "d" * 32)
    assert slot(*args, "pre-projection") != slot(*args)


def test_clipforge_tiny_refuses_pre_projection_in_one_line_and_records_its_embedding(tmp_path, colour_classes,
                                                                                      capsys):
    root = _colours(tmp_path, colour_classes)
    base = ["eval", "linear-probe", "--model", "clipforge-tiny", "--device", "cpu", "--workers", "0", "--quiet",
            "--dataset", "folder", "--root", str(root), "--feature-cache", str(tmp_path / "features")]
    code = main([*base, "--out", str(tmp_path / "refused"), "--probe-features", "pre-projection"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == ("error: --probe-features pre-projection: clipforge-tiny: its image tower is a ResNet whose "
                   "attention pooling ends in its own output projection (visual.attnpool.c_proj), so there is no "
                   "separate projection to stop before; use --probe-features embedding\n")
    assert not (tmp_path / "refused").exists() and not (tmp_path / "features").exists()  # before any image
    out = tmp_path / "out"
    assert main([*base, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["probe"]["features"] == {
        "kind": "embedding", "dim": report["model"]["embed_dim"], "l2_normalized": False,
        "layer": "encode_image: visual.attnpool (attention pooling ending in its c_proj; the joint embedding space)"}
