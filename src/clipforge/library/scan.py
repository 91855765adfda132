"""Find the image files an `index add` or `embed` run should consider.

Folders contribute files with an image extension (the list `clipforge.image` can decode here);
a file named explicitly is always taken, so a broken ``notes.jpg`` - or a file with no image
extension at all - is tried, fails and gets recorded with its reason instead of vanishing.
Hidden files and folders are skipped in folder walks, and so is the library's own folder
(its thumbnails must never index themselves), and the folders NAS boxes, Windows and tools keep beside
photos (`SKIPPED_FOLDERS`: a Synology share's ``@eaDir`` holds two thumbnails of every photo, which were
indexed as photos of their own and came back beside it in every image search). A folder named
explicitly is walked whatever its name.

A symlinked folder is followed when it leads outside everything walked so far (``Pictures/phone ->
/media/phone``: its photos were silently missing, as `os.walk` does not follow links), and its photos
keep the link's path. One that leads back into a walked tree (a loop such as ``2020/all -> ..``, or a
second name for a folder already walked) is not followed: those photos are indexed once, under their
real path. A link to a folder holding one followed before is followed, and that folder is skipped when
reached again (the photos beside it were missing when the shallower link was met first). Links into
/proc, /sys and /dev are never followed: those trees hold links to every process's folders
(``/proc/self/cwd``), which a walk followed out into whatever tree they led to.

Only regular files are ever opened. A FIFO named ``x.jpg`` would block the reader forever
and a device file would stream without end, so anything else (FIFO, socket, device) is
handed back as *rejected* with the reason, for the caller to record, never read. Names
that are not valid UTF-8 arrive as Python spells them (surrogate escapes) and are kept so.

What a scan leaves out or cannot show well is said, once per scan (`clipforge.library.scan_notices`): photos
in a format this installation cannot read (``.heic`` without pillow-heif), which walks skip, and names that are
not UTF-8 (a Windows zip's GBK names), which are indexed all the same. Both are counted in the `ScanResult`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clipforge.library.dbfile import display_path
from clipforge.library.scan_notices import (
    NotUtf8NamesNotice,
    UnreadablePhotosNotice,
    is_utf8_name,
    not_utf8_sentence,
    printable_line,
    unreadable_sentence,
)
from clipforge.regular_file import read_regular_file, special_kind

__all__ = ["SKIPPED_FOLDERS", "FolderFilter", "ScanResult", "skipped_folder_of", "discover_files", "file_identity", "folders_of", "is_under",
           "normalise_path", "read_regular_file", "scan_paths"]

FolderFilter = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None
"""A search's `under`: one folder or several (their images and those of every folder below)."""


@dataclass
class ScanResult:
    """`files`: regular files (or names that could not be stat'ed: the reader says why) to read.
    `rejected`: (path, size, mtime_ns, reason) of entries that must not be opened. `unreadable`: extension ->
    photos a folder walk skipped because this installation cannot read their format (`unreadable_named`: those
    named outright, taken anyway). `not_utf8`: the files and rejected entries whose names are not UTF-8."""

    files: list[str] = field(default_factory=list)
    rejected: list[tuple[str, int, int, str]] = field(default_factory=list)
    unreadable: Counter[str] = field(default_factory=Counter)
    unreadable_named: Counter[str] = field(default_factory=Counter)
    not_utf8: list[str] = field(default_factory=list)


def normalise_path(path: str | os.PathLike[str]) -> str:
    """Absolute, normalised path string: the key a file is known by (symlinks are not resolved)."""
    return os.path.normpath(os.path.abspath(os.fspath(Path(path).expanduser())))


def is_under(path: str, folders: Sequence[str]) -> bool:
    """Whether `path` lies in one of `folders` (normalised) or below it."""
    return any(path.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders)


def folders_of(under: FolderFilter) -> list[str]:
    """The normalised folders of a search's `under` (none for None)."""
    if under is None:
        return []
    items = [under] if isinstance(under, (str, os.PathLike)) else list(under)
    return [normalise_path(item) for item in items]


SKIPPED_FOLDERS = frozenset(name.casefold() for name in (
    "@eaDir", "#recycle", "#snapshot", "@Recycle", "@Recently-Snapshot",  # Synology, QNAP
    "$RECYCLE.BIN", "System Volume Information",  # Windows drives
    "lost+found", "node_modules", "__pycache__",
))
"""Folder names a walk never enters (compared without case): thumbnails, recycle bins and snapshots of NAS
boxes and drives, and tool folders; what rclip skips by default, and the NAS ones it does not."""


def _walked_folder(name: str) -> bool:
    return not name.startswith(".") and name.casefold() not in SKIPPED_FOLDERS


def skipped_folder_of(path: str, folders: Sequence[str]) -> str | None:
    """The folder a walk of `folders` does not enter on the way to `path` (a hidden one, or one of `SKIPPED_FOLDERS`:
    a Synology `@eaDir` indexed before walks skipped it), or None: photos indexed there stay in the library, which
    `index add` says (`AddReport.unwalked`), as `index prune` keeps them (their files are there)."""
    for folder in folders:
        root = folder.rstrip(os.sep) + os.sep
        if not path.startswith(root):
            continue
        parts = path[len(root):].split(os.sep)[:-1]
        for i, name in enumerate(parts):
            if not _walked_folder(name):
                return os.path.join(folder, *parts[:i + 1])
    return None


def _is_image_name(name: str) -> bool:
    from clipforge.image.formats import is_image_path

    return is_image_path(name)


def _unreadable_extension(name: str) -> str | None:
    from clipforge.image.formats import unreadable_extension

    return unreadable_extension(name)


def _raw_only(skipped: set[str], found: set[str]) -> set[str]:
    """`skipped` less the camera RAW files whose shot the scan found as a photo beside them (``IMG_1.CR2`` next to
    ``IMG_1.JPG``, any case): a card shot RAW+JPEG is indexed whole, and the RAW notice ("export RAW-only shots to
    JPEG") was said on every run all the same (review 64). Only RAW-only shots are counted. One set of the found
    photos' stems, made only when a RAW file was skipped."""
    from clipforge.image.formats import is_raw_extension

    raws = {p for p in skipped if is_raw_extension(os.path.splitext(p)[1])}
    if not raws:
        return skipped
    stems = {os.path.splitext(p)[0].lower() for p in found}
    return skipped - {p for p in raws if os.path.splitext(p)[0].lower() in stems}


def _walk(root: str, recursive: bool, exclude: Sequence[str], unreadable: list[OSError],
          walked: _Trees | None = None, skipped: set[str] | None = None) -> Iterable[str]:
    """Image-named files under `root`; the folders the walk could not list go to `unreadable` (os.walk
    skipped them without a word: a mode-000 subfolder's photos were simply not there). `walked`: the real
    paths of the trees being walked, grown by each symlinked folder followed (see the module docstring).
    `skipped` gets the photos left out because this installation cannot read their format."""
    skipped = set() if skipped is None else skipped

    def taken(folder: str, name: str) -> bool:
        if name.startswith("."):
            return False
        if _is_image_name(name):
            return True
        if _unreadable_extension(name) is not None:
            skipped.add(os.path.join(folder, name))
        return False

    if not recursive:
        try:
            with os.scandir(root) as entries:
                names = [entry.name for entry in entries if not entry.is_dir() and taken(root, entry.name)]
        except OSError as exc:
            unreadable.append(exc)
            return
        yield from (os.path.join(root, name) for name in names)
        return
    walked = _Trees([os.path.realpath(root)]) if walked is None else walked
    for current, dirs, files in os.walk(root, onerror=unreadable.append, followlinks=True):
        dirs[:] = sorted(d for d in dirs if _walked_folder(d)
                         and not any(_inside(os.path.join(current, d), ex) for ex in exclude)
                         and _follow(os.path.join(current, d), walked, exclude))
        for name in files:
            if taken(current, name):
                yield os.path.join(current, name)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


_SYSTEM_TREES = ("/proc", "/sys", "/dev")
"""Never entered through a link: kernel views, not photos (/proc/<pid>/cwd leads to every process's folder)."""


@dataclass
class _Trees:
    """What a walk has entered: `named` (the real paths of the folders named, and the library's folder), and
    the real paths and (device, inode) of the symlinked folders followed so far."""

    named: list[str]
    followed: list[str] = field(default_factory=list)
    followed_ids: set[tuple[int, int]] = field(default_factory=set)


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file `path` leads to (links followed), None when it cannot be stat'ed: two names
    with one identity are one file (a symlinked folder's name and its real path, a hard link), not two copies."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


_identity = file_identity


def _follow(folder: str, walked: _Trees, exclude: Sequence[str]) -> bool:
    """Whether the walk enters `folder`. A real folder: yes, unless it is a followed link's target met again
    through a link to a folder above it. A symlinked one: only when its target is outside every tree walked,
    does not hold a named tree or the library's folder (a loop), and is not a kernel view (`_SYSTEM_TREES`)."""
    if not os.path.islink(folder):
        return not walked.followed_ids or _identity(folder) not in walked.followed_ids
    real = os.path.realpath(folder)
    named = [*walked.named, *map(os.path.realpath, exclude)]
    if any(_inside(real, tree) or _inside(tree, real) for tree in named):
        return False  # a named folder again, or a loop
    if any(_inside(real, tree) for tree in [*walked.followed, *_SYSTEM_TREES]):
        return False
    walked.followed.append(real)
    identity = _identity(real)
    if identity is not None:
        walked.followed_ids.add(identity)
    return True


def _not_regular(path: str) -> tuple[int, int, str] | None:
    """(size, mtime_ns, reason) when `path` exists but is not a regular file (links followed)."""
    try:
        info = os.stat(path)
    except OSError:
        return None  # missing, dangling or unreadable: the reader records the precise reason
    kind = special_kind(info.st_mode)
    if kind is None:
        return None
    return info.st_size, info.st_mtime_ns, f"not a regular file ({kind})"


def scan_paths(paths: Iterable[str | os.PathLike[str]], recursive: bool = False,
               exclude: Iterable[str | os.PathLike[str]] = (), notify: bool = True) -> ScanResult:
    """Sorted, de-duplicated absolute paths split into files to read and entries to reject.

    Raises FileNotFoundError naming inputs that do not exist. `notify`: say what the scan skipped or cannot show
    well (see the module docstring); False for a scan that only checks a folder.
    """
    excluded = [normalise_path(p) for p in exclude]
    unreadable: list[OSError] = []
    found: set[str] = set()
    missing: list[str] = []
    paths = list(paths)
    result = ScanResult()
    skipped: set[str] = set()  # photos a walk left out, in a format this installation cannot read
    named: set[str] = set()  # those named outright (taken anyway)
    # The named folders: a symlinked folder leading into one of them is not followed (its photos are found there).
    walked = _Trees([os.path.realpath(normalise_path(p)) for p in paths if os.path.isdir(normalise_path(p))])
    for raw in paths:
        path = normalise_path(raw)
        if os.path.isdir(path):
            found.update(p for p in _walk(path, recursive, excluded, unreadable, walked, skipped)
                         if not any(_inside(p, ex) for ex in excluded))
        elif os.path.lexists(path):
            if _unreadable_extension(path) is not None:
                named.add(path)
            found.add(path)
        else:
            missing.append(str(raw))
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")
    if unreadable:
        _warn_unreadable(unreadable)
    result.unreadable_named.update(_unreadable_extension(p) or "" for p in named)
    result.unreadable.update(_unreadable_extension(p) or "" for p in _raw_only(skipped - named, found)
                             if not any(_inside(p, ex) for ex in excluded))
    for path in sorted(found):
        odd = _not_regular(path)
        if odd is None:
            result.files.append(path)
        else:
            result.rejected.append((path, *odd))
        if not is_utf8_name(path):
            result.not_utf8.append(path)
    if notify:
        _notify(result)
    return result


def _notify(result: ScanResult) -> None:
    """The scan's notices (`clipforge.library.scan_notices`): photos it cannot read, names that are not UTF-8."""
    import warnings

    if result.unreadable or result.unreadable_named:
        warnings.warn(UnreadablePhotosNotice(unreadable_sentence(result.unreadable, result.unreadable_named)),
                      stacklevel=3)
    if result.not_utf8:
        warnings.warn(NotUtf8NamesNotice(not_utf8_sentence(result.not_utf8)), stacklevel=3)


def _warn_unreadable(errors: list[OSError]) -> None:
    """One warning naming the folders a walk could not list (the CLI prints it as one ``warning:`` line). Names are
    shown as the notices show them (`display_path`, control characters escaped): a folder named ``no\\nperm\\e[2J``
    split the line and cleared the screen, and one that is not UTF-8 was printed as ``\\udcff``."""
    import warnings

    shown = "; ".join(f"{printable_line(display_path(os.fsdecode(err.filename or '')))} "
                      f"({(err.strerror or str(err)).lower()})" for err in errors[:3])
    more = f" and {len(errors) - 3} more" if len(errors) > 3 else ""
    warnings.warn(f"skipped {len(errors)} folder(s) that could not be read, with whatever photos they hold: "
                  f"{shown}{more}", UserWarning, stacklevel=3)


def discover_files(paths: Iterable[str | os.PathLike[str]], recursive: bool = False,
                   exclude: Iterable[str | os.PathLike[str]] = (), notify: bool = True) -> list[str]:
    """The files `scan_paths` would read (entries that are not regular files are left out)."""
    return scan_paths(paths, recursive, exclude, notify).files
