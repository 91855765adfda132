"""Exceptions of the weights layer.

Each one carries a message meant to be read by a person at a terminal: it names the file or
URL involved and what to do next, because weight problems are usually environmental (offline
machine, half-finished download, a checkpoint from an untrusted source).
"""

from __future__ import annotations

import json
import math
import os
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


CONFIG_LIMIT = 1_000_000
"""Bytes read at most of a weights folder's config file (config.json, preprocessor_config.json,
processor_config.json, languages.json): real ones are a few kilobytes."""


def member(path: Path) -> bool:
    """Whether a weights folder's member `path` is there: True for a regular file (a link to one included), False
    when nothing is there (a dangling link too), else one `CheckpointFormatError` line "PATH is not a regular file
    (a FIFO)". ``is_file()`` took a FIFO or a device for a missing file ("has config.json but no model.safetensors")
    or passed it over (a FIFO tokenizer_config.json: the defaults used)."""
    from clipforge.regular_file import special_kind

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    if (kind := special_kind(mode)) is not None:
        raise CheckpointFormatError(f"{path} is not a regular file ({kind})")
    return True


def config_bytes(path: Path, limit: int) -> bytes:
    """The bytes of a file of a weights folder, at most `limit` read: one `CheckpointFormatError` line for a file
    longer than that (its size on the open descriptor, before anything is read: a 1.5 GB sparse config.json cost
    3.3 GB of memory when it was read whole and sliced), for one that is no regular file (a FIFO waited for ever),
    and for one that cannot be read. Through `clipforge.regular_file`, as every reader of user files."""
    from clipforge.regular_file import FileTooLargeError, NotRegularFileError, read_regular_file

    try:
        return read_regular_file(path, limit)
    except (FileTooLargeError, NotRegularFileError) as err:
        raise CheckpointFormatError(str(err)) from None
    except OSError as err:
        raise CheckpointFormatError(f"cannot read {path}: {err.strerror or err}") from None


def json_value(path: Path, limit: int = CONFIG_LIMIT, said: str = "is not valid JSON") -> Any:
    """The JSON a file of a weights folder holds, read by `config_bytes` (at most `limit` bytes), or one
    `CheckpointFormatError` line naming the file: "PATH `said`: why" when it is not UTF-8 JSON (nested past the
    decoder's depth included)."""
    raw = config_bytes(path, limit)
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise CheckpointFormatError(f"{path} {said}: {err}") from None


def json_object(path: Path, limit: int = CONFIG_LIMIT) -> dict[str, Any]:
    """The JSON object a config file of a weights folder holds (at most `limit` bytes read, a longer file refused:
    `config_bytes`), or one `CheckpointFormatError` line naming the file: too large, no regular file, not JSON, or
    not an object. The one reader of `config.json`, `tokenizer_config.json` and Chinese-CLIP's config."""
    found = json_value(path, limit)
    if not isinstance(found, dict):
        raise CheckpointFormatError(f"{path} must hold a JSON object, got {type(found).__name__}")
    return found
