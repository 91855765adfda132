"""Atomic file writes: a reader, or the next run after a crash, never sees half a file.

Every layer writes results people or programs read back (reports, plots, caches, index
sidecars), so the one way to do it lives here, below all of them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_bytes_atomic", "write_json_atomic"]


@contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`, renamed onto it only if the block succeeds.

    The temporary name keeps `target`'s suffix (or `suffix`), so writers that choose a format
    by extension (matplotlib, numpy) write the right one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix if suffix is None else suffix,
                               dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json_atomic(target: str | os.PathLike[str], payload: Any, *, sort_keys: bool = False,
                      default: Callable[[Any], Any] | None = str) -> Path:
    text = json.dumps(payload, indent=2, sort_keys=sort_keys, ensure_ascii=False, default=default)
    return write_bytes_atomic(target, (text + "\n").encode("utf-8"))
