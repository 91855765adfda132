"""Reading a dataset's files straight out of its downloaded tar archive, without unpacking it.

CIFAR's python version is published as `cifar-10-python.tar.gz`; a user who points `--root` at
it was told "missing folder" about a file that exists. Its members are read in one pass over the
stream (a gzip stream cannot seek back cheaply), only those asked for, and only regular files:
nothing is written to disk, so a member's name can never land anywhere.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from .base import DatasetFormatError, DatasetLayoutError

__all__ = ["is_tar_archive", "read_tar_batches"]

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_MAX_MEMBER_BYTES = 1 << 30


def is_tar_archive(path: Path) -> bool:
    """Whether `path` is a regular file named like a tar archive."""
    return path.is_file() and path.name.lower().endswith(_TAR_SUFFIXES)


def read_tar_batches(archive: Path, folder: str, names: list[str]) -> dict[str, bytes]:
    """The bytes of `folder/<name>` for each of `names` in `archive`; a missing one is named, with
    the top-level folders the archive does hold (a CIFAR-100 download given as CIFAR-10, say)."""
    wanted = {f"{folder}/{name}": name for name in names}
    found: dict[str, bytes] = {}
    tops: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                tops.add(name.split("/", 1)[0])
                if name in wanted and member.isfile():
                    if member.size > _MAX_MEMBER_BYTES:  # CIFAR-100's train pickle is 155 MB
                        raise DatasetFormatError(
                            f"{archive}: {name} claims {member.size:,} bytes; a dataset "
                            f"file read from an archive may have {_MAX_MEMBER_BYTES:,}"
                        )
                    handle = tar.extractfile(member)
                    if handle is not None:
                        found[wanted[name]] = handle.read()
                if len(found) == len(wanted):
                    break
    except tarfile.ReadError as exc:  # its message lists every compression tried: not worth a user's line
        raise DatasetFormatError(f"{archive}: not a readable tar archive (.tar, .tar.gz, .tgz)") from exc
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetFormatError(f"{archive}: not a readable tar archive ({exc})") from exc
    missing = [f"{folder}/{n}" for n in names if n not in found]
    if missing:
        holds = ", ".join(sorted(tops)[:5]) or "nothing"
        raise DatasetLayoutError(f"{archive} holds no {', '.join(missing)} (its top-level entries: {holds})")
    return found
