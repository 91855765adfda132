"""review58 (of commit 388b79d) finding 3: the probe's feature cache grew without limit.

The digest in the key made every touched, re-extracted or rsynced dataset a new key and a whole new entry, and the
old one was never removed (nor the version-1 entries no run reads again): ImageNet train is ~2.6 GB an entry. An
entry's name now starts with its slot (the key without the digest); writing one deletes its slot's others and the
version-1 entries, then cuts the folder to ``$CLIPFORGE_FEATURE_CACHE_BYTES``, least recently used first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from clipforge.evaluate.feature_cache import cached_features

MODEL = "test-vit-tiny"


@pytest.fixture(autouse=True)
def _isolated(isolated_cache, monkeypatch):
    """`isolated_cache` (tests/evaluate/conftest.py), with the feature cache's size cap at its default."""
    monkeypatch.delenv("CLIPFORGE_FEATURE_CACHE_BYTES", raising=False)


@pytest.fixture()
def setup(tmp_path, colour_classes):
    """(model, open the test split again, cached_features' keywords)."""
    from clipforge.data import open_dataset
    from clipforge.evaluate.common import resolve_model

    root = tmp_path / "data"
    colour_classes(root / "test", per_class=2, seed=1, side=12)
    ev = resolve_model(MODEL, "cpu")
    kw = {"fingerprint": "fp", "split": "test", "indices": None, "cache_dir": tmp_path / "features",
          "batch_size": 4, "workers": 0, "device": torch.device("cpu"), "progress": False}
    return ev.model, lambda: open_dataset("folder", root, "test", ev.preprocess), kw, root


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.safetensors"))


def _touch_all(root: Path, seconds: int) -> None:
    for path in root.rglob("*.png"):
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_a_touched_dataset_replaces_its_entry_instead_of_adding_one(setup, tmp_path):
    model, opened, kw, root = setup
    folder = kw["cache_dir"]
    names = []
    for run in range(3):
        _, hit = cached_features(model, opened(), **kw)
        assert hit is False
        names.append(_entries(folder))
        assert len(names[-1]) == 1, f"after run {run + 1}: {names[-1]}"  # was 1, 2, 3 entries
        _touch_all(root, run + 1)  # rsync without -t, a re-extracted archive: every mtime new
    assert len({n[0] for n in names}) == 3 and len({n[0].split("-")[0] for n in names}) == 1  # one slot, new keys
    assert cached_features(model, opened(), **kw)[1] is False  # touched after run 3: a miss, still one entry
    assert cached_features(model, opened(), **kw)[1] is True and len(_entries(folder)) == 1
    other = {**kw, "fingerprint": "another model"}  # another slot is not this one's to delete
    cached_features(model, opened(), **other)
    assert len(_entries(folder)) == 2 and cached_features(model, opened(), **kw)[1] is True


def test_entries_of_earlier_versions_are_deleted_and_nothing_else_named_alike(setup):
    from safetensors.torch import save_file

    model, opened, kw, _ = setup
    folder = kw["cache_dir"]
    folder.mkdir(parents=True)
    tensors = {"features": torch.zeros(6, 4), "labels": torch.zeros(6, dtype=torch.long),
               "indices": torch.arange(6)}
    v1 = folder / ("ab" * 16 + ".safetensors")  # as 388b79d^ wrote it: named by its key, no digest
    save_file(tensors, str(v1), metadata={"bad": "{}", "timing": "{}", "fingerprint": "fp", "split": "test"})
    v2 = folder / ("ef" * 16 + ".safetensors")  # as 388b79d wrote it: a digest of full paths, no slot
    save_file(tensors, str(v2), metadata={"bad": "{}", "timing": "{}", "fingerprint": "fp", "split": "test",
                                          "digest": "0" * 32})
    unrelated = folder / ("cd" * 16 + ".safetensors")  # a key-like name that is not a feature entry: not ours
    save_file({"x": torch.zeros(2)}, str(unrelated))
    cached_features(model, opened(), **kw)
    assert not v1.exists() and not v2.exists()  # never read again, and never removed either
    assert unrelated.exists() and len(list(folder.glob("*-*.safetensors"))) == 1


def test_a_symlinked_root_is_the_same_entry_not_a_rival_one(setup, tmp_path):
    from clipforge.data import open_dataset

    model, opened, kw, root = setup
    link = tmp_path / "link"
    link.symlink_to(root)
    via_link = open_dataset("folder", link, "test", opened().transform)
    assert via_link.samples[0][0].startswith(str(link))
    assert cached_features(model, opened(), **kw)[1] is False
    assert cached_features(model, via_link, **kw)[1] is True  # was a miss: the digest hashed the full paths
    assert cached_features(model, opened(), **kw)[1] is True and len(_entries(kw["cache_dir"])) == 1


def test_the_folder_is_cut_to_its_budget_least_recently_used_first(setup, monkeypatch):
    model, opened, kw, _ = setup
    folder = kw["cache_dir"]
    cached_features(model, opened(), **{**kw, "fingerprint": "model-a"})
    (a,) = _entries(folder)
    size = (folder / a).stat().st_size
    cached_features(model, opened(), **{**kw, "fingerprint": "model-b"})
    (b,) = set(_entries(folder)) - {a}
    now = time.time()
    os.utime(folder / a, (now - 100, now - 100))
    os.utime(folder / b, (now - 50, now - 50))
    assert cached_features(model, opened(), **{**kw, "fingerprint": "model-a"})[1] is True  # a used: now the newest
    monkeypatch.setenv("CLIPFORGE_FEATURE_CACHE_BYTES", str(int(2.5 * size)))
    cached_features(model, opened(), **{**kw, "fingerprint": "model-c"})
    left = _entries(folder)
    assert len(left) == 2 and a in left and b not in left  # b, the least recently used, evicted
    monkeypatch.setenv("CLIPFORGE_FEATURE_CACHE_BYTES", "1")
    cached_features(model, opened(), **{**kw, "fingerprint": "model-d"})
    assert _entries(folder) == []  # a budget below one entry holds none (`evict_cache`'s rule: the new one goes last)
