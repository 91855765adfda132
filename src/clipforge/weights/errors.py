"""Exceptions of the weights layer.

Each one carries a message meant to be read by a person at a terminal: it names the file or
URL involved and what to do next, because weight problems are usually environmental (offline
machine, half-finished download, a checkpoint from an untrusted source).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clipforge.errors import UserError


class DownloadError(UserError, RuntimeError):
    """A checkpoint could not be fetched and verified."""


class UnsafeCheckpointError(UserError, RuntimeError):
    """A checkpoint's pickle asks for a global outside the allowlist (it could run code)."""

    def __init__(self, path: object, forbidden: str, hint: str = "") -> None:
        self.path = str(path)
        self.forbidden = forbidden
        message = (f"refusing to load {self.path}: its pickle references the forbidden global "
                   f"{forbidden!r}, which could run arbitrary code when unpickled")
        super().__init__(message + (f"; {hint}" if hint else ""))


class CheckpointFormatError(UserError, ValueError):
    """A file is not a checkpoint format we can read, or its contents are not a CLIP."""


def shape_difference(got: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]]) -> tuple[int, int, str] | None:
    """None when `got`'s tensors have exactly `expected`'s names and shapes, else (parameters in `got`, in
    `expected`, the first difference in words): the facts of `check_shapes`' line, for callers with their own."""
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    wrong = [k for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k])]
    if not (missing or extra or wrong):
        return None
    count = sum(v.numel() for v in got.values())
    want = sum(math.prod(shape) for shape in expected.values())
    first = (f"{wrong[0]} has shape {tuple(got[wrong[0]].shape)}, not {tuple(expected[wrong[0]])}" if wrong
             else f"it lacks {missing[0]}" if missing else f"it has an unexpected tensor {extra[0]}")
    return count, want, first


def check_shapes(file_name: str, arch: str, got: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise `CheckpointFormatError` unless `got`'s tensors have exactly `expected`'s names and shapes.

    The one message for "this file is not that architecture" (a mirror passing other weights off as a
    registry entry, a wrong file given for a name): the parameter counts and the first difference.
    """
    if (difference := shape_difference(got, expected)) is None:
        return
    count, want, first = difference
    raise CheckpointFormatError(f"{file_name} does not hold {arch} weights: {count:,} parameters where "
                                f"{arch} has {want:,}; {first}")


def json_object(path: Path, limit: int = 1_000_000) -> dict[str, Any]:
    """The JSON object a config file of a weights folder holds (its first `limit` characters read), or one
    `CheckpointFormatError` line naming the file: not JSON (nested past the decoder's depth included), or not an
    object. The one reader of `config.json`, `tokenizer_config.json` and Chinese-CLIP's config."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8")[:limit])
    except (OSError, ValueError, RecursionError) as err:
        raise CheckpointFormatError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(found, dict):
        raise CheckpointFormatError(f"{path} must hold a JSON object, got {type(found).__name__}")
    return found
