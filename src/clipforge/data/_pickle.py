"""A pickle reader that can rebuild numpy arrays and nothing else.

CIFAR's "python version" batches are pickles of dicts holding a uint8 numpy array. Plain
`pickle.load` on a downloaded file runs any callable the file names; this Unpickler only
resolves the handful of numpy reconstruction functions such a file needs and refuses the rest.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .base import DatasetFormatError

__all__ = ["load_restricted_pickle"]


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    import codecs

    allowed = {
        "_reconstruct": multiarray._reconstruct,
        "scalar": multiarray.scalar,
    }
    table: dict[tuple[str, str], Any] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        for name, func in allowed.items():
            table[(module, name)] = func
    if hasattr(numeric, "_frombuffer"):
        for module in ("numpy.core.numeric", "numpy._core.numeric"):
            table[(module, "_frombuffer")] = numeric._frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    table[("_codecs", "encode")] = codecs.encode  # how Python 3 writes bytes at protocol 2
    return table


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def load_restricted_pickle(path: Path | str, data: bytes | None = None) -> Any:
    """Load a CIFAR-style pickle from `path` (or from `data`, read out of an archive `path` names);
    bytes keys/strings are decoded to str by the caller."""
    try:
        if data is not None:
            return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
        with open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DatasetFormatError(f"cannot read pickle {path}: {exc}") from exc
