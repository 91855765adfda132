"""The weights fingerprint is hashed once per file, and a text search reads only the text tower.

Issue 20.4 / 22: every command used to hash all the weights (0.3 s for ViT-B/32), and a text
search loaded the image tower only because that hash covers it. The fingerprint keys libraries,
so it must stay exactly what it was: these tests compare against `fingerprint_state_dict` of
the full state dict, as every existing library was keyed.
"""

from __future__ import annotations

import json

import pytest
import torch

from clipforge.api import load_model
from clipforge.models import create_model_from_config, get_config
from clipforge.models.skeleton import skeleton
from clipforge.weights import fingerprint_state_dict, model_fingerprint, save_safetensors
from clipforge.weights.fingerprint import _remember, cached_file_fingerprint, file_identity


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))


def _tiny_file(tmp_path, seed: int = 0, name: str = "tiny.safetensors"):
    torch.manual_seed(seed)
    model = create_model_from_config(get_config("test-vit-tiny")).eval()
    return model, save_safetensors(model, tmp_path / name)


def _full(model: torch.nn.Module) -> str:
    """How libraries were keyed before the cache: a hash of every tensor."""
    return fingerprint_state_dict(model.state_dict())


def test_cached_fingerprint_equals_the_full_hash_before_and_after_caching(tmp_path) -> None:
    model, path = _tiny_file(tmp_path)
    want = _full(model)
    assert cached_file_fingerprint(file_identity(path)) is None
    first = load_model(path, "cpu")
    assert first.fingerprint == want  # hashed, and stored for the file
    assert cached_file_fingerprint(file_identity(path))[:16] == want
    again = load_model(path, "cpu")
    assert again.model.__dict__["_cf_fingerprint"][1][:16] == want  # known before anyone asks
    assert again.fingerprint == model_fingerprint(again.model) == want
    text_only = load_model(path, "cpu", towers=("text",))
    assert text_only.fingerprint == want


def test_a_changed_model_or_file_is_hashed_again(tmp_path) -> None:
    model, path = _tiny_file(tmp_path)
    loaded = load_model(path, "cpu")
    original = loaded.fingerprint
    with torch.no_grad():
        loaded.model.visual.proj.add_(1.0)  # in place: same storage, new version
    assert model_fingerprint(loaded.model) == _full(loaded.model) != original
    # the edited weights never reach the file's record
    assert cached_file_fingerprint(file_identity(path))[:16] == original
    with torch.no_grad():
        loaded.model.visual.proj.data = loaded.model.visual.proj.data.half().float()  # new storage
    assert model_fingerprint(loaded.model) == _full(loaded.model)
    other, _ = _tiny_file(tmp_path, seed=1)  # same path, other weights
    assert load_model(path, "cpu").fingerprint == _full(other) != original


def test_a_corrupt_cache_record_is_ignored(tmp_path) -> None:
    model, path = _tiny_file(tmp_path)
    load_model(path, "cpu").fingerprint  # noqa: B018
    record = next((tmp_path / "cache" / "fingerprints").iterdir())
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "fingerprint": "not hex"}))
    reloaded = load_model(path, "cpu", towers=("text",))  # unknown digest: read whole, hashed again
    assert "_cf_missing_towers" not in reloaded.model.__dict__
    assert reloaded.fingerprint == _full(model)


def _vit_b32_sized_file(tmp_path):
    """ViT-B/32's 151 M parameters in a plain safetensors file (constant values: cheap to write)."""
    from safetensors.torch import save_file

    shapes = skeleton(lambda **c: create_model_from_config(c), **get_config("ViT-B/32")).state_dict()
    tensors = {k: torch.full(v.shape, 0.01 * (i % 7), dtype=v.dtype) for i, (k, v) in enumerate(shapes.items())}
    path = tmp_path / "vit-b32.safetensors"
    save_file(tensors, str(path))
    return path, tensors


@pytest.mark.filterwarnings("ignore:.*does not record its activation")
def test_a_text_only_load_of_vit_b32_reads_only_text_tensors(tmp_path, monkeypatch) -> None:
    import safetensors

    path, tensors = _vit_b32_sized_file(tmp_path)
    want = fingerprint_state_dict(tensors)
    # What the first full load of the file records (the full load's hash is tested on the tiny model above).
    _remember(file_identity(path), fingerprint_state_dict(tensors, length=64))
    read: list[str] = []
    real = safetensors.safe_open

    class Spy:
        def __init__(self, *args, **kwargs) -> None:
            self.inner = real(*args, **kwargs)

        def __enter__(self):
            self.handle = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def get_tensor(self, key):
            read.append(key)
            return self.handle.get_tensor(key)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    loaded = load_model(path, "cpu", towers=("text",))
    text_keys = {k for k in tensors if not k.startswith("visual.")}
    assert read and set(read) == text_keys  # not one image tensor was read
    assert loaded.fingerprint == want
    tokens = loaded.tokenize(["a dog", "a cat"])
    with torch.inference_mode():
        features = loaded.model.encode_text(tokens)
    assert features.shape == (2, 512) and torch.isfinite(features).all()
    with pytest.raises(RuntimeError, match="loaded for text only"), torch.inference_mode():
        loaded.model.encode_image(torch.zeros(1, 3, 224, 224))


def test_text_features_of_a_text_only_load_equal_the_full_model(tmp_path) -> None:
    _, path = _tiny_file(tmp_path)
    full = load_model(path, "cpu")
    full.fingerprint  # noqa: B018  (recorded for the file)
    text_only = load_model(path, "cpu", towers=("text",))
    assert text_only.model.__dict__.get("_cf_missing_towers") == ("image",)
    tokens = full.tokenize(["a photo of a dog", "red"])
    with torch.inference_mode():
        assert torch.equal(text_only.model.encode_text(tokens), full.model.encode_text(tokens))
    # a partial model whose memo no longer fits cannot invent a fingerprint
    with torch.no_grad():
        text_only.model.ln_final.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="without its image tower"):
        model_fingerprint(text_only.model)


def test_towers_are_checked() -> None:
    with pytest.raises(ValueError, match="towers must name"):
        load_model("test-vit-tiny", "cpu", towers=("audio",))



def test_an_image_only_load_computes_the_same_image_features(tmp_path, monkeypatch) -> None:
    import clipforge.inference.precision as precision_module
    from clipforge.inference import BatchEncoder

    _, path = _tiny_file(tmp_path)
    full = load_model(path, "cpu")
    want_fingerprint = full.fingerprint  # recorded for the file
    images = load_model(path, "cpu", towers=("image",))
    assert images.model.__dict__.get("_cf_missing_towers") == ("text",)
    assert images.fingerprint == want_fingerprint
    r = full.model.visual.input_resolution
    x = torch.randn(2, 3, r, r, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(images.model.encode_image(x), full.model.encode_image(x))
    with pytest.raises(RuntimeError, match="loaded for images only"), torch.inference_mode():
        images.model.encode_text(images.tokenize(["a dog"]))
    monkeypatch.setattr(precision_module, "bf16_supported", lambda: True)
    token_embedding = images.model.token_embedding.weight
    encoder = BatchEncoder(images.model, "bf16")
    assert encoder.model.token_embedding.weight is token_embedding  # the unread tower is never cast
    assert token_embedding.dtype == torch.float32 and encoder.model.visual.proj.dtype == torch.bfloat16


def test_embed_reads_the_image_tower_only_and_writes_the_same_vectors(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from clipforge.cli.main import main
    from clipforge.library.export import read_export

    _, path = _tiny_file(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(photos / f"p{i}.png")
    outs = []
    for run in range(2):  # the first run hashes the file; the second loads the image tower only
        out = tmp_path / f"out{run}"
        assert main(["embed", str(photos), "--model", str(path), "--out", str(out), "--workers", "0", "--quiet",
                     "--float32"]) == 0
        outs.append(read_export(out)[0])
    assert cached_file_fingerprint(file_identity(path)) is not None
    assert np.array_equal(outs[0], outs[1])


def test_a_chinese_clip_file_is_hashed_once_too(tmp_path) -> None:
    """Chinese-CLIP loads through its own hook; its files join the same fingerprint cache."""
    from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip

    torch.manual_seed(0)
    model = create_chinese_clip(chinese_clip_config("cn-ViT-B-16", vision_layers=1, vision_width=64,
                                                    image_resolution=32, text_num_hidden_layers=1))
    path = tmp_path / "cn.safetensors"
    save_safetensors(model, path)  # a Chinese-CLIP saves with its own config, as `clipforge wise-ft` writes one
    want = fingerprint_state_dict(model.state_dict())
    assert load_model(path, "cpu").fingerprint == want
    assert cached_file_fingerprint(file_identity(path))[:16] == want
    again = load_model(path, "cpu")
    assert again.model.__dict__["_cf_fingerprint"][1][:16] == want  # from the record: nothing hashed
    assert again.fingerprint == want


def _text_hash(model: torch.nn.Module) -> str:
    """How class-embedding caches were keyed before the memo: a hash of the text tower's tensors."""
    state = model.state_dict()
    return fingerprint_state_dict({k: v for k, v in state.items() if not k.startswith("visual.") and k != "logit_scale"})


def test_the_text_tower_fingerprint_is_hashed_once_per_file(tmp_path, monkeypatch) -> None:
    """A cached zero-shot classifier (`classify`, `tag`, `eval zeroshot`) keyed its class embeddings by a
    hash of the text tower on every command; the digest is now memoised per model and per file like the
    whole model's, and stays exactly the hash it was (caches keep their keys)."""
    import clipforge.weights.fingerprint as fp
    from clipforge.zeroshot.embeddings import text_tower_fingerprint

    model, path = _tiny_file(tmp_path)
    want = _text_hash(model)
    first = load_model(path, "cpu")
    first.fingerprint  # noqa: B018  (the whole model's digest is recorded first: the part joins its record)
    assert text_tower_fingerprint(first.model) == want
    assert cached_file_fingerprint(file_identity(path), "text_tower")[:16] == want
    assert cached_file_fingerprint(file_identity(path))[:16] == _full(model)  # the whole digest is kept

    hashed: list[int] = []
    real = fp.fingerprint_state_dict
    monkeypatch.setattr(fp, "fingerprint_state_dict", lambda *a, **k: hashed.append(1) or real(*a, **k))
    again = load_model(path, "cpu")
    assert text_tower_fingerprint(again.model) == want and not hashed  # from the file's record
    text_only = load_model(path, "cpu", towers=("text",))
    assert text_tower_fingerprint(text_only.model) == want and not hashed
    assert text_tower_fingerprint(again.model) == want and not hashed  # and from the model's memo

    with torch.no_grad():
        again.model.ln_final.weight.add_(1.0)  # an edited text tower is hashed again, never from the file
    assert text_tower_fingerprint(again.model) == _text_hash(again.model) != want and hashed
    assert cached_file_fingerprint(file_identity(path), "text_tower")[:16] == want
    with torch.no_grad():
        first.model.visual.proj.add_(1.0)  # an image-tower edit leaves the text digest as it is
    assert text_tower_fingerprint(first.model) == want


def test_a_damaged_part_record_is_hashed_again(tmp_path) -> None:
    from clipforge.zeroshot.embeddings import text_tower_fingerprint

    model, path = _tiny_file(tmp_path)
    text_tower_fingerprint(load_model(path, "cpu").model)  # the part first: the record holds only it
    record = next((tmp_path / "cache" / "fingerprints").iterdir())
    data = json.loads(record.read_text())
    assert set(data) == {"identity", "parts"}
    record.write_text(json.dumps({**data, "parts": {"text_tower": "0" * 63 + "g"}}))
    assert text_tower_fingerprint(load_model(path, "cpu").model) == _text_hash(model)
    assert cached_file_fingerprint(file_identity(path), "text_tower")[:16] == _text_hash(model)  # rewritten
