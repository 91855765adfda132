"""A command's first photos decoded on the idle core while the main process is still importing torch.

`clipforge embed` and `clipforge index add` spend their first second importing torch on one core
while the other idles; decoding their photos afterwards then competes with the model for both
cores. On a 2-core EPYC, 300 ImageNet photos take ~1.1 s of CPU to decode, which cost
`embed --precision bf16` ~0.5 s of wall time beside the model. So the console command forks one
process before it imports anything heavy (`start`); that process lists the command's files and
runs `reading.read_file` - the reader's own function - on each, into an anonymous shared mapping
that the main process and its DataLoader workers (forked later) read.

Safe by construction:

* **Verified, never trusted.** A result is used only by a reader whose preprocessing has the
  same pixel key (`pixel_key`: the class and every parameter that decides the uint8 crop - resolution,
  draft decoding, EXIF handling, pixel limit and, for the weights' `WeightsPreprocess` (SigLIP's squash,
  a Hugging Face folder's floor crop, bilinear weights), interpolation, resize mode and crop offset);
  the key the prefetch decodes with is what the same command used last time (`hints`, kept only
  when that run read at least `AHEAD_MIN` photos; rebuilt from the file field by field, and only if
  the rebuilt preprocess gives back exactly that key), and a first run or a changed model simply finds
  nothing; any other class (a subclass, a custom callable) is never decoded ahead. Pixels, size and
  sha256 come from one read of the file's bytes, as `read_file` gives them, and are taken only while
  the file's inode and modification time are what they were when it was read (a library records a
  file's state when it scans it, after this process read it: a photo rewritten in between must be
  read again). A file the prefetch could not decode is left to the
  reader, which reports it in its own words.
* **Bounded.** At most `MAX_IMAGES` photos and `MAX_BYTES` of pixels; paths over `PATH_BYTES`
  bytes are left to the reader. The mapping is anonymous: nothing is left on disk.
* **Stops when the reader starts** (`reader_starts`), so it never competes with the DataLoader's
  own workers, and dies with its parent (Linux's parent-death signal, and a check per file).

`CLIPFORGE_PREFETCH=0` turns it off; `CLIPFORGE_PREFETCH=verbose` prints `Prefetch.summary` after
the command. Torch-free on purpose (see `clipforge.data`'s lazy names).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import signal
import struct
import sys
from collections.abc import Callable, Container, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from clipforge.cores import die_with_parent, usable_cores
from clipforge.image.geometry import CROP_OFFSETS
from clipforge.image.loading import DEFAULT_MAX_PIXELS

from .reading import DecodedFile, read_file

__all__ = ["AHEAD_MIN", "MAX_BYTES", "MAX_IMAGES", "PREFETCH_ENV", "Prefetch", "active", "hint_to_keep", "load_hint",
           "note_delivered", "pixel_key", "reader_key", "reader_started", "reader_starts", "save_hint", "start", "take"]

PREFETCH_ENV = "CLIPFORGE_PREFETCH"
MAX_IMAGES = 512
"""Photos decoded ahead at most: more than an import of torch leaves time for (~300 on a 2-core EPYC)."""
MAX_BYTES = 128 << 20
"""Pixel memory of the mapping at most (512 crops of 224 px take 77 MB; bigger crops mean fewer photos)."""
PATH_BYTES = 1024
AHEAD_MIN = 16
"""A command decodes ahead next time only if its reader delivered this many photos this time: an `index add`
that found its files unchanged (or a handful new) would decode hundreds that nobody reads."""

_HEADER = 64  # count (u32) at 0, stop flag (u8) at 8
_RECORD = struct.Struct(f"<QIIQqH32s{PATH_BYTES}s")  # size, width, height, inode, mtime (ns), path length, sha256, path
_HINTS = "prefetch-hints.json"
_MAX_HINTS = 64
_ACTIVE: Prefetch | None = None
_READER_KEY: list[tuple[Any, ...] | None] = []  # the pixel key of this process's first reader, once one started
_DELIVERED = [0]  # photos this process's readers delivered with pixels


_WEIGHTS_MODULE = "clipforge.weights.preprocessing"
_RESAMPLE_CODES = {"bicubic": 3, "bilinear": 2}  # PIL's Resampling codes, as `WeightsPreprocess` maps its names
_RESIZE_MODES = ("shortest", "squash")
_PIXEL_METHODS = ("pixels", "decode", "decoded_pixels", "_resized_pixels", "_target")
_KEY_SCALARS = (str, bool, int)


def pixel_key(preprocess: Any) -> tuple[Any, ...] | None:
    """What decides a crop's pixels: the class's name and every parameter of it that does.

    ``("Preprocess", n_px, draft, exif_transpose, max_pixels)`` for `clipforge.image.Preprocess` itself (the
    form hint files have always held), ``("WeightsPreprocess", n_px, draft, exif_transpose, max_pixels,
    interpolation, resize_mode, crop_offset)`` for the weights' preprocessing. None for anything else: a
    subclass or a custom callable resizes its own way, and an instance whose pixel methods or resize filter /
    crop offset were replaced on it is not what its class and parameters say (mean and std are left out:
    they apply after the uint8 crop, in the reader's own `normalize`).
    """
    from clipforge.image import Preprocess

    kind = type(preprocess)
    weights = getattr(sys.modules.get(_WEIGHTS_MODULE), "WeightsPreprocess", None)  # loaded if one exists
    if kind is not Preprocess and (weights is None or kind is not weights):
        return None
    own = vars(preprocess)
    if any(name in own for name in _PIXEL_METHODS):
        return None
    limit = preprocess.max_pixels
    base = (int(preprocess.n_px), bool(preprocess.draft), bool(preprocess.exif_transpose),
            None if limit is None else int(limit))
    resample, crop = preprocess.resample, preprocess.crop_offset
    if kind is Preprocess:
        default = resample == Preprocess.resample and crop == Preprocess.crop_offset
        return ("Preprocess", *base) if default else None
    interpolation, mode = preprocess.interpolation, preprocess.resize_mode
    if not (isinstance(interpolation, str) and isinstance(mode, str) and isinstance(crop, str)
            and interpolation in _RESAMPLE_CODES and mode in _RESIZE_MODES and crop in CROP_OFFSETS
            and resample == _RESAMPLE_CODES[interpolation]):  # mutated after construction: not what it says
        return None
    return ("WeightsPreprocess", *base, interpolation, mode, crop)


def _preprocess_from_key(key: Any) -> Any:
    """The preprocess a hint file's key names, or None for anything that is not exactly a key `pixel_key` gives.

    A hint is our own cache file, but read as untrusted: every field is checked (types, a sane crop size,
    a pixel limit - never decode without one - no larger than Pillow's default), the class is one of the
    two `pixel_key` knows, and the preprocess built from it must give back the very same key.
    """
    if not isinstance(key, (list, tuple)) or len(key) not in (5, 8) or not all(
            isinstance(value, _KEY_SCALARS) for value in key):
        return None
    name, n_px, draft, exif, limit, *extra = key
    if not (_whole(n_px) and 16 <= n_px <= 1024 and isinstance(draft, bool) and isinstance(exif, bool)
            and _whole(limit) and 1 <= limit <= DEFAULT_MAX_PIXELS):
        return None
    options = {"draft": draft, "exif_transpose": exif, "max_pixels": limit}
    if name == "Preprocess" and not extra:
        from clipforge.image import Preprocess

        built = Preprocess(n_px, **options)
    elif name == "WeightsPreprocess" and len(extra) == 3:
        interpolation, mode, crop = extra
        if interpolation not in _RESAMPLE_CODES or mode not in _RESIZE_MODES or crop not in CROP_OFFSETS:
            return None
        from clipforge.weights.preprocessing import WeightsPreprocess  # torch-free, like this module

        built = WeightsPreprocess(n_px, interpolation=interpolation, resize_mode=mode, crop_offset=crop, **options)
    else:
        return None
    return built if pixel_key(built) == tuple(key) else None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Prefetch:
    """The shared mapping: a header, a taken flag per slot, `capacity` records and `capacity` uint8 crops of `n_px`."""

    def __init__(self, preprocess: Any, capacity: int) -> None:
        self.key = pixel_key(preprocess)
        if self.key is None:
            raise ValueError("only clipforge.image.Preprocess and the weights' WeightsPreprocess crops can be "
                             "prefetched")
        self.preprocess = preprocess
        self.n_px = int(preprocess.n_px)
        self.crop = self.n_px * self.n_px * 3
        self.capacity = int(capacity)
        self._taken = _HEADER  # one byte per slot, set by the reader that used it
        self._records = _HEADER + self.capacity
        self._pixels = self._records + self.capacity * _RECORD.size
        self.buffer = mmap.mmap(-1, self._pixels + self.capacity * self.crop)
        self.process: Any = None  # the decoding process (multiprocessing.Process)
        self.parent = os.getpid()
        self._index: dict[str, int] = {}
        self._indexed = 0

    # -- the mapping ------------------------------------------------------------------------
    def count(self) -> int:
        return int.from_bytes(self.buffer[0:4], "little")

    def stopped(self) -> bool:
        return self.buffer[8] != 0

    def request_stop(self) -> None:
        self.buffer[8] = 1

    def taken(self) -> int:
        """Photos a reader (in any process) took from this prefetch."""
        return self.buffer[self._taken:self._taken + self.capacity].count(1)

    def summary(self) -> str:
        return (f"decoded ahead: {self.count()} photos before the reader started ({self.n_px} px crops), "
                f"{self.taken()} taken by the reader")

    def _put(self, slot: int, item: DecodedFile, path: bytes, version: tuple[int, int]) -> None:
        pixels = np.ascontiguousarray(item.pixels, dtype=np.uint8)
        start = self._pixels + slot * self.crop
        self.buffer[start:start + self.crop] = pixels.tobytes()
        _RECORD.pack_into(self.buffer, self._records + slot * _RECORD.size, item.size, item.width or 0,
                          item.height or 0, *version, len(path), bytes.fromhex(item.sha256 or "0" * 64), path)
        self.buffer[0:4] = (slot + 1).to_bytes(4, "little")  # published after the record and the pixels

    def _slot(self, path: str) -> int | None:
        count = self.count()
        if count > self._indexed:
            for slot in range(self._indexed, count):
                *_, length, _, raw = _RECORD.unpack_from(self.buffer, self._records + slot * _RECORD.size)
                self._index[os.fsdecode(raw[:length])] = slot
            self._indexed = count
        return self._index.get(path)

    def take(self, path: str, preprocess: Any, *, hash: bool, skip_shas: Container[str],
             index: int) -> DecodedFile | None:
        """What `read_file(path, preprocess, ...)` gives, if this prefetch decoded `path` the same way; else None."""
        if pixel_key(preprocess) != self.key:
            return None
        slot = self._slot(path)
        if slot is None:
            return None
        size, width, height, inode, mtime, _, sha, _ = _RECORD.unpack_from(
            self.buffer, self._records + slot * _RECORD.size)
        if _version(path) != (inode, mtime):  # changed since: what the reader reads now is another picture
            return None
        out = DecodedFile(path, size, sha.hex() if hash else None, width, height, index=index)
        self.buffer[self._taken + slot] = 1
        if out.sha256 is not None and out.sha256 in skip_shas:
            return out
        start = self._pixels + slot * self.crop
        out.pixels = np.frombuffer(self.buffer, np.uint8, self.crop, start).reshape(self.n_px, self.n_px, 3).copy()
        return out

    # -- the decoding process ----------------------------------------------------------------
    def run(self, list_files: Callable[[], Iterable[str]]) -> None:
        """Decode `list_files()` in order into the mapping until full, told to stop, or orphaned."""
        for path in list_files():
            slot = self.count()
            if slot >= self.capacity or self.stopped() or os.getppid() != self.parent:
                return
            encoded = os.fsencode(path)
            if len(encoded) > PATH_BYTES:
                continue
            before = _version(path)
            item = read_file(path, self.preprocess, hash=True)
            pixels = getattr(item, "pixels", None)
            if (isinstance(item, DecodedFile) and isinstance(pixels, np.ndarray) and pixels.size == self.crop
                    and before is not None and _version(path) == before):  # not written to while read
                self._put(slot, item, encoded, before)

    def fork(self, list_files: Callable[[], Iterable[str]]) -> bool:
        """Start `run` in a forked daemon process (`multiprocessing`: ended at exit like any daemon child);
        False where fork is unavailable."""
        import multiprocessing

        try:
            context = multiprocessing.get_context("fork")
        except ValueError:
            return False
        self.process = context.Process(target=self._child, args=(list_files,), name="clipforge-prefetch", daemon=True)
        self.process.start()
        return True

    def _child(self, list_files: Callable[[], Iterable[str]]) -> None:
        die_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle
        _detach_standard_streams()  # never holds its caller's pipes open, never writes into its output
        self.run(list_files)

    def stop(self) -> None:
        """Ask the decoding process to stop after its current file (and reap it if it has)."""
        self.request_stop()
        if self.process is not None and os.getpid() == self.parent:
            self.process.is_alive()  # reaps a finished child


def _version(path: str) -> tuple[int, int] | None:
    """(inode, mtime in ns) of `path`: a file rewritten or replaced after it was decoded ahead differs."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _detach_standard_streams() -> None:
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)


def start(preprocess: Any, list_files: Callable[[], Iterable[str]]) -> Prefetch | None:
    """Fork the decoding of `list_files()` with `preprocess` and make it this process's active prefetch.

    None (nothing started) when turned off (`CLIPFORGE_PREFETCH=0`), on one core (no idle core to
    use), or for a preprocess that `pixel_key` does not cover.
    """
    global _ACTIVE
    if os.environ.get(PREFETCH_ENV, "1").strip() == "0" or pixel_key(preprocess) is None:
        return None
    if usable_cores() < 2:
        return None
    crop = int(preprocess.n_px) ** 2 * 3
    prefetch = Prefetch(preprocess, max(1, min(MAX_IMAGES, MAX_BYTES // crop)))
    if not prefetch.fork(list_files):
        return None
    _ACTIVE = prefetch
    return prefetch


def active() -> Prefetch | None:
    return _ACTIVE


def take(path: str, preprocess: Any, *, hash: bool, skip_shas: Container[str], index: int) -> DecodedFile | None:
    """The active prefetch's result for `path` (see `Prefetch.take`), or None."""
    prefetch = _ACTIVE
    return None if prefetch is None else prefetch.take(path, preprocess, hash=hash, skip_shas=skip_shas, index=index)


def reader_starts(preprocess: Any) -> None:
    """A reader starts in this process: stop decoding ahead (the reader's workers take over), and
    remember the first reader's pixel key (the hint the command saves for its next run)."""
    if not _READER_KEY:
        _READER_KEY.append(pixel_key(preprocess))
    if _ACTIVE is not None:
        _ACTIVE.stop()


def note_delivered(count: int) -> None:
    """A reader delivered `count` more decoded photos (`read_batches`, in the main process)."""
    _DELIVERED[0] += int(count)


def hint_to_keep() -> tuple[Any, ...] | None:
    """What this run should remember for the next: the first reader's pixel key if it read at least
    `AHEAD_MIN` photos, else None (forget: the next run decodes nothing ahead)."""
    return reader_key() if _DELIVERED[0] >= AHEAD_MIN else None


def reader_started() -> bool:
    """Whether a reader started in this process (`reader_starts`)."""
    return bool(_READER_KEY)


def reader_key() -> tuple[Any, ...] | None:
    """The pixel key of the first reader this process started (None: none, or one not prefetchable)."""
    return _READER_KEY[0] if _READER_KEY else None


# -- hints: the preprocess a command used last time -------------------------------------------
def _hints_path() -> Path:
    from clipforge.weights.registry import cache_dir

    return cache_dir() / _HINTS


def load_hint(command: str) -> Any:
    """The preprocess (`Preprocess` or `WeightsPreprocess`, see `pixel_key`) the command `command` (a key such as
    "embed\\0--model value") read with last time, or None (none kept, or a hint that does not check out)."""
    try:
        hints = json.loads(_hints_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _preprocess_from_key(hints.get(command)) if isinstance(hints, dict) else None


def save_hint(command: str, key: tuple[Any, ...] | None) -> None:
    """Remember `key` for `command` (atomically; the newest `_MAX_HINTS` commands are kept). Never raises."""
    from clipforge.atomic import write_json_atomic

    path = _hints_path()
    try:
        hints = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        hints = {}
    if not isinstance(hints, dict):
        hints = {}
    value = None if key is None else list(key)
    if hints.get(command) == value:
        return
    hints.pop(command, None)
    if value is not None:
        hints[command] = value
    with contextlib.suppress(OSError, ValueError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, dict(list(hints.items())[-_MAX_HINTS:]))
