"""Dataset features cached on disk, so probes and sweeps never re-run the image tower.

A linear probe's cost is almost all feature extraction; the fits afterwards take seconds.
Features are keyed by the weights fingerprint, the dataset (name, resolved root, split), the
exact subset of indices, the input resolution and a digest of what the features and labels are
OF (`dataset_digest`: each sample's source, label, size and mtime), and written atomically as
safetensors.

Decisions this module owns:

- **A cache never changes which labels a probe is scored against.** The key had no file list: after a user
  swapped two training class folders (or moved a few misfiled images), the next run read the old features WITH
  THEIR OLD LABELS and printed the old result with exit status 0. The digest makes a relabelled, edited, added or
  removed file a miss, and a hit is still checked against the dataset's labels at the cached indices; a dataset
  that cannot say what its samples are (no ``samples``) is not cached at all.
- **The cache does not grow without limit.** The digest makes every touched file a new key, so each edit of a
  dataset left a whole stale entry behind (ImageNet train: ~2.6 GB at 512-d fp32). An entry's file name starts with
  its *slot* (`feature_cache_slot`: the key without the digest: weights, model class, dataset, resolved root, split,
  indices, resolution), and writing an entry deletes the other entries of its slot (they can never be read again:
  their digest is not the dataset's any more) and the entries of earlier versions (named by their key alone, never
  read again); then the folder is cut to `feature_cache_budget()` bytes, least recently used first (a hit counts as
  a use), by the class-embedding cache's `evict_cache`.
- **One dataset, one digest, whichever path reaches it.** The digest names each sample relative to the dataset's
  root (the resolved root is in the key): through a symlinked or relative ``--root`` the same files were another
  digest, and with one entry a slot, a user alternating the two paths would extract the features every time.
- **Embedding and pre-projection features never meet.** `cached_features(features="pre-projection")` (the
  tower before ``visual.proj``, `features.FEATURE_KINDS`) is another slot and key (the key names the kind only when
  it is not ``"embedding"``, so every entry written before the choice existed is still found by its key), and an
  entry records its kind: a file whose kind is not the one asked for is a miss, whatever its name.
- **A hit's timing is this run's.** It used to hand back the extracting run's throughput and batch size as if
  measured now: a hit reports the seconds this run spent reading the entry, ``features_cached: true``, no
  throughput, and the extracting run's timing under ``extracted_by_an_earlier_run``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipforge.atomic import atomic_path
from clipforge.evaluate.features import FeatureResult, extract_image_features
from clipforge.zeroshot.embeddings import default_cache_dir, evict_cache

__all__ = ["DEFAULT_FEATURE_CACHE_BYTES", "cached_features", "dataset_digest", "default_feature_cache_dir",
           "feature_cache_budget", "feature_cache_key", "feature_cache_slot", "prune_feature_cache"]

_VERSION = 3  # 2: the key covers the samples' digest; 3: sources relative to the root, named by slot
DEFAULT_FEATURE_CACHE_BYTES = 32 * 2**30  # a dozen ImageNet-train entries at 512-d; `$CLIPFORGE_FEATURE_CACHE_BYTES`
_KEY_NAME = re.compile(r"[0-9a-f]{32}\.safetensors")  # an entry named by its key alone (versions 1 and 2)
log = logging.getLogger(__name__)


def default_feature_cache_dir() -> Path:
    return default_cache_dir().parent / "features"


def feature_cache_budget() -> int:
    """``$CLIPFORGE_FEATURE_CACHE_BYTES`` (bytes) or `DEFAULT_FEATURE_CACHE_BYTES`: the LRU budget of the folder."""
    value = os.environ.get("CLIPFORGE_FEATURE_CACHE_BYTES", "").strip()
    if value:
        try:
            return max(0, int(value))
        except ValueError:
            log.warning("ignoring CLIPFORGE_FEATURE_CACHE_BYTES=%r (not a whole number of bytes)", value)
    return DEFAULT_FEATURE_CACHE_BYTES


def _stat(path: Any) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file on disk, or None (an archive member, an array row)."""
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None


def dataset_digest(dataset: Any, indices: Sequence[int] | None) -> str | None:
    """A digest of what features of `dataset` (subset `indices`) are of, or None when the dataset cannot say.

    Covers the class names; each chosen sample's source, label and (for a file on disk) size and mtime_ns; the
    files that hold samples which are not files of their own (a zip, an HDF5 file: size and mtime_ns); the pixels
    of an in-memory array dataset (CIFAR's pickles, MNIST); and VOC's multi-label marks. So a relabelled, edited,
    added or removed file changes it. A source under the dataset's root is named relative to it, so a symlinked or
    relative root gives the same digest (callers compare the resolved root themselves). Stats only, no image is
    read: ~1 s per 300k files on a local disk."""
    samples = getattr(dataset, "samples", None)
    if not isinstance(samples, (list, tuple)):
        return None
    chosen = range(len(samples)) if indices is None else indices
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([str(c) for c in getattr(dataset, "classnames", [])], ensure_ascii=False).encode())
    root = getattr(dataset, "root", None)
    prefix = os.path.join(str(root), "") if root is not None else None  # "<root>/"
    for i in chosen:
        source, label = samples[int(i)]
        name = str(source)
        name = name[len(prefix):] if prefix and name.startswith(prefix) else name
        h.update(f"{name}\0{int(label)}\0{_stat(source)}\n".encode("utf-8", "surrogateescape"))
    for attr in ("root", "images_path", "csv_path"):  # containers: a zip root, an .h5 file
        value = getattr(dataset, attr, None)
        if value is not None:
            h.update(f"{attr}\0{_stat(value)}\n".encode())
    images = getattr(dataset, "images", None)
    if isinstance(images, np.ndarray):  # pixels held in memory: hash them (CIFAR-10 test: 30 MB, ~30 ms)
        pick = images if indices is None else images[np.asarray(list(indices), dtype=np.int64)]
        h.update(np.ascontiguousarray(pick).data)
    marks = getattr(dataset, "multilabels", None)
    if marks is not None:
        marks = np.asarray(marks)
        h.update(np.ascontiguousarray(marks if indices is None else marks[list(indices)]).tobytes())
    return h.hexdigest()


def _key_fields(fingerprint: str, dataset: Any, split: str, indices: Sequence[int] | None, resolution: int,
                model_class: str, features: str = "embedding") -> dict[str, Any]:
    return {"version": _VERSION, "fingerprint": fingerprint, "model_class": model_class,
            "dataset": str(getattr(dataset, "name", "")),
            "root": str(Path(getattr(dataset, "root", "")).resolve()), "split": split,
            "num_samples": len(dataset), "indices": None if indices is None else list(indices),
            "resolution": int(resolution),
            **({} if features == "embedding" else {"features": features})}  # embedding: the keys written before


def feature_cache_key(fingerprint: str, dataset: Any, split: str, indices: Sequence[int] | None,
                      resolution: int, model_class: str = "", digest: str | None = None,
                      features: str = "embedding") -> str:
    payload = json.dumps({**_key_fields(fingerprint, dataset, split, indices, resolution, model_class, features),
                          "digest": digest}, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def feature_cache_slot(fingerprint: str, dataset: Any, split: str, indices: Sequence[int] | None,
                       resolution: int, model_class: str = "", features: str = "embedding") -> str:
    """The key without the digest: which features an entry is for, whatever state of the files it saw. One entry
    per slot is ever useful (the one whose digest is the dataset's now): writing one deletes the slot's others."""
    payload = json.dumps(_key_fields(fingerprint, dataset, split, indices, resolution, model_class, features),
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _is_old_entry(path: Path) -> bool:
    """Whether `path` (named by a key alone) is a feature entry of an earlier version (1: no digest; 2: the
    digest of full paths), which no key of this version names: never read again."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta, names = f.metadata() or {}, set(f.keys())
    except Exception:  # noqa: BLE001 - not a safetensors file: not ours to delete
        return False
    return {"features", "labels", "indices"} <= names and "fingerprint" in meta and "slot" not in meta


def prune_feature_cache(cache_dir: Path, slot: str, keep: Path, max_bytes: int | None = None) -> int:
    """After writing `keep`: delete the other entries of its `slot` and earlier versions' entries, then the least
    recently used entries until the folder holds at most `max_bytes` (`feature_cache_budget()`; `keep` goes last).
    Returns how many files were deleted."""
    removed = 0
    for path in list(cache_dir.glob(f"{slot}-*.safetensors")) + \
            [p for p in cache_dir.glob("*.safetensors") if _KEY_NAME.fullmatch(p.name) and _is_old_entry(p)]:
        if path != keep:
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed + evict_cache(cache_dir, feature_cache_budget() if max_bytes is None else max_bytes, keep=keep)


def _load(path: Path, digest: str, features: str = "embedding") -> FeatureResult | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in ("features", "labels", "indices")}
        if meta.get("digest") != digest or meta.get("features", "embedding") != features:  # before: embedding
            return None
        if not bool(torch.isfinite(tensors["features"]).all()):  # a NaN model's, kept before they were refused:
            return None  # recomputed, so the encoder refuses it by name (`inference.encoder.check_finite`)
        return FeatureResult(tensors["features"], tensors["labels"], tensors["indices"],
                             json.loads(meta.get("bad", "{}")), json.loads(meta.get("timing", "{}")))
    except Exception:  # a damaged cache entry is recomputed, never trusted
        return None


def _labels_agree(hit: FeatureResult, dataset: Any) -> bool:
    """Whether the cached labels are the dataset's labels at the cached indices (a digest collision, an entry
    written by hand or by another version: never trusted)."""
    samples = dataset.samples
    try:
        want = [int(samples[int(i)][1]) for i in hit.indices.tolist()]
    except (IndexError, TypeError, ValueError):
        return False
    return len(want) == len(hit.labels) and want == hit.labels.tolist()


def _hit_timing(hit: FeatureResult, seconds: float, batch_size: int, workers: int) -> dict[str, Any]:
    """This run's timing of a cache hit: the seconds spent reading the entry (and checking it), nothing decoded
    or encoded; the extracting run's numbers kept apart, under their own key."""
    return {"images": len(hit.labels), "features_cached": True, "cache_read_s": round(seconds, 4),
            "total_s": round(seconds, 4), "images_per_s": None, "decode_preprocess_s": 0.0, "model_s": 0.0,
            "batch_size": batch_size, "workers": workers, "extracted_by_an_earlier_run": hit.timing}


def cached_features(model: torch.nn.Module, dataset: Any, *, fingerprint: str, split: str,
                    indices: Sequence[int] | None, cache_dir: str | Path | None, batch_size: int, workers: int,
                    device: torch.device, progress: bool = True, use_cache: bool = True,
                    features: str = "embedding") -> tuple[FeatureResult, bool]:
    """`features` (`features.FEATURE_KINDS`) of `dataset` (subset `indices`), from the cache when present and still
    the dataset's; returns (result, hit). On a hit ``result.timing`` describes this run (``features_cached: true``)."""
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    digest = dataset_digest(dataset, indices) if use_cache else None
    if use_cache and digest is None:
        log.info("features of %s not cached: the dataset does not list its samples", getattr(dataset, "name", split))
        use_cache = False
    cache_dir = Path(cache_dir) if cache_dir is not None else default_feature_cache_dir()
    where = (fingerprint, dataset, split, indices, int(model.visual.input_resolution),
             f"{type(model).__module__}.{type(model).__qualname__}")
    key, slot = feature_cache_key(*where, digest, features), feature_cache_slot(*where, features)
    path = cache_dir / f"{slot}-{key}.safetensors"
    if use_cache and path.is_file():
        hit = _load(path, str(digest), features)
        if hit is not None and _labels_agree(hit, dataset):
            with contextlib.suppress(OSError):  # recently used: the last to be evicted
                os.utime(path)
            hit.timing = _hit_timing(hit, time.perf_counter() - t0, batch_size, workers)
            return hit, True
        log.warning("feature cache %s is unreadable or not the dataset's (labels differ): extracted again", path)
    result = extract_image_features(model, dataset, batch_size=batch_size, workers=workers, device=device,
                                    indices=indices, progress=progress, desc=f"features {split}", features=features)
    if use_cache:
        try:
            with atomic_path(path) as tmp:
                save_file({"features": result.features.contiguous(), "labels": result.labels.contiguous(),
                           "indices": result.indices.contiguous()}, str(tmp),
                          metadata={"bad": json.dumps(result.bad), "timing": json.dumps(result.timing),
                                    "fingerprint": fingerprint, "split": split, "digest": str(digest),
                                    "slot": slot, "features": features})
        except OSError as exc:
            log.warning("could not write feature cache %s: %s", path, exc)
        else:
            prune_feature_cache(cache_dir, slot, path)
    return result, False
