"""Review of `index set-default` (stop 60): a space its name no longer loads, a race with `drop-space`, and the
caller's model left alone by `Library(path, (model, preprocess))` / `Encoder(model)`.

1. `set-default OLD` back to an older build's space of clipforge-tiny said "plain `search`, `tag` and `index stats`
   use it", but a library opened without a model loads the default's *name*, which loads the current build, whose
   space it then searched and tagged, while `index stats` and `tag --list` read the old one. Now refused, in one
   line naming both fingerprints and what to do. (The older build is forged as in `test_s60_set_default.py`.)
2. `set-default X` and `drop-space X` at once: both looked their space up before the library's lock, so both
   succeeded and the default named a dropped space. Now both look it up under the lock.
3. `Encoder(model)` put the caller's model in eval mode and moved it (23 training flags -> 0).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from clipforge.cli.main import main
from clipforge.library import Library, ModelMismatchError
from clipforge.library.encoder import Encoder, resolve_encoder

NAME = "test-rn-tiny"
OLD = "f724b9def30a5c11"  # the forged older build's fingerprint
STORES = ["sqlite", "milvus-lite"]


def _open(kind: str, tmp_path: Path, model: object = None, **kwargs: object):
    if kind == "sqlite":
        return Library(tmp_path / "lib", model, **kwargs)
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from clipforge.library.milvus_library import MilvusLibrary

    return MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "lib", model, **kwargs)


def _where(kind: str, tmp_path: Path) -> tuple[str, list[str]]:
    """How messages name the library, and the CLI arguments that open it."""
    if kind == "sqlite":
        return f"library {tmp_path / 'lib'}", ["--library", str(tmp_path / "lib")]
    return f"milvus-lite:{tmp_path}/m.db (collection clipforge)", \
        ["--library", str(tmp_path / "lib"), "--store", f"milvus-lite:{tmp_path}/m.db"]


def _target(kind: str, tmp_path: Path) -> str:
    return f"--library {tmp_path / 'lib'}" if kind == "sqlite" else f"--store milvus-lite:{tmp_path}/m.db"


def _two_builds(kind: str, tmp_path: Path, photos: Path) -> str:
    """A library of 2 photos built with an older build of NAME, plus the current build's space; the current
    build's fingerprint."""
    current = resolve_encoder(NAME)
    older = Encoder(current.model, current.preprocess, name=NAME, fingerprint=OLD)
    with _open(kind, tmp_path, older) as library:
        library.add(photos, workers=0, progress=False)
    with _open(kind, tmp_path, current, new_space=True) as library:
        library.add(photos, workers=0, progress=False)
    return current.fingerprint


@pytest.mark.parametrize("kind", STORES)
def test_set_default_refuses_a_space_its_name_no_longer_loads(kind, tmp_path, images_factory, capsys) -> None:
    images_factory(tmp_path / "photos", 2, formats=("png",))
    new = _two_builds(kind, tmp_path, tmp_path / "photos")
    described, where = _where(kind, tmp_path)
    target = _target(kind, tmp_path)
    assert main(["index", "set-default", *where, new[:6]]) == 0  # the current build: made the default
    capsys.readouterr()

    # back to the old build: one line naming both builds and the way out, rc 2, the default unchanged
    assert main(["index", "set-default", *where, OLD[:6]]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"error: {described}: model space {NAME} ({OLD[:12]}) cannot be the default: {NAME} now loads another build "
        f"(fingerprint {new[:12]}), so plain `search` and `tag` would not read this space; the current build's space "
        f"({new[:12]}) is the default: keep it, and forget this one with `clipforge index drop-space {target} "
        f"{OLD[:12]}`\n"), err
    with _open(kind, tmp_path, create=False) as library:
        assert {s["fingerprint"]: s["default"] for s in library.spaces()} == {OLD: False, new: True}
        assert library.stats()["model"]["fingerprint"] == new  # stats, as search and tag, read the current build

    # the library object that has the current build loaded says it without loading anything else
    with _open(kind, tmp_path, NAME) as library, pytest.raises(ModelMismatchError) as refused:
        library.set_default(OLD)
    assert str(refused.value).startswith(f"{described}: model space {NAME} ({OLD[:12]}) cannot be the default")


def test_the_refusal_says_what_to_do_when_the_old_build_is_still_the_default(tmp_path, images_factory) -> None:
    """The other two cases of what to do: the current build's space not the default yet, and none at all."""
    from clipforge.library.library_base import unsearchable_default

    images_factory(tmp_path / "photos", 1, formats=("png",))
    new = _two_builds("sqlite", tmp_path, tmp_path / "photos")
    target = f"--library {tmp_path / 'lib'}"
    with Library(tmp_path / "lib", create=False) as library:
        spaces = library.spaces()
    old = next(s for s in spaces if s["fingerprint"] == OLD)
    assert unsearchable_default(old, spaces, new, "L", target).endswith(
        f"make the current build's space the default instead (`clipforge index set-default {target} {new[:12]}`), "
        f"then forget this one with `clipforge index drop-space {target} {OLD[:12]}`")
    assert unsearchable_default(old, [old], new, "L", target).endswith(
        f"re-embed with the current build (`clipforge index add {target} --model {NAME}`), make its space the "
        f"default (`clipforge index set-default {target} {new[:12]}`) and forget this one with `clipforge index "
        f"drop-space {target} {OLD[:12]}`")
    assert unsearchable_default(old, spaces, OLD, "L", target) is None  # the name loads this very build
    assert unsearchable_default({**old, "name": None}, spaces, new, "L", target) is None  # a model passed as object


@pytest.mark.parametrize("kind", STORES)
def test_set_default_and_drop_space_at_once_never_drop_the_default(kind, tmp_path, images_factory) -> None:
    """Both wait for a writer holding the library's lock (an `index add`); whichever goes first, the other is
    refused, and the default is a space that exists."""
    images_factory(tmp_path / "photos", 1, formats=("png",))
    with _open(kind, tmp_path, "test-vit-tiny") as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
    with _open(kind, tmp_path, NAME, new_space=True) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
    rn = resolve_encoder(NAME).fingerprint
    results: dict[str, object] = {}
    with _open(kind, tmp_path, create=False) as library:
        def call(what: str) -> None:
            try:
                results[what] = getattr(library, what)(rn[:6])
            except ValueError as exc:
                results[what] = exc

        if kind == "sqlite":
            from clipforge.library.lock import library_lock

            held = library_lock(library.paths.lock)
        else:
            held = library.milvus.writes()
        with held:
            setter = threading.Thread(target=call, args=("set_default",))
            setter.start()
            time.sleep(1.0)  # looked up (before the fix, outside the lock) and waiting
            dropper = threading.Thread(target=call, args=("drop_space",))
            dropper.start()
            time.sleep(1.0)
        setter.join(60)
        dropper.join(60)
        spaces = {s["fingerprint"]: s["default"] for s in library.spaces()}
        default = library.model_fingerprint if kind == "sqlite" else next(f for f, d in spaces.items() if d)
    assert len(results) == 2
    assert sum(isinstance(r, ValueError) for r in results.values()) == 1, results
    assert sum(spaces.values()) == 1 and default in spaces, (spaces, default)  # before: the default was dropped
    if isinstance(results["drop_space"], ValueError):  # the setter went first (as it does but on a slow load)
        assert default == rn and "default model space" in str(results["drop_space"]), results
    else:
        assert rn not in spaces and "has no single model space" in str(results["set_default"]), results


def _training_flags(model: torch.nn.Module) -> tuple[bool, int]:
    return model.training, sum(m.training for m in model.modules())


def test_the_callers_model_keeps_its_modes_and_the_vectors_do_not_change(tmp_path, images_factory) -> None:
    import clipforge

    images_factory(tmp_path / "photos", 2, formats=("png",))
    model, preprocess = clipforge.load(NAME, device="cpu")[:2]
    reference = Encoder(model, preprocess)  # in eval mode, as loaded: shared, not copied
    assert reference.model is model
    texts = reference.encode_texts(["a dog", "a cat"])
    pixels = torch.rand(2, 3, model.visual.input_resolution, model.visual.input_resolution)
    images = reference.encode_pixels(pixels)

    model.train()
    model.visual.eval()  # a locked tower inside a training model
    flags = _training_flags(model)
    assert flags[0] and flags[1] > 0
    encoder = Encoder(model, preprocess)
    assert _training_flags(model) == flags  # was (False, 0)
    assert encoder.model is not model and _training_flags(encoder.model) == (False, 0)
    np.testing.assert_allclose(encoder.encode_texts(["a dog", "a cat"]), texts, atol=1e-6)
    np.testing.assert_allclose(encoder.encode_pixels(pixels), images, atol=1e-6)
    assert encoder.fingerprint == reference.fingerprint

    with Library(tmp_path / "lib", (model, preprocess)) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        assert len(library.search("a photo", top_k=5)) == 2
    assert _training_flags(model) == flags
    assert all(p.device.type == "cpu" for p in model.parameters())
