"""Reading MATLAB .mat metadata (ImageNet devkit meta.mat, Stanford Cars devkit) into plain Python.

`simplify_cells=True` turns MATLAB structs into dicts and cells into lists, but a 1x1 struct
array comes back as a lone dict and a 1xN one as a list; `records` hides that difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import DatasetFormatError

__all__ = ["load_mat_key", "records", "strings"]


def load_mat_key(path: Path, key: str) -> Any:
    import scipy.io

    try:
        content = scipy.io.loadmat(str(path), simplify_cells=True)
    except Exception as exc:  # scipy raises ValueError/TypeError/NotImplementedError (v7.3 HDF5)
        raise DatasetFormatError(f"cannot read MATLAB file {path}: {exc.__class__.__name__}: {exc}") from exc
    if key not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DatasetFormatError(f"MATLAB file {path} has no variable {key!r} (found: {found})")
    return content[key]


def records(value: Any, path: Path, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """A MATLAB struct array as a list of dicts, checking that `fields` are present."""
    if isinstance(value, dict):
        rows = [value]
    elif isinstance(value, (list, tuple, np.ndarray)):
        rows = list(np.asarray(value, dtype=object).ravel()) if isinstance(value, np.ndarray) else list(value)
    else:
        raise DatasetFormatError(f"{path}: expected a struct array, got {type(value).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetFormatError(f"{path}: entry {i} is {type(row).__name__}, expected a struct")
        absent = [f for f in fields if f not in row]
        if absent:
            raise DatasetFormatError(f"{path}: struct entry {i} lacks field(s) {absent} (has {sorted(row)})")
    return rows


def strings(value: Any, path: Path) -> list[str]:
    """A MATLAB cell array of strings (or a single string) as a list of str."""
    if isinstance(value, str):
        return [value]
    try:
        return [str(v) for v in np.asarray(value, dtype=object).ravel()]
    except Exception as exc:
        raise DatasetFormatError(f"{path}: expected a cell array of strings ({exc})") from exc


def as_int(value: Any, path: Path, what: str) -> int:
    arr = np.asarray(value)
    if arr.size != 1:
        raise DatasetFormatError(f"{path}: {what} should be one number, got shape {arr.shape}")
    return int(arr.reshape(()).item())
