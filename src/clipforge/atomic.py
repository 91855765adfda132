"""Atomic file writes: a reader, or the next run after a crash, never sees half a file.

Every layer writes results people or programs read back (reports, plots, caches, checkpoints,
index files), so the one way to do it lives here, below all of them. A write goes to a
temporary file beside the target, is flushed to disk, and is renamed over the target only
when complete.

The result has the permissions a plain ``open(target, "w")`` would give it: the umask's for
a new file, the old file's for a replaced one (not ``mkstemp``'s 0600, which made reports
and plots unreadable to the group that can read the log beside them).

Temporary names carry the writer's pid and host (``.<name>.<pid>-<random>.tmp@<host><suffix>``, `<name>` cut short
with a hash where the whole would pass the 255 bytes a file name may have), so
`remove_stale_temps` can delete what a killed process left behind without touching a
write still in progress in another one: on another host (a shared folder: a suite's ``--out``, a
training run's checkpoints on NFS) a pid means nothing here, so that host's temporaries go only once a
day old. In the same spirit, `NewFolders` lets a start that fails take
back the empty folders it made (a training run's `--out`, a served library's folder).

**A write the disk refuses for want of room** is one `DiskFullError` whoever wrote (`clipforge.disk_full`, re-exported
here): `atomic_path` raises it naming the target, in one sentence: the file, what happened, what is left, what to
do; `write_file_atomic` serves writers that hide the errno (torch.save).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from clipforge.disk_full import (
    DISK_FULL_ERRNOS,
    DiskFullError,
    disk_full,
    disk_full_error,
    full_errno,
    naming_full_disk,
)

__all__ = [
    "DISK_FULL_ERRNOS", "DiskFullError", "disk_full", "disk_full_error", "full_errno", "naming_full_disk",
    "write_file_atomic",
    "NewFolders",
    "files_under",
    "folder_problem",
    "STALE_AFTER_S", "host_tag", "left_behind",
    "atomic_path", "remove_stale_temps", "save_figure", "write_atomic", "write_bytes_atomic", "write_json_atomic",
    "write_text_atomic",
]

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp(?:@(?P<host>[A-Za-z0-9-]+))?")

STALE_AFTER_S = 86_400.0
"""Age past which a temporary is removed whatever host wrote it: no write takes a day."""


def host_tag() -> str:
    """This machine's name as one part of a temporary's name (letters, digits, `-`; a hash when changed)."""
    host = socket.gethostname() or "localhost"
    tag = re.sub(r"[^A-Za-z0-9-]+", "-", host)[:24]
    if tag != host:  # `a.b` and `a-b` stay apart
        tag = f"{tag}-{hashlib.blake2b(host.encode('utf-8', 'replace'), digest_size=4).hexdigest()}"
    return tag


NAME_MAX = 255
"""Bytes a file name may have on the file systems clipforge writes to (ext4, XFS, btrfs, APFS, NTFS's UTF-16 aside)."""


def _temp_stem(name: str, room: int) -> str:
    """`name` as the first part of its temporary's name, in at most `room` bytes: whole when it fits, else cut (at a
    character) and ended by ``~`` and a hash of the whole name, so two long names with one start stay apart."""
    if len(os.fsencode(name)) <= room:
        return name
    digest = hashlib.blake2b(os.fsencode(name), digest_size=4).hexdigest()
    cut = name
    while cut and len(os.fsencode(cut)) > room - len(digest) - 1:
        cut = cut[:-1]
    return f"{cut}~{digest}"


_SUFFIX_MAX = 32
"""Longest suffix a temporary keeps (``.safetensors`` is 12 bytes): `Path.suffix` of ``r.<80 Chinese characters>`` is
everything after the dot, which left no room for the name (review 65); a format's suffix is never that long."""


def _create_temp(target: Path, suffix: str) -> Path:
    """A new empty file beside `target`, created with mode 0666 so the kernel applies the umask.

    Its name keeps within `NAME_MAX` bytes for any legal target name: the pid, random part, host and suffix add
    25-60 bytes, and a target of 220-255 bytes (79 Chinese characters and ``.png``) could not be written at all
    (ENAMETOOLONG); its target's name is then shortened (`_temp_stem`)."""
    if len(os.fsencode(suffix)) > _SUFFIX_MAX:  # "r.<80 Chinese characters>": a name's tail, not a format's suffix
        suffix = ""
    while True:
        tail = f".{os.getpid()}-{secrets.token_hex(4)}.tmp@{host_tag()}{suffix}"
        stem = _temp_stem(target.name, NAME_MAX - 1 - len(os.fsencode(tail)))
        tmp = target.with_name(f".{stem}{tail}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


def _fsync(path: Path, directory: bool = False) -> None:
    """Flush to disk (best effort: some filesystems refuse fsync on directories)."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`, renamed onto it only if the block succeeds.

    The temporary name ends in `target`'s suffix (or `suffix`), so writers that choose a format
    by extension (matplotlib, numpy, pyarrow) write the right one. The block may write the path
    any way it likes (`np.save`, `faiss.write_index`, `safetensors.torch.save_file`, `fig.savefig`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(target, target.suffix if suffix is None else suffix)
    mode = stat.S_IMODE(os.stat(tmp).st_mode)  # what the umask gave a new file
    try:
        with naming_full_disk(target):  # "[Errno 27] File too large" named no file; safetensors' named none either
            yield tmp
            with suppress(FileNotFoundError):  # replacing: keep the old file's mode
                mode = stat.S_IMODE(os.stat(target).st_mode)
            # Writers that replace the path themselves (safetensors renames its own 0600 temp file
            # onto it) must not decide the mode either.
            os.chmod(tmp, mode)
            _fsync(tmp)
            os.replace(tmp, target)
            _fsync(target.parent, directory=True)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_atomic(target: str | os.PathLike[str], writer: Callable[[Path], object],
                 suffix: str | None = None) -> Path:
    """Call `writer(tmp_path)` and move the result onto `target` atomically; returns `target`."""
    with atomic_path(target, suffix=suffix) as tmp:
        writer(tmp)
    return Path(target)


class _Recorded:
    """A binary file whose first failed write is kept (`error`), for a writer that reports it in its own words."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.file.flush()


def write_file_atomic(target: str | os.PathLike[str], writer: Callable[[Any], object]) -> Path:
    """Call `writer(file)` with a binary file object and move what it wrote onto `target` atomically; returns
    `target`. For writers whose report of a failed write hides the errno: torch.save said "[enforce fail at
    inline_container.cc:672] . unexpected pos 45234816 vs 45234708" of a full disk, a RuntimeError no one could
    tell from a bug; the OSError the file raised (EFBIG, ENOSPC) is raised instead, as a `DiskFullError`."""
    with atomic_path(target) as tmp, open(tmp, "wb") as raw:
        file = _Recorded(raw)
        try:
            writer(file)
        except Exception:
            if file.error is not None:
                raise file.error from None
            raise
    return Path(target)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    return write_atomic(target, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(target: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    return write_bytes_atomic(target, text.encode(encoding))


def write_json_atomic(target: str | os.PathLike[str], payload: Any, *, sort_keys: bool = False,
                      default: Callable[[Any], Any] | None = str) -> Path:
    text = json.dumps(payload, indent=2, sort_keys=sort_keys, ensure_ascii=False, default=default)
    return write_text_atomic(target, text + "\n")


def save_figure(fig: Any, target: str | os.PathLike[str], *, dpi: int = 100,
                finish: Callable[[Any], object] | None = None) -> Path:
    """A matplotlib figure written to `target` (format from its suffix) atomically, then closed.

    Laid out first (``tight_layout``), then `finish(fig)` draws what must stay where it was put (a
    font notice in the margin); closed even when writing fails, because pyplot keeps every open figure
    alive. Call it inside any style context the figure was drawn under (fonts apply when it is written).
    """
    from clipforge.figures import pyplot

    plt = pyplot()
    try:
        fig.tight_layout()
        if finish is not None:
            finish(fig)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(target)


def left_behind(host: str | None, pid: str | None, mtime: float, now: float, *, hostless_by_pid: bool = True) -> bool:
    """Whether a temporary file or folder named with its writer's `host` and `pid` was left by a writer that no
    longer runs: this host's when that pid is no live process here; another host's (its pid says nothing here),
    one without a pid, or without a host and `hostless_by_pid=False`, once `STALE_AFTER_S` old. A live writer's
    is never judged left behind (a reused pid keeps it: the safe side)."""
    by_pid = pid is not None and (host == host_tag() or (host is None and hostless_by_pid))
    return (by_pid and not _alive(int(pid))) or now - mtime > STALE_AFTER_S


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's; or a number no pid is (then judged by age)
        return True
    return True


def remove_stale_temps(
    directory: str | os.PathLike[str], *, hostless_by_pid: bool = True, now: float | None = None
) -> list[Path]:
    """Delete temporary files in `directory` left by writers that no longer run; returns them.

    Only names this module creates are considered: this host's when their pid is not a live process here,
    another host's (its pid says nothing here) only once `STALE_AFTER_S` old, so a concurrent writer's file is
    never removed. A name without a host (an earlier version's) is judged by its pid, or with
    `hostless_by_pid=False` (a folder other hosts write into) by age like another host's.
    """
    removed: list[Path] = []
    folder = Path(directory)
    if not folder.is_dir():
        return removed
    now = time.time() if now is None else now
    for entry in folder.iterdir():
        match = _TEMP_RE.match(entry.name)
        try:
            if not match or not entry.is_file():
                continue
            if left_behind(match["host"], match["pid"], entry.stat().st_mtime, now, hostless_by_pid=hostless_by_pid):
                entry.unlink()
                removed.append(entry)
        except FileNotFoundError:  # its writer renamed it, or another process removed it
            continue
    return removed


def folder_problem(path: str | os.PathLike[str]) -> str | None:
    """Why files cannot be written in the folder `path` (missing folders are made by the writers), or None.

    Nothing is created: a temporary file probes `path`, or the nearest existing folder above it (every rank of
    a torchrun job may check at once). Commands call it before loading anything (`eval --out/--plot`,
    `train --out`), so `--out afile` or an unwritable folder is one line, not an errno after the whole run.
    """
    import tempfile

    path = Path(path).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())
    if not existing.is_dir():
        what = "a file" if existing.is_file() else "something else"
        return f"is {what}, not a folder" if existing == path else f"cannot write there: {existing} is {what}, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"cannot write files in {existing} ({exc.strerror or type(exc).__name__})"
    return None


def files_under(folder: str | os.PathLike[str]) -> Iterator[tuple[Path, os.stat_result]]:
    """Every file under `folder` with its own `lstat` (links are counted as links, never followed); a file that
    vanishes during the walk is skipped. What the commands and the server measure a folder by: the UI's upload
    space and a milvus-lite store's size (`index stats`)."""
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = Path(dirpath) / name
            try:
                yield path, path.lstat()
            except OSError:
                continue


class NewFolders:
    """The folders among `paths` and their parents that do not exist yet, noted before anything is made, so that
    a start that fails (a training run before its first checkpoint or log line, `serve --create` before it
    serves) can take back what it made: a new folder with nothing in it is no run and no library.

    Two rules keep it safe: only folders that were missing when noted are candidates (a folder the user made,
    or an earlier run's, is never touched), and each goes by `os.rmdir`, which refuses a folder holding
    anything (what the failed start did write stays, and nothing another process put there can be lost).
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        missing: set[Path] = set()
        for path in paths:
            folder = Path(os.path.abspath(path))
            while not os.path.lexists(folder) and folder.parent != folder:
                missing.add(folder)
                folder = folder.parent
        # deepest first: a folder is empty only once the folders inside it are gone
        self.folders = sorted(missing, key=lambda p: len(p.parts), reverse=True)

    def remove_unused(self) -> list[Path]:
        """Remove the noted folders that are empty now (deepest first); returns the ones removed. A folder
        that holds anything, or that cannot be removed, stays, and so do the folders above it."""
        removed = []
        for folder in self.folders:
            try:
                folder.rmdir()
            except OSError:  # not empty, gone already, or not ours to remove: leave it
                continue
            removed.append(folder)
        return removed
