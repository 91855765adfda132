"""``torch.load(weights_only=True)`` with refusals turned into `UnsafeCheckpointError`.

Its own module because both the generic reader (`clipforge.weights.loading`) and the Hugging
Face folder reader (`clipforge.weights.hf`) use it, and they must not import each other.
"""

from __future__ import annotations

import os
import pickle
import re
import reprlib
import struct
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from clipforge.weights.errors import CheckpointFormatError, UnsafeCheckpointError

_UNSAFE_HINT = ("only plain state dicts of tensors are loaded from pickles; save weights with "
                "torch.save(model.state_dict(), path) or clipforge.weights.save_safetensors")


def _forbidden_global(path: Path, err: Exception) -> str | None:
    """The global a weights_only torch.load refused, or None when the failure was something else (no global
    named: damaged bytes)."""
    message = str(err)
    if "Weights only load failed" not in message and "weights_only" not in message:
        return None
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        if found:
            return str(found[0])
    except Exception:  # legacy (non-zip) files are not supported by that helper
        pass
    match = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"global[: ]+'?([\w.]+)", message)
    # no global named: torch stopped at an opcode it does not take (protocol 4's FRAME and STACK_GLOBAL, INST,
    # or bytes that are no opcode at all). Read the pickle's opcodes without running them before calling it
    # damage: `pickle.dumps` of an object that runs code (protocol 4 by default) stops there too
    # "GLOBAL ." is torch's reading of a global cut inside its name (a legacy file cut short): no code named
    return match.group(1) if match and re.fullmatch(r"\w+(\.\w+)*", match.group(1)) else None


_SCAN_LIMIT = 16 << 20  # bytes of pickle read when looking for globals: a CLIP's pickle is far smaller
_PUSHES_STR = {"UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING",
               "SHORT_BINSTRING"}


def _pickle_bytes(path: Path) -> list[bytes]:
    """The pickles torch could read, at most `_SCAN_LIMIT` bytes in all: a zip's every ``data.pkl`` member (torch
    reads ``<archive>/data.pkl``, the first of duplicate names, and zipfile the last; a member named
    ``xdata.pkl`` listed first is not torch's), from its first local entry when the archive is cut short; else
    the file's head."""
    import zipfile

    with open(path, "rb") as fh:
        head = fh.read(30)
        if not head.startswith(b"PK\x03\x04"):
            fh.seek(0)
            return [fh.read(_SCAN_LIMIT)]
        try:
            with zipfile.ZipFile(fh) as archive:
                found, left = [], _SCAN_LIMIT
                for info in archive.infolist():
                    if info.filename.rpartition("/")[2] == "data.pkl" and left > 0:
                        with archive.open(info) as member:
                            found.append(member.read(left))
                        left -= len(found[-1])
                return found
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            # the first local header: torch writes data.pkl first
            name_len, extra_len = struct.unpack("<HH", head[26:30])
            fh.seek(30)
            if fh.read(name_len).rpartition(b"/")[2] != b"data.pkl":
                return []
            fh.seek(30 + name_len + extra_len)
            return [fh.read(_SCAN_LIMIT)]


def _globals_in_pickle(data: bytes) -> list[str]:
    """Every global the pickles in `data` name, in order, read with `pickletools` (nothing is imported or run),
    up to where the bytes stop parsing: a pickle cut or damaged after a global still names it. Pickles that
    follow one another are all read: torch's legacy format is a magic-number pickle, two more, then the state
    dict's."""
    found: list[str] = []
    pushed: list[object] = []  # the last values pushed, enough to name STACK_GLOBAL's module and name
    memo: dict[int, object] = {}
    try:
        for ops in _each_pickle(data):
            _read_one(ops, found, pushed, memo)
    except _DAMAGED_PICKLE:  # damaged bytes: what was read so far stands
        pass
    return found


_DAMAGED_PICKLE = (ValueError, EOFError, KeyError, UnicodeDecodeError)
"""What `pickletools.genops` raises on bytes that stop parsing as a pickle."""


def _each_pickle(data: bytes) -> Iterator[Iterator[tuple[Any, Any, Any]]]:
    """The opcodes (`pickletools.genops`) of each pickle in `data`, one after another, nothing imported or run: at
    most 8 (torch's legacy files hold five; a file of STOP bytes must not loop for long). A consumer catches
    `_DAMAGED_PICKLE` where the bytes stop parsing."""
    import io
    import pickletools

    stream = io.BytesIO(data)
    for _ in range(8):
        if stream.tell() >= len(data):
            return
        yield pickletools.genops(stream)


def _read_one(ops: Any, found: list[str], pushed: list[object], memo: dict[int, object]) -> None:
    """The globals of one pickle's opcodes, added to `found` (`pushed` and `memo`: enough of its stack and memo
    to name STACK_GLOBAL's module and name)."""
    memo.clear()
    for op, arg, _ in ops:
        if op.name in ("GLOBAL", "INST"):
            found.append(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            parts = pushed[-2:]
            named = len(parts) == 2 and all(isinstance(p, str) for p in parts)
            found.append(".".join(str(p) for p in parts) if named else "a global named at load time")
        elif op.name in ("EXT1", "EXT2", "EXT4"):
            found.append(f"copyreg extension {arg}")
        if op.name in _PUSHES_STR:
            pushed.append(arg)
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(int(arg)))
        elif op.name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
            memo[len(memo) if arg is None else int(arg)] = pushed[-1] if pushed else None
        elif op.name not in ("FRAME", "PROTO"):
            pushed.append(None)
        del pushed[:-2]


def _scanned_forbidden(path: Path) -> str | None:
    """The first global in the file's pickle that torch's weights-only reader does not allow, else None."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals, _get_user_allowed_globals

        allowed = set(_get_allowed_globals()) | set(_get_user_allowed_globals())
    except Exception:  # a torch without these helpers: every global counts as forbidden
        allowed = set()
    try:
        names = [name for data in _pickle_bytes(path) for name in _globals_in_pickle(data)]
    except (OSError, struct.error):  # struct.error: a zip's first header cut short (under 30 bytes)
        return None
    for name in names:
        if name.replace("__builtin__.", "builtins.") not in allowed:
            return name
    return None


def names_all(path: str | os.PathLike[str], names: tuple[str, ...]) -> bool:
    """Whether the file's pickles push every one of `names` as a string (a ``module.`` before it allowed): read with
    `pickletools` as `_scanned_forbidden` reads them, nothing imported or run, at most `_SCAN_LIMIT` bytes. A state
    dict's names are strings its pickle pushes, so a file without them cannot hold those tensors: Chinese-CLIP's
    probe asks this before it unpickles a file (every ``.pt`` was unpickled twice, and torch warned twice). False
    when the file cannot be read so far (the generic loader then reads and names it)."""
    wanted, found = set(names), set()
    try:
        pickles = _pickle_bytes(Path(path))
    except (OSError, struct.error):
        return False
    for data in pickles:
        try:
            for ops in _each_pickle(data):
                for op, arg, _ in ops:
                    if op.name in _PUSHES_STR and isinstance(arg, str) and arg.removeprefix("module.") in wanted:
                        found.add(arg.removeprefix("module."))
        except _DAMAGED_PICKLE:  # damaged bytes: what was read so far stands
            pass
    return found >= wanted


_UNPICKLER_SLIPS = (IndexError, KeyError, TypeError, AttributeError, struct.error)
"""What torch's weights-only unpickler raises on bytes it cannot follow (an opcode on an empty stack: "pop from
empty list"), instead of an UnpicklingError."""


def _unreadable(path: Path, err: Exception) -> CheckpointFormatError:
    """The one-line refusal of a file torch cannot read: what the bytes are when that is plain (cut short, a
    web page: `clipforge.weights.damaged`), else torch's own reason, without its advice to load with
    ``weights_only=False`` (which would run whatever the file holds)."""
    from clipforge.weights.damaged import damage_of

    if (damage := damage_of(path)) is not None:
        return CheckpointFormatError(damage)
    message = str(err)
    if "WeightsUnpickler error:" in message:
        reason = message.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0].strip()
        if reason.startswith("Unsupported global: GLOBAL . "):
            reason = "it ends inside a global's name"
        elif reason == "Unsupported operand 149":  # FRAME: pickle protocol 4 or 5
            return CheckpointFormatError(
                f"cannot read {path} as a PyTorch checkpoint: its pickle uses protocol 4 or later, which "
                "torch's weights-only reader does not take; save it again with torch.save's default protocol")
        return CheckpointFormatError(f"cannot read {path} as a PyTorch checkpoint: its pickle data is damaged or "
                                     f"not a pickle ({reason})")
    first = message.strip().splitlines()[0] if message.strip() else type(err).__name__
    if first.startswith("storage has wrong byte size"):  # torch's unformatted "expected %ld got %ld" template
        return CheckpointFormatError(f"cannot read {path} as a PyTorch checkpoint: its storage sizes do not match its "
                                     "data (damaged or crafted)")
    if isinstance(err, _UNPICKLER_SLIPS):  # the unpickler tripped over bytes that are no pickle it can follow
        return CheckpointFormatError(f"cannot read {path} as a PyTorch checkpoint: its pickle data is damaged or "
                                     f"not a pickle ({first})")
    return CheckpointFormatError(f"cannot read {path} as a PyTorch checkpoint: {first}")


def _is_zip(path: Path) -> bool:
    """Whether `path` starts as a zip archive (torch.save's format since 1.6): the only files torch can map."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError:  # torch.load names it
        return False


def torch_load_safely(path: str | os.PathLike[str], *, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)``, with refusals turned into `UnsafeCheckpointError` and damage into a
    one-line `CheckpointFormatError`: the one reader of torch pickles, so every path refuses a file alike.

    `mmap=True` maps a zip-format file's tensors from disk instead of reading them into memory (torch.load's
    ``mmap``): a look at a multi-GB checkpoint's names and shapes (Chinese-CLIP's download check) then costs
    no memory for its weights. A legacy (non-zip) file, which torch cannot map, is read as usual.

    Before torch reads anything, a path that is no regular file (a FIFO: the first read waited for ever) and a
    zip whose entries claim more bytes than the file can hold (`check_zip_sizes`: torch inflated a 1 MB file's
    1 GiB data.pkl into memory) are refused, for every caller alike."""
    from safetensors import SafetensorError  # torch.load hands a safetensors-looking file to safetensors

    from clipforge.weights.torchscript import check_zip_sizes

    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO (a shard named in an index) blocked the first read for ever
        raise CheckpointFormatError(f"{path} is not a regular file (a FIFO, socket or device): expected a PyTorch "
                                    "checkpoint")
    zipped = _is_zip(path)
    if zipped:  # entries claiming more bytes than the file holds (~1000:1 deflate): refused before any is read
        check_zip_sizes(path)  # here, so no reader (a folder's pytorch_model.bin, cn-ARCH:PATH) inflates them first
    try:
        with warnings.catch_warnings():  # torch's own rebuild of a quantized tensor: not the user's to act on (the
            warnings.filterwarnings("ignore", "TypedStorage is deprecated", UserWarning)  # file is then refused)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipped)
    except pickle.UnpicklingError as err:
        forbidden = _forbidden_global(path, err) or _scanned_forbidden(path)
        if forbidden is not None:
            raise UnsafeCheckpointError(path, forbidden, _UNSAFE_HINT) from None
        raise _unreadable(path, err) from err
    except (RuntimeError, EOFError, OSError, ValueError, SafetensorError, *_UNPICKLER_SLIPS) as err:
        # e.g. a zip cut short around a malicious data.pkl: torch cannot open it, its pickle still names the global;
        # bytes that are no pickle make torch's weights-only unpickler fail in its own ways ("pop from empty list")
        if (forbidden := _scanned_forbidden(path)) is not None:
            raise UnsafeCheckpointError(path, forbidden, _UNSAFE_HINT) from None
        raise _unreadable(path, err) from err


_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


def unwrap(obj: Any, where: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict in what ``torch.load`` read from `where`: ``{"state_dict": {...}}``-style wrappers (training
    scripts' checkpoints) opened, then `tensor_dict`'s check that names map to tensors."""
    from collections.abc import Mapping

    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    return tensor_dict(obj, where, f" (wrappers tried: {', '.join(_WRAPPER_KEYS)})")


def with_article(noun: str) -> str:
    """`noun` with its indefinite article (a list, an int, an OrderedDict)."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _brief_repr() -> reprlib.Repr:
    """`brief`'s repr: strings and other objects cut to 80 characters, containers to 6 items, 2 levels deep."""
    shown = reprlib.Repr()
    shown.maxstring = shown.maxother = 80  # a tensor name (visual.transformer.resblocks.11.attn.in_proj_weight) whole
    shown.maxlist = shown.maxtuple = shown.maxset = shown.maxfrozenset = shown.maxdict = 6
    shown.maxlevel, shown.maxlong = 2, 40
    return shown


_BRIEF = _brief_repr()


def brief(value: Any) -> str:
    """`repr(value)` cut to a few dozen characters (``(0, 1, 2, 3, 4, 5, ...)``, ``'kkk...kkk'``): what a file or
    config.json holds is anyone's choice, and a refusal quoting a name or field whole printed a 100,000-int tuple
    or a million-character string as its "one line". An int too long for `repr` is named by its type."""
    try:
        return _BRIEF.repr(value)
    except ValueError:  # int -> str beyond sys.get_int_max_str_digits
        return f"<{type(value).__name__} of more than {sys.get_int_max_str_digits()} digits>"


def tensor_dict(obj: Any, where: str | os.PathLike[str], expected: str = "") -> dict[str, torch.Tensor]:
    """`obj` as a state dict (names to tensors), else the one-line `CheckpointFormatError` naming `where` (the
    file it came from) and what it holds instead: a list, a bare tensor, an entry named by a number or holding a
    list. What ``torch.load`` returns is whatever was saved, so every reader asks this before it reads names or
    tensors (``.items()`` on a list, ``.startswith`` on an int key and ``.t()`` on a list were tracebacks).
    `expected` follows "expected a state dict" (the generic loader names the wrappers it opened)."""
    from collections.abc import Mapping

    if not isinstance(obj, Mapping) or not obj:
        found = f"an empty {type(obj).__name__}" if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointFormatError(f"{where} does not hold a state dict (a mapping of names to tensors); "
                                    f"found {found}")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointFormatError(f"{where}: entry {brief(key)} is named by {with_article(type(key).__name__)}, "
                                        f"not a string; expected a state dict{expected}")
        if not isinstance(value, torch.Tensor):
            raise CheckpointFormatError(f"{where}: entry {brief(key)} is {with_article(type(value).__name__)}, not a "
                                        f"tensor; expected a state dict{expected}")
        if (odd := odd_entry(key, value)) is not None:
            raise CheckpointFormatError(f"{where}: {odd}")
    return dict(obj)


_REAL_FLOATS = "float32, float16, bfloat16 or float64"


def odd_entry(key: str, tensor: torch.Tensor) -> str | None:
    """"entry KEY is/holds ..." when `tensor` is what no CLIP weight can be (`_not_a_weight`), else None: the one
    check every reader runs over a file's entries before converting them (`tensor_dict`, and Chinese-CLIP's
    `cn_clip_state_dict`, whose ``.float()`` turned float8 into fp32 unseen and dropped a complex part)."""
    odd = _not_a_weight(tensor)
    return None if odd is None else f"entry {brief(key)} {odd}"


def _not_a_weight(tensor: torch.Tensor) -> str | None:
    """What no CLIP weight can be, said after "entry NAME": a sparse (or other non-strided) tensor, which has no
    storage to hash (the fingerprint's traceback) and no dense values to copy; complex numbers, whose imaginary
    part the fp32 conversion dropped without a word; float8, whose values real float8 files scale by tensors of
    their own that this loader does not apply; a quantized tensor (qint8, quint8, ...), whose scale and zero point
    it does not apply either (its copy failed as "dimensions [64, 256] vs [64, 256]"); no elements at all, which
    left the shape reader's "tuple index out of range" naming no entry. Integer dtypes (a TorchScript archive's
    sizes, HF's position_ids) stay allowed."""
    if tensor.layout != torch.strided:
        return (f"is {with_article(str(tensor.layout).removeprefix('torch.').lstrip('_'))} tensor, not a dense one: "
                "expected a state dict of dense weights")
    if tensor.is_complex():
        return f"holds {str(tensor.dtype).removeprefix('torch.')} numbers: CLIP weights are real ({_REAL_FLOATS})"
    if tensor.is_floating_point() and tensor.element_size() == 1:
        return (f"holds {str(tensor.dtype).removeprefix('torch.')} numbers: clipforge reads {_REAL_FLOATS} weights "
                "(float8 ones come with scales it does not apply)")
    if tensor.is_quantized:
        return (f"is a quantized {str(tensor.dtype).removeprefix('torch.')} tensor: clipforge reads {_REAL_FLOATS} "
                "weights (it does not apply a quantized tensor's scale and zero point)")
    if tensor.numel() == 0 and tensor.dim() > 0:
        return f"is an empty tensor (shape {tuple(tensor.shape)}): not a CLIP state dict"
    return None


ZIP_HEADS = (b"PK\x03\x04", b"PK\x05\x06")  # torch.save since 1.6 (an empty archive: the end record alone)
LEGACY_HEAD = b"\x80"  # a pickle of protocol 2 or more: torch.save's legacy (pre-zip) format


def read_torch_file(path: str | os.PathLike[str], *, mmap: bool = False) -> tuple[Any, str]:
    """(contents, "torchscript" | "torch") of a file whose head is one of `ZIP_HEADS` or `LEGACY_HEAD`, read the
    one safe way: an OpenAI TorchScript archive by the restricted reader (its ``__torch__`` classes are data to
    it, never code), anything else by `torch_load_safely` (`mmap`: a zip's tensors mapped from disk). The
    generic loader and Chinese-CLIP's download check both read torch files through it."""
    from clipforge.weights.torchscript import is_torchscript_archive, read_torchscript_state_dict

    if is_torchscript_archive(path):
        return read_torchscript_state_dict(path), "torchscript"
    return torch_load_safely(path, mmap=mmap), "torch"
