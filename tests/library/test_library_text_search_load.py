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
