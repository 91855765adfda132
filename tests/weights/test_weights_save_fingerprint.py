"""safetensors saving, fingerprints, the registry and the cache location."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch

from clipforge.models import OPENAI_MODELS, create_model_from_config, get_config
from clipforge.weights import (
    OPENAI_WEIGHTS,
    cache_dir,
    cached_path,
    fingerprint_state_dict,
    get_pretrained,
    is_cached,
    list_pretrained,
    load_checkpoint,
    model_config,
    model_fingerprint,
    save_safetensors,
    sha256_from_url,
)


@pytest.fixture(scope="module")
def rn_model():
    torch.manual_seed(0)
    return create_model_from_config(get_config("test-rn-tiny")).eval()


def test_save_safetensors_round_trip_with_config(tmp_path, rn_model):
    path = save_safetensors(rn_model, tmp_path / "sub" / "rn.safetensors")
    state_dict, config = load_checkpoint(path)  # unpacks like a pair
    assert config == get_config("test-rn-tiny") | {"activation": "quick_gelu"}
    expected = rn_model.state_dict()
    assert list(state_dict) == list(expected)  # model order restored from sorted safetensors keys
    assert all(torch.equal(state_dict[k], v) for k, v in expected.items())
    assert state_dict["visual.bn1.num_batches_tracked"].dtype == torch.int64


def test_save_state_dict_without_config_stores_none(tmp_path, rn_model):
    path = save_safetensors(rn_model.state_dict(), tmp_path / "bare.safetensors")
    assert load_checkpoint(path).config is None
    assert model_config(rn_model) == get_config("test-rn-tiny") | {"activation": "quick_gelu"}


def test_fingerprint_tracks_names_dtypes_shapes_and_bytes(rn_model):
    state = rn_model.state_dict()
    base = fingerprint_state_dict(state)
    assert len(base) == 16 and int(base, 16) >= 0
    assert model_fingerprint(rn_model) == base
    assert fingerprint_state_dict(dict(reversed(list(state.items())))) == base  # order-free
    assert fingerprint_state_dict({k: v.clone() for k, v in state.items()}) == base
    changed = dict(state)
    changed["logit_scale"] = state["logit_scale"] + 1e-6
    renamed = {("x" + k if k == "logit_scale" else k): v for k, v in state.items()}
    halved = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    reshaped = dict(state, text_projection=state["text_projection"].reshape(-1))
    prints = {fingerprint_state_dict(d) for d in (changed, renamed, halved, reshaped)}
    assert base not in prints and len(prints) == 4
    strided = dict(state, text_projection=state["text_projection"].t().contiguous().t())
    assert fingerprint_state_dict(strided) == base  # memory layout is not identity


def test_fingerprint_matches_an_independent_computation():
    state = {"b": torch.arange(3, dtype=torch.int64), "a": torch.tensor([1.5], dtype=torch.bfloat16)}
    digest = hashlib.sha256()
    for name, dtype, shape, raw in (("a", "bfloat16", "(1,)", state["a"].view(torch.int16).numpy().tobytes()),
                                    ("b", "int64", "(3,)", state["b"].numpy().tobytes())):
        header = f"{name}\0{dtype}\0{shape}\0{len(raw) // (2 if dtype == 'bfloat16' else 8)}\0".encode()
        digest.update(len(header).to_bytes(8, "little") + header + raw)
    assert fingerprint_state_dict(state) == digest.hexdigest()[:16]


def test_registry_covers_the_nine_openai_models():
    assert list_pretrained()[:9] == [(name, "openai") for name in OPENAI_MODELS]
    for name, entry in OPENAI_WEIGHTS.items():
        assert entry.url.startswith("https://openaipublic.azureedge.net/clip/models/")
        assert entry.url.endswith("/" + entry.filename) and entry.sha256 in entry.url
        assert len(entry.sha256) == 64 and sha256_from_url(entry.url) == entry.sha256
        assert get_pretrained(name) is entry
    assert len({e.sha256 for e in OPENAI_WEIGHTS.values()}) == 9
    assert get_pretrained("ViT-L-14-336").filename == "ViT-L-14-336px.pt"
    assert get_pretrained("ViT-B/32").sha256.startswith("40d36571")
    with pytest.raises(KeyError, match="no pretrained weights named 'RN18'"):
        get_pretrained("RN18")
    with pytest.raises(ValueError, match="does not carry a sha256"):
        sha256_from_url("https://example.com/models/RN50.pt")


def test_cache_dir_precedence_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("CLIPFORGE_CACHE")
    monkeypatch.setenv("CLIPFORGE_CACHE_DIR", str(tmp_path / "older-name"))  # the class-embedding cache's old variable
    assert cache_dir() == tmp_path / "older-name"
    monkeypatch.delenv("CLIPFORGE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "clipforge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "clipforge"
    assert not is_cached("RN50", root=tmp_path)
    cached_path("RN50", root=tmp_path).write_bytes(b"x")
    assert is_cached("RN50", root=tmp_path) and not is_cached("RN101", root=tmp_path)


def test_importing_the_package_is_light():
    code = ("import sys, clipforge.weights as w; w.list_pretrained; w.cache_dir(); "
            "heavy = {'torch', 'safetensors', 'transformers'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_saved_checkpoints_get_the_mode_open_would_give(tmp_path):
    """Checkpoints go through clipforge.atomic: the umask's mode (not mkstemp's 0600), no temp file left."""
    import os

    model = create_model_from_config(get_config("test-vit-tiny"))
    old = os.umask(0o022)
    try:
        path = save_safetensors(model, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert load_checkpoint(path).state_dict.keys() == model.state_dict().keys()


def test_every_cache_lives_under_the_one_cache_root(tmp_path, monkeypatch):
    """Downloads, fingerprints, class embeddings, evaluation features and the local Milvus server's data
    follow one variable (`$CLIPFORGE_CACHE`): before, two variables and three rules chose their folders."""
    from clipforge.evaluate.feature_cache import default_feature_cache_dir
    from clipforge.library.milvus_server import _cache_dir as milvus_server_dir
    from clipforge.weights.fingerprint import _cache_file
    from clipforge.zeroshot.embeddings import default_cache_dir

    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "one"))
    root = tmp_path / "one"
    assert default_cache_dir() == root / "class_embeddings"
    assert default_feature_cache_dir() == root / "features"
    assert milvus_server_dir() == root / "milvus-server"
    assert _cache_file("0" * 64).parent == root / "fingerprints"
