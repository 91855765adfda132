"""Read the weights out of a TorchScript archive without running TorchScript or arbitrary pickles.

OpenAI ship their checkpoints as TorchScript archives (``torch.jit.save``). ``torch.jit.load``
would execute the archive's code and its pickle could name any Python global, so instead we
read the zip ourselves:

- ``<root>/data.pkl`` is unpickled by `RestrictedUnpickler`, whose `find_class` hands out only
  inert stand-ins: our own tensor-rebuilding function, storage-type markers, `OrderedDict`, the
  typed-list builders TorchScript emits, and placeholder classes for the archive's
  ``__torch__.*`` module types that merely record their attribute state. Anything else (for
  example ``os.system``) raises `UnsafeCheckpointError`; nothing from the archive is imported
  or called.
- tensor bytes come from ``<root>/data/<key>`` through `persistent_load`.
- ``<root>/code/__torch__/**.py`` is read as *text* only, to learn each module type's
  ``__parameters__`` and ``__buffers__`` so the state dict holds exactly what
  ``module.state_dict()`` would.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from clipforge.weights.errors import CheckpointFormatError, UnsafeCheckpointError

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _StorageType:
    """Marker standing in for ``torch.FloatStorage`` etc.: only its dtype is ever used."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class ScriptObject:
    """Inert placeholder for a ``__torch__.*`` class: records the state the pickle gives it."""

    qualified_name = "__torch__"

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    """Our version of ``torch._utils._rebuild_tensor_v2``: a strided view of the storage bytes."""
    try:
        return storage.as_strided(tuple(size), tuple(stride), int(offset))
    except (RuntimeError, TypeError, ValueError) as err:
        raise CheckpointFormatError(f"tensor of size {tuple(size)} does not fit its storage: {err}") from err


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data


def _as_list(items: Any) -> list[Any]:
    return list(items)


def _restore_type_tag(value: Any, _tag: Any = None) -> Any:
    return value


# (module, name) -> the safe object the unpickler returns for it.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch.jit._pickle", "build_intlist"): _as_list,
    ("torch.jit._pickle", "build_floatlist"): _as_list,
    ("torch.jit._pickle", "build_doublelist"): _as_list,
    ("torch.jit._pickle", "build_boollist"): _as_list,
    ("torch.jit._pickle", "build_tensorlist"): _as_list,
    ("torch.jit._pickle", "build_complexlist"): _as_list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for TorchScript ``data.pkl`` that can only build tensors and inert objects."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str, source: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._root = root
        self._source = source
        self._storages: dict[str, torch.Tensor] = {}
        self._placeholders: dict[str, type[ScriptObject]] = {}
        # Fresh markers per archive, so a hostile pickle mutating one cannot affect later loads.
        self._storage_types = {name: _StorageType(name) for name in _STORAGE_DTYPES}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in self._storage_types:
            return self._storage_types[name]
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self._placeholders:
                self._placeholders[qualified] = type(
                    name, (ScriptObject,), {"qualified_name": qualified, "__module__": __name__})
            return self._placeholders[qualified]
        raise UnsafeCheckpointError(self._source, f"{module}.{name}")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise CheckpointFormatError(f"{self._source}: unexpected persistent id {pid!r} in data.pkl")
        kind, key = pid[1], str(pid[2])
        if key not in self._storages:
            member = f"{self._root}/data/{key}"
            try:
                info = self._archive.getinfo(member)
            except KeyError as err:
                raise CheckpointFormatError(f"{self._source}: tensor data {member} is missing") from err
            if info.compress_type != zipfile.ZIP_STORED and info.file_size > 1000 * max(info.compress_size, 1):
                raise CheckpointFormatError(f"{self._source}: {member} claims an implausible compression "
                                            "ratio; refusing to inflate it")
            buffer = bytearray(info.file_size)
            view, filled = memoryview(buffer), 0
            try:
                with self._archive.open(info) as fh:
                    while filled < len(buffer) and (n := fh.readinto(view[filled:])):
                        filled += n
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as err:
                raise CheckpointFormatError(f"{self._source}: cannot inflate {member}: {err}") from None
            if filled != info.file_size:  # a short deflate stream would leave zeros where the data should be
                raise CheckpointFormatError(f"{self._source}: {member} holds {filled} bytes but declares "
                                            f"{info.file_size}; the archive is truncated or forged")
            itemsize = torch.empty((), dtype=kind.dtype).element_size()
            if len(buffer) % itemsize:
                raise CheckpointFormatError(f"{self._source}: {member} is not a whole number of "
                                            f"{kind.name} elements")
            self._storages[key] = (torch.frombuffer(buffer, dtype=kind.dtype) if buffer
                                   else torch.empty(0, dtype=kind.dtype))
        return self._storages[key]


_CLASS_RE = re.compile(r"^class (\w+)\(Module\):\n((?:[ \t]+.*\n?|\n)*)", re.MULTILINE)
_LIST_RE = r"^\s+{}\s*=\s*\[([^\]]*)\]"


def _names(field: str, body: str) -> list[str] | None:
    match = re.search(_LIST_RE.format(field), body, re.MULTILINE)
    if match is None:
        return None
    return [a or b for a, b in re.findall(r"\"([^\"]*)\"|'([^']*)'", match.group(1))]


def _tensor_slots(archive: zipfile.ZipFile, root: str) -> dict[str, list[str]]:
    """Qualified module type -> its parameter and buffer names, parsed from the code as text."""
    slots: dict[str, list[str]] = {}
    prefix = f"{root}/code/"
    for member in archive.namelist():
        if not (member.startswith(prefix) and member.endswith(".py")):
            continue
        module = member[len(prefix):-3].replace("/", ".")
        text = archive.read(member).decode("utf-8", errors="replace")
        for match in _CLASS_RE.finditer(text):
            params = _names("__parameters__", match.group(2))
            buffers = _names("__buffers__", match.group(2))
            if params is not None or buffers is not None:
                slots[f"{module}.{match.group(1)}"] = (params or []) + (buffers or [])
    return slots


def _flatten(obj: ScriptObject, prefix: str, slots: dict[str, list[str]],
             out: dict[str, torch.Tensor], seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    state = obj.state
    if isinstance(state, tuple) and state and isinstance(state[0], dict):
        state = state[0]
    if not isinstance(state, dict):
        return
    declared = slots.get(obj.qualified_name)
    tensor_names = declared if declared is not None else [
        k for k, v in state.items() if isinstance(v, torch.Tensor)]
    for name in tensor_names:
        value = state.get(name)
        if isinstance(value, torch.Tensor):
            # detach(): a fresh tensor object, so nothing the pickle set on the original
            # (hooks, requires_grad) comes along; the storage is shared, not copied.
            out[prefix + name] = value.detach()
    for name, value in state.items():
        if isinstance(value, ScriptObject):
            _flatten(value, f"{prefix}{name}.", slots, out, seen)


MAX_INFLATE_RATIO = 1000  # deflate reaches ~1032:1 at best; a claim beyond that is a lie


def check_zip_sizes(path: str | Path) -> None:
    """Refuse a zip whose entries claim more bytes than the file can hold, before reading any.

    Readers allocate each tensor's storage at its declared size, so a 767-byte archive whose
    entry claims 3 GB would cost 3 GB of memory before failing. A stored entry is as large as
    its compressed bytes, a deflated one at most ~1000x, and compressed bytes lie inside the
    file; so the declared sizes are bounded by the file's size on disk.
    """
    if not zipfile.is_zipfile(path):
        return
    size = Path(path).stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointFormatError(f"{path} is not a readable zip archive: {err}") from None
    total = 0
    for info in infos:
        stored = info.compress_type == zipfile.ZIP_STORED
        limit = info.compress_size if stored else MAX_INFLATE_RATIO * max(info.compress_size, 1)
        if info.compress_size > size or info.file_size > limit:
            raise CheckpointFormatError(
                f"{path}: zip entry {info.filename!r} declares {info.file_size} bytes "
                f"({info.compress_size} compressed) but the file holds {size} bytes; refusing to read it")
        total += info.compress_size
    if total > size:
        raise CheckpointFormatError(f"{path}: zip entries declare {total} compressed bytes in a {size}-byte file; "
                                    "refusing to read it")


def is_torchscript_archive(path: str | Path) -> bool:
    """A zip holding ``<root>/data.pkl`` next to ``constants.pkl`` or ``code/`` (what jit.save writes)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/data.pkl") for n in names) and any(
        n.endswith("/constants.pkl") or "/code/" in n for n in names)


def read_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, named as ``state_dict()`` names them."""
    source = str(path)
    check_zip_sizes(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointFormatError(f"{source} is not a readable zip archive: {err}") from err
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            raise CheckpointFormatError(f"{source} has no <root>/data.pkl: not a TorchScript archive")
        root = pickles[0].split("/", 1)[0]
        unpickler = RestrictedUnpickler(archive.read(pickles[0]), archive, root, source)
        try:
            top = unpickler.load()
        except UnsafeCheckpointError:
            raise
        except CheckpointFormatError:
            raise
        except Exception as err:  # malformed pickles raise all sorts of things
            raise CheckpointFormatError(f"{source}: cannot read {pickles[0]}: {err}") from err
        if not isinstance(top, ScriptObject):
            raise CheckpointFormatError(f"{source}: {pickles[0]} does not hold a TorchScript module")
        state: dict[str, torch.Tensor] = {}
        _flatten(top, "", _tensor_slots(archive, root), state, set())
    if not state:
        raise CheckpointFormatError(f"{source}: the TorchScript module holds no tensors")
    return state
