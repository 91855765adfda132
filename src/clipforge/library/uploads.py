"""A library's uploads follow its folder: moved, renamed, copied or mounted elsewhere, they are still its own.

An upload (`Library.add_bytes`, the REST upload) is kept in the library's ``uploads/`` folder
(`media.store_upload`: ``uploads/<sha[:2]>/<sha256>/<name><ext>`` or ``uploads/<sha[:2]>/<sha256><ext>``), and its
record holds that file's absolute path, like every other record. After ``mv X Y`` the records still named
``X/uploads/...``: originals and thumbnails failed, `index prune` deleted every upload (vectors and tags too), and a
re-upload answered with the dead record. The layout itself says which records are uploads: a path whose last
components are ``uploads/<sha[:2]>/<sha>/...`` or ``uploads/<sha[:2]>/<sha>.<ext>`` for the record's own sha256.

- **On open** (every `Library`, when the folder is not the one recorded in meta ``uploads_dir``) and before a
  prune, `rehome_uploads` rewrites the records of uploads held under another folder's ``uploads/`` to this
  library's ``uploads/`` when the file is there (a path another record holds already is left alone). The rows,
  ids, vectors and tags stay; only the path changes. One transaction; the meta key makes it once per move.
- **On read** (`home_record`): a database this user cannot write (a read-only mount at another path) is not
  rewritten, so records are read with this library's copy of the upload where one is there.
- **On copy** (`index copy --to-library`, `copy_upload`): the upload files are copied into the destination's
  ``uploads/`` and its records name those copies.

Nothing else moves: photos indexed from the user's own folders keep the paths they were found at.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import replace
from typing import Any

from clipforge.library.dbfile import from_db, to_db
from clipforge.library.paths import LibraryPaths
from clipforge.library.records import ImageRecord

__all__ = ["UPLOADS_META", "copy_upload", "home_hit", "home_path", "home_record", "rehome_uploads", "upload_tail"]

UPLOADS_META = "uploads_dir"
"""Meta key: the uploads folder (normalised absolute path) the records were last brought home to."""


def upload_tail(path: str, sha256: str | None) -> str | None:
    """``<sha[:2]>/<sha>/<name>`` or ``<sha[:2]>/<sha><ext>`` when `path` is an upload of these bytes in some
    library's ``uploads/`` folder (`media.store_upload`'s layout), else None."""
    if not sha256 or len(sha256) != 64:
        return None
    parts = path.split(os.sep)
    for tail in (parts[-3:], parts[-2:]):
        if len(parts) <= len(tail) or parts[-len(tail) - 1] != "uploads" or tail[0] != sha256[:2]:
            continue
        named = len(tail) == 3 and tail[1] == sha256 and bool(tail[2])
        bare = len(tail) == 2 and tail[1].startswith(sha256 + ".") and len(tail[1]) > len(sha256) + 1
        if named or bare:
            return os.sep.join(tail)
    return None


def _uploads_dir(paths: LibraryPaths) -> str:
    from clipforge.library.scan import normalise_path

    return normalise_path(paths.uploads_dir)


def home_path(paths: LibraryPaths, path: str, sha256: str | None) -> str | None:
    """This library's copy of an upload recorded under another folder's ``uploads/`` (the library moved, renamed,
    copied or mounted elsewhere), when that file is here; None otherwise (already here, not an upload, or no
    copy here)."""
    own = _uploads_dir(paths)
    if path.startswith(own + os.sep):
        return None
    tail = upload_tail(path, sha256)
    # a file still where it was recorded is that file, unless it sits in another library's uploads (the source of
    # a copied library): a user's own photo in a folder shaped like `uploads/<ab>/<sha>/` was served from here
    if tail is not None and os.path.lexists(path) and not _in_a_library(path, tail):
        return None
    if tail is None:
        return None
    candidate = os.path.join(own, tail)
    return candidate if os.path.isfile(candidate) and not os.path.islink(candidate) else None


def home_record(paths: LibraryPaths, record: ImageRecord | None) -> ImageRecord | None:
    """`record`, with this library's copy of its upload as its path where `home_path` finds one."""
    if record is None:
        return None
    moved = home_path(paths, record.path, record.sha256)
    return record if moved is None else replace(record, path=moved)


def home_hit(paths: LibraryPaths, hit: Any) -> Any:
    """A search hit (`search.SearchHit`) with this library's copies of its uploads (`home_path`: a moved library
    whose records were not rewritten), for both stores."""
    path = home_path(paths, hit.path, hit.sha256) or hit.path
    duplicates = [home_path(paths, p, hit.sha256) or p for p in hit.duplicates]
    if (path, duplicates) == (hit.path, hit.duplicates):
        return hit
    return replace(hit, path=path, duplicates=duplicates)


def rehome_uploads(store: Any, paths: LibraryPaths, force: bool = False) -> int:
    """Rewrite the records of uploads held under another folder's ``uploads/`` to this library's copies (see the
    module docstring); returns how many. Runs when meta ``uploads_dir`` names another folder (or none), or when
    `force` (a prune, which must never delete an upload that is here). Nothing is done, and nothing raised, where
    the database cannot be written (a read-only library reads its uploads through `home_record`)."""
    from clipforge.library.dbfile import LibraryWriteError

    own = _uploads_dir(paths)
    recorded = store.get_meta(UPLOADS_META)
    # the same folder by another name (a symlink, a bind mount): its records are live as they are
    if not force and recorded is not None and _same_folder(recorded, own):
        return 0
    if getattr(store, "read_only", False):
        return 0
    pattern = f"%{os.sep}uploads{os.sep}%"
    moved = 0
    # On open (not `force`) this is a courtesy: it never waits for another process's write (a `search` beside an
    # `index add` waited 60 s, then crashed on "database is locked"); reads find the uploads anyway (`home_record`).
    with contextlib.suppress(LibraryWriteError, *(() if force else (sqlite3.OperationalError,))), \
            store.transaction(wait=force) as tx:
        rows = tx.execute("SELECT id, path, sha256 FROM images WHERE sha256 IS NOT NULL AND CAST(path AS TEXT) "
                          "LIKE ?", (pattern,)).fetchall()
        for image_id, stored, sha256 in rows:
            target = home_path(paths, from_db(stored), sha256)
            if target is None:
                continue
            taken = tx.execute("SELECT 1 FROM images WHERE path = ?", (to_db(target),)).fetchone()
            if taken is None:  # (the same bytes recorded under this folder already: that record stays)
                tx.execute("UPDATE images SET path = ? WHERE id = ?", (to_db(target), int(image_id)))
                moved += 1
        tx.set_meta(UPLOADS_META, own)
    return moved


def _in_a_library(path: str, tail: str) -> bool:
    """Whether the folder holding `path`'s ``uploads/`` is a library (its database is there)."""
    root = path[: -len(tail)].rstrip(os.sep)  # .../<root>/uploads
    return os.path.isfile(LibraryPaths(os.path.dirname(root)).db)


def _same_folder(recorded: str, own: str) -> bool:
    """Whether the folder recorded is this one: the same name, or the same directory by another path (a symlink, a
    bind mount, a container's mount: a library reached two ways rewrote its records back and forth at each open)."""
    if recorded == own:
        return True
    try:
        return os.path.samefile(recorded, own)
    except OSError:
        return False


def copy_upload(record: ImageRecord, paths: LibraryPaths) -> str | None:
    """The path of `record`'s upload in `paths`' ``uploads/`` folder, the file copied there first when it is not
    (`index copy --to-library`: a destination whose uploads named the source's files lost them with the source
    folder). None when `record` is no upload, or its file is gone or no longer holds its bytes (the record then
    keeps its path, as any other file's record does)."""
    import hashlib

    from clipforge.atomic import write_bytes_atomic
    from clipforge.regular_file import read_regular_file

    tail = upload_tail(record.path, record.sha256) if record.status == "ok" else None
    if tail is None:
        return None
    target = os.path.join(_uploads_dir(paths), tail)
    if target == record.path or (os.path.isfile(target) and os.path.getsize(target) == record.size):
        return target
    try:
        data = read_regular_file(record.path, max_bytes=record.size)
    except (OSError, ValueError):  # gone, not a regular file, or grown since
        return None
    if hashlib.sha256(data).hexdigest() != record.sha256:
        return None
    write_bytes_atomic(target, data)
    with contextlib.suppress(OSError):  # the recorded time: a later `index add` of it reads nothing again
        os.utime(target, ns=(record.mtime_ns, record.mtime_ns))
    return target
