"""A short, stable identity for a set of weights, used to key caches of computed embeddings.

Two state dicts get the same fingerprint exactly when they hold the same tensor names, dtypes,
shapes and bytes, whatever their key order or device. Tensors are hashed through zero-copy
byte views, so fingerprinting ViT-L costs one pass over its memory and no extra copy.

That pass (0.3 s for ViT-B/32, seconds for ViT-H) used to be paid by every command, and it needs
every tensor, so a text search had to read the image tower too. Two memos make it free after
the first time, without changing a single fingerprint (libraries stay keyed as before):

- **per model**: the digest is kept on the module with a *stamp* of its tensors (name, storage,
  in-place version counter, dtype, shape, device, and 16 elements spread over it); any change to a tensor
  changes the stamp and the digest is computed again, except a write through ``.data`` (which moves no
  counter) that touches none of the 16 (README, "Python API");
- **per file**: `clipforge.api.load_model` records which file a model came from
  (`seed_from_file`); the first full digest of a model still holding that file's tensors is
  written to ``<cache>/fingerprints/`` under the file's identity (path, inode, size, mtime,
  ctime and its first and last 64 KiB, plus `LOADER_VERSION`). The next load of the unchanged
  file reads the digest from there: no hashing, and a model loaded with one tower only
  (`clipforge.api.load_model(..., towers=("text",))`) still knows its identity.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["LOADER_VERSION", "cached_file_fingerprint", "file_identity", "fingerprint_state_dict",
           "model_fingerprint", "part_fingerprint", "seed_from_file", "weights_stamp"]

# Bump when the loader starts turning the same file into different tensors (a layout conversion
# changes): cached digests of the old loader are then ignored.
LOADER_VERSION = 1
_MEMO = "_cf_fingerprint"  # (stamp, full hex digest) in the module's __dict__
_PART_MEMOS = "_cf_part_fingerprints"  # {part: (stamp, full hex digest)} in the module's __dict__
_SOURCE = "_cf_weights_file"  # (file identity, stamp at load) in the module's __dict__
PARTIAL = "_cf_missing_towers"  # set by the loader on a model built without some of its tensors
_SAMPLE = 64 * 1024


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)  # no copy when already contiguous
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.view(torch.uint8).numpy())


def fingerprint_state_dict(state_dict: Mapping[str, torch.Tensor], length: int = 16) -> str:
    """Hex sha256 (first `length` chars) over sorted names, dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict entry {name!r} is a {type(value).__name__}, not a tensor")
        header = f"{name}\0{str(value.dtype).removeprefix('torch.')}\0{tuple(value.shape)}\0{value.numel()}\0"
        digest.update(len(header).to_bytes(8, "little"))
        digest.update(header.encode("utf-8"))
        digest.update(_tensor_bytes(value))
    return digest.hexdigest()[:length]


_SAMPLES = 16  # elements of each tensor a stamp reads: spread evenly over it, the first and the last among them


@functools.lru_cache(maxsize=512)
def _positions(numel: int, device: torch.device) -> torch.Tensor:
    """`_SAMPLES` flat positions spread evenly over `numel` elements, from the first to the last."""
    count = min(numel, _SAMPLES)
    step = (numel - 1) / max(count - 1, 1)
    return torch.tensor(sorted({round(i * step) for i in range(count)}), dtype=torch.long, device=device)


def _sample(tensor: torch.Tensor) -> bytes:
    """The bytes (not values: NaN != NaN) of `_SAMPLES` elements spread over the whole tensor, its last among them.

    The first 4 elements only, as it was, missed a write through ``.data`` (no version counter) that left them
    alone: ``m.text_projection.data[1:] *= -1`` kept the text tower's fingerprint, and `ZeroShotClassifier` read
    the old class embeddings back from its cache (audit 65). A write that touches none of the samples is still
    not seen (the README's trade-off); 16 gathered elements cost about what 4 sliced ones did."""
    if tensor.numel() == 0 or tensor.is_meta:
        return b""
    positions = _positions(tensor.numel(), tensor.device)
    if tensor.is_contiguous():
        values = tensor.reshape(-1)[positions]  # not index_select: torch has none for uint16/32/64
    else:  # a strided view: its elements by their index, without a copy of the whole tensor
        values = tensor[torch.unravel_index(positions, tensor.shape)]
    return values.cpu().reshape(-1).view(torch.uint8).numpy().tobytes()


def weights_stamp(model: torch.nn.Module) -> tuple[Any, ...]:
    """What changes whenever a tensor of `model.state_dict()` changes: a new storage (`.data =`,
    `.to()`, `load_state_dict(assign=True)`), an in-place write (its version counter: optimizer
    steps, `copy_`, `load_state_dict`), a dtype, shape or device, or one of 16 values spread over it
    (`_sample`: what sees a write through ``.data``, which no counter records). Cheap: no pass over the weights."""
    out = []
    for name, t in model.state_dict(keep_vars=True).items():
        if not isinstance(t, torch.Tensor):  # `fingerprint_state_dict` says what it is
            out.append((name, type(t).__name__, id(t)))
            continue
        t = t.detach()
        version = 0 if t.is_inference() else t._version
        out.append((name, t.data_ptr(), version, t.dtype, tuple(t.shape), tuple(t.stride()), str(t.device),
                    _sample(t)))
    return tuple(out)


def model_fingerprint(model: torch.nn.Module, length: int = 16) -> str:
    """Fingerprint of a module's parameters and buffers (its ``state_dict()``), memoised (see module docstring)."""
    stamp = weights_stamp(model)
    memo = model.__dict__.get(_MEMO)
    if memo is not None and memo[0] == stamp:
        return memo[1][:length]
    missing = model.__dict__.get(PARTIAL)
    if missing:
        raise RuntimeError(f"this model was loaded without its {' and '.join(missing)} tower, so its weights "
                           "fingerprint cannot be computed; load it with every tower")
    digest = fingerprint_state_dict(model.state_dict(), length=64)
    model.__dict__[_MEMO] = (stamp, digest)
    source = model.__dict__.get(_SOURCE)
    if source is not None and source[1] == stamp:  # still exactly the file's tensors: remember for next time
        _remember(source[0], digest)
    return digest[:length]


def part_fingerprint(model: torch.nn.Module, part: str, keep: Callable[[str], bool], length: int = 16) -> str:
    """`fingerprint_state_dict` of the state-dict entries `keep` selects (all of them if it selects none),
    memoised under the name `part` as `model_fingerprint` is: per model (the stamp of every tensor) and
    per weights file, so a zero-shot classifier keyed by the text tower's fingerprint stops hashing
    that tower on every command (0.15 s for ViT-B/32, seconds for ViT-H).

    `part` names the selection: a different `keep` must use a different name, or a file's record
    would hand back the digest of the old selection.
    """
    stamp = weights_stamp(model)
    memos = model.__dict__.setdefault(_PART_MEMOS, {})
    memo = memos.get(part)
    if memo is not None and memo[0] == stamp:
        return memo[1][:length]
    source = model.__dict__.get(_SOURCE)
    from_file = source is not None and source[1] == stamp  # still exactly the file's tensors
    digest = cached_file_fingerprint(source[0], part) if from_file else None
    if digest is None:
        state = model.state_dict()
        digest = fingerprint_state_dict({k: v for k, v in state.items() if keep(k)} or state, length=64)
        if from_file:
            _remember(source[0], digest, part)
    memos[part] = (stamp, digest)
    return digest[:length]


def file_identity(path: str | os.PathLike[str]) -> str | None:
    """A key that changes whenever the checkpoint file (or any top-level file of a folder) changes:
    resolved path, device, inode, size, mtime and ctime (which no user call can set back), and the
    first and last 64 KiB of its bytes. None when it cannot be read."""
    try:
        root = Path(path).resolve()
        if not (root.is_dir() or root.is_file()):  # opening a FIFO to sample it blocked for ever
            return None
        files = sorted(p for p in root.iterdir() if p.is_file()) if root.is_dir() else [root]
        parts: list[Any] = [LOADER_VERSION, str(root)]
        for file in files:
            st = file.stat()
            with open(file, "rb") as fh:
                head = fh.read(_SAMPLE)
                if st.st_size > 2 * _SAMPLE:
                    fh.seek(st.st_size - _SAMPLE)
                tail = fh.read(_SAMPLE)
            sample = hashlib.sha256(head + tail).hexdigest()
            parts.append([file.name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, sample])
    except OSError:
        return None
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


def _cache_file(identity: str) -> Path:
    from clipforge.weights.registry import cache_dir

    return cache_dir() / "fingerprints" / f"{identity[:40]}.json"


def _record(identity: str) -> dict[str, Any]:
    """The file's cache record ({} when absent, unreadable or another file's)."""
    try:
        record = json.loads(_cache_file(identity).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and record.get("identity") == identity else {}


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def cached_file_fingerprint(identity: str | None, part: str | None = None) -> str | None:
    """The full digest recorded for a file identity (or for one `part_fingerprint` of it), or None
    (never computed, or unreadable)."""
    if identity is None:
        return None
    record = _record(identity)
    parts = record.get("parts")
    digest = record.get("fingerprint") if part is None else parts.get(part) if isinstance(parts, dict) else None
    return digest if _is_digest(digest) else None


def _remember(identity: str, digest: str, part: str | None = None) -> None:
    """Add a digest (the whole model's, or a part's) to the file's record, keeping what it holds."""
    from clipforge.atomic import write_json_atomic

    record = _record(identity)
    known = record.get("parts")
    parts = {k: v for k, v in known.items() if _is_digest(v)} if isinstance(known, dict) else {}
    whole = record.get("fingerprint") if _is_digest(record.get("fingerprint")) else None
    if part is None:
        whole = digest
    else:
        parts[part] = digest
    target = _cache_file(identity)
    with contextlib.suppress(OSError):  # a cache: a read-only home or a full disk costs the next run a hash
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(target, {"identity": identity, **({"fingerprint": whole} if whole else {}),
                                   **({"parts": parts} if parts else {})})


def seed_from_file(model: torch.nn.Module, path: str | os.PathLike[str], identity: str | None = None,
                   digest: str | None = None) -> bool:
    """Record that `model` holds exactly the tensors `clipforge.api.load_model` read from `path`.

    If the file's digest is cached, it becomes the model's memo (no hashing); otherwise the first
    `model_fingerprint` of the unchanged model stores it. Returns whether the digest was cached.
    `digest`: the cached digest the caller already read for `identity`.
    """
    identity = identity or file_identity(path)
    if identity is None:
        return False
    stamp = weights_stamp(model)
    model.__dict__[_SOURCE] = (identity, stamp)
    digest = digest or cached_file_fingerprint(identity)
    if digest is not None:
        model.__dict__[_MEMO] = (stamp, digest)
    return digest is not None
