"""A text search loads the library's model without its image tower, and libraries keyed before the
weights-fingerprint cache existed still open (issue 20.4; `tests/perf/test_perf_fingerprint_cache.py`)."""

from __future__ import annotations

import pytest
import torch

from clipforge.models import create_model_from_config, get_config
from clipforge.weights import save_safetensors


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))


def _tiny_file(tmp_path):
    torch.manual_seed(0)
    return save_safetensors(create_model_from_config(get_config("test-vit-tiny")).eval(), tmp_path / "tiny.safetensors")


def test_an_existing_library_opens_for_a_text_search(tmp_path, images_factory, capsys, monkeypatch) -> None:
    """A library indexed before the cache existed (its fingerprint hashed from every tensor) answers a
    text search loaded for text only, with the same results as a full load."""
    import shutil

    from clipforge import api
    from clipforge.cli.main import main

    path = _tiny_file(tmp_path)
    images_factory(tmp_path / "photos", 6)
    lib = ["--library", str(tmp_path / "lib")]
    assert main(["index", "add", str(tmp_path / "photos"), "--model", str(path), *lib, "--workers", "0", "-q"]) == 0
    shutil.rmtree(tmp_path / "cache")  # as if built by a clipforge without the cache
    towers_asked: list[object] = []
    real = api.load_model
    monkeypatch.setattr(api, "load_model", lambda *a, **k: towers_asked.append(k.get("towers")) or real(*a, **k))
    capsys.readouterr()
    assert main(["search", "a red photo", *lib, "--top-k", "3"]) == 0
    cold = capsys.readouterr().out
    assert main(["search", "a red photo", *lib, "--top-k", "3"]) == 0  # now without the image tower
    warm = capsys.readouterr().out
    assert cold == warm and len(cold.splitlines()) == 3
    assert towers_asked == [("text",), ("text",)]
    photo = str(next((tmp_path / "photos").iterdir()))
    assert main(["search", f'"a red photo" + {photo}', *lib, "--top-k", "3"]) == 0  # both kinds: both towers
    assert towers_asked[-1] is None
    assert main(["search", "--image", photo, *lib, "--top-k", "1"]) == 0  # an image alone: the image tower
    assert towers_asked[-1] == ("image",) and capsys.readouterr().out.split()[-1] == photo


def test_index_add_reads_the_image_tower_unless_it_will_tag(tmp_path, images_factory, capsys, monkeypatch) -> None:
    """`index add` loads the image tower only (the text tensors stay on disk) until the library has a
    tag vocabulary; then it loads both and tags the new photos. An add that loaded the image tower
    before a vocabulary appeared leaves its photos for the next add to tag."""
    from clipforge import api
    from clipforge.cli.main import main
    from clipforge.library import Library
    from clipforge.weights.towers import missing_towers

    path = _tiny_file(tmp_path)
    lib = ["--library", str(tmp_path / "lib")]
    loaded: list[object] = []
    real = api.load_model

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        loaded.append(missing_towers(model.model))
        return model

    monkeypatch.setattr(api, "load_model", spy)
    images_factory(tmp_path / "a", 3)
    assert main(["index", "add", str(tmp_path / "a"), "--model", str(path), *lib, "--workers", "0", "-q"]) == 0
    images_factory(tmp_path / "b", 2, seed=5)
    assert main(["index", "add", str(tmp_path / "b"), *lib, "--workers", "0", "-q"]) == 0
    assert loaded == [(), ("text",)]  # first use of the file: whole (its fingerprint is hashed once); then images only
    assert main(["tag", "--labels", "cat, dog", "--templates", "simple", *lib]) == 0
    capsys.readouterr()
    with Library(tmp_path / "lib", str(path), towers=("image",)) as library:
        assert missing_towers(library.encoder.model) == ()  # widened: this add would tag
    images_factory(tmp_path / "c", 2, seed=9)
    assert main(["index", "add", str(tmp_path / "c"), *lib, "--workers", "0"]) == 0
    assert loaded[-1] == () and "tagged 2 new images" in capsys.readouterr().out
    # an add whose model was loaded for images only before the vocabulary appeared: no tags, no error
    from clipforge.library.encoder import Encoder

    partial = real(str(path), towers=("image",))
    assert missing_towers(partial.model) == ("text",)
    images_factory(tmp_path / "d", 1, seed=11)
    with Library(tmp_path / "lib", Encoder(partial.model, partial.preprocess, name=str(path), copy_model=False)) as adder:
        report = adder.add(tmp_path / "d", workers=0, progress=False)
        assert report.added == 1 and adder.last_tagged == 0
        assert len(adder.store.untagged_images(adder.model_fingerprint)) == 1
    images_factory(tmp_path / "f", 1, seed=13)
    assert main(["index", "add", str(tmp_path / "f"), *lib, "--workers", "0"]) == 0
    assert "tagged 2 new images" in capsys.readouterr().out  # the next add tags what that one left
