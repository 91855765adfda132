"""Verified, resumable, atomic downloads.

A checkpoint is hundreds of megabytes fetched over networks that drop connections, so the
download streams into ``<file>.partial`` while hashing, resumes that file with an HTTP Range
request after a failure, and renames it into place only once the sha256 matches. The final
path therefore never holds a partial or corrupt file, and a reader never needs to re-check
for truncation.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from clipforge.weights.errors import DownloadError

CHUNK = 1 << 20
USER_AGENT = "clipforge-downloader"


class _Retryable(Exception):
    """A failure worth retrying (network hiccup, short read, server error).

    `restart` says the bytes already on disk cannot be resumed from and must be dropped.
    """

    def __init__(self, reason: str, restart: bool = False) -> None:
        super().__init__(reason)
        self.restart = restart


class _Fatal(Exception):
    """A failure retrying cannot fix (404, hash mismatch of a complete fresh download)."""


def sha256_file(path: str | os.PathLike[str], chunk: int = CHUNK) -> str:
    """Hex sha256 of a file, streamed so multi-GB checkpoints never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fail(url: str, reason: str, dest: Path) -> DownloadError:
    return DownloadError(
        f"could not download {url} ({reason}); fetch the file another way and pass its path "
        f"instead: clipforge.load(\"/path/to/{dest.name}\").")


def _hash_prefix(path: Path) -> tuple[Any, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
            size += len(block)
    return digest, size


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416:
            raise _Retryable("server refused to resume (HTTP 416)", restart=True) from err
        if err.code in (408, 425, 429) or err.code >= 500:
            raise _Retryable(f"HTTP {err.code} {err.reason}") from err
        raise _Fatal(f"HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise _Retryable(str(reason) or type(err).__name__) from err


def _attempt(url: str, partial: Path, timeout: float, progress: bool) -> Any:
    """Stream the rest of `url` onto `partial`; return the hash of the whole partial file."""
    from tqdm.auto import tqdm

    digest, offset = _hash_prefix(partial) if partial.exists() else (hashlib.sha256(), 0)
    response = _open(url, offset, timeout)
    with response:
        status = getattr(response, "status", 200)
        if offset and status != 206:
            # The server ignored our Range header and is sending the whole file: start over.
            digest, offset = hashlib.sha256(), 0
        elif offset:
            start = response.headers.get("Content-Range", "").partition(" ")[2].partition("-")[0]
            if start != str(offset):
                raise _Retryable(f"server resumed at byte {start or '?'} instead of {offset}", restart=True)
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        mode = "ab" if offset else "wb"
        with open(partial, mode) as fh, tqdm(
                total=None if expected is None else offset + expected, initial=offset, unit="B",
                unit_scale=True, unit_divisor=1024, desc=partial.name.removesuffix(".partial"),
                disable=not progress, leave=False) as bar:
            try:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as err:
                        raise _Retryable(f"connection lost after {offset + received} bytes "
                                         f"({type(err).__name__}: {err})") from err
                    if not block:
                        break
                    fh.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
            finally:
                fh.flush()
                os.fsync(fh.fileno())
        if expected is not None and received < expected:
            raise _Retryable(f"connection closed after {offset + received} of {offset + expected} bytes")
    return digest


def download(url: str, dest_dir: str | os.PathLike[str] | None = None, expected_sha256: str | None = None,
             retries: int = 3, *, filename: str | None = None, backoff: float = 1.0,
             timeout: float = 30.0, progress: bool = True,
             sleep: Callable[[float], None] = time.sleep) -> Path:
    """Download `url` into `dest_dir` and return the verified file's path.

    `url` may also be a registry name (``"ViT-B/32"``), whose URL and sha256 are then used;
    `dest_dir` defaults to the cache (`clipforge.weights.cache_dir`). A file already at the
    destination is reused when its sha256 matches (or when no hash is given) and fetched
    again otherwise. Failures are retried `retries` times, waiting `backoff * 2**k` seconds,
    resuming from the bytes already on disk. Raises `DownloadError` with one sentence naming
    the URL, the reason and how to pass a local file instead.
    """
    if "://" not in url:
        from clipforge.weights.registry import get_pretrained

        entry = get_pretrained(url)
        url, filename = entry.url, filename or entry.filename
        expected_sha256 = expected_sha256 or entry.sha256
    if dest_dir is None:
        from clipforge.weights.registry import cache_dir

        dest_dir = cache_dir()
    dest_dir = Path(dest_dir).expanduser()
    name = filename or os.path.basename(urlparse(url).path) or "download"
    dest = dest_dir / name
    partial = dest_dir / f"{name}.partial"
    expected = expected_sha256.lower() if expected_sha256 else None

    if dest.is_file():
        if expected is None or sha256_file(dest) == expected:
            return dest
        dest.unlink()  # corrupt or replaced by hand: fetch a good copy
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _fail(url, f"cannot create {dest_dir}: {err.strerror or err}", dest) from err

    reason = "no attempt made"
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        resumed = partial.exists() and partial.stat().st_size > 0
        try:
            digest = _attempt(url, partial, timeout, progress)
        except _Fatal as err:
            partial.unlink(missing_ok=True)
            raise _fail(url, str(err), dest) from err
        except _Retryable as err:
            reason = str(err)
            if err.restart:
                partial.unlink(missing_ok=True)
            continue
        except OSError as err:  # local trouble (disk full, permissions): retrying will not help
            raise _fail(url, f"cannot write {partial}: {err.strerror or err}", dest) from err
        got = digest.hexdigest()
        if expected is not None and got != expected:
            partial.unlink(missing_ok=True)
            reason = f"sha256 {got} does not match the expected {expected}"
            if resumed:
                continue  # the bytes kept from an earlier attempt may be the bad ones: retry clean
            raise _fail(url, reason, dest)
        os.replace(partial, dest)
        return dest
    raise _fail(url, f"{reason}, after {retries + 1} attempts", dest)


def download_pretrained(name: str, root: str | os.PathLike[str] | None = None, *,
                        progress: bool = True, **kwargs: object) -> Path:
    """Path to a verified copy of a registry checkpoint (``"ViT-B/32"``), downloading if needed."""
    from clipforge.weights.registry import cache_dir, get_pretrained

    entry = get_pretrained(name)
    return download(entry.url, cache_dir(root), entry.sha256, filename=entry.filename,
                    progress=progress, **kwargs)  # type: ignore[arg-type]
