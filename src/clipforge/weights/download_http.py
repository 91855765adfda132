"""One HTTP attempt of a download: stream the rest of a URL onto ``<file>.partial`` while hashing it.

- Only http(s) URLs, and redirects only between http(s) URLs without a downgrade to http.
- A host that cannot be resolved, or refuses or cannot be routed to, is not retried (offline
  machines get one line at once); drops, short reads and server errors are retried with backoff.
- A download has an overall deadline and a minimum rate, so a server that trickles bytes cannot
  hold a command forever.

Owns the request (a Range header to resume, only http(s) redirects, the hub's announced sha256), the
classification of failures (`_Retryable`, with or without a restart; `_Fatal`), and the clock of a download
(`_Clock`: overall deadline, minimum rate). `clipforge.weights.download` retries and verifies around it.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from clipforge.weights.download_trust import is_full_sha256

CHUNK = 1 << 20
USER_AGENT = "clipforge-downloader"
DEADLINE_ENV = "CLIPFORGE_DOWNLOAD_DEADLINE_S"
DEFAULT_DEADLINE_S = 4 * 3600.0  # all attempts together; a 10 GB file at ~1 MB/s fits
MIN_RATE = 4096.0  # bytes per second, averaged over RATE_WINDOW_S
RATE_WINDOW_S = 60.0
_SCHEMES = ("http", "https")
_OFFLINE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}


class _Retryable(Exception):
    """A failure worth retrying (network hiccup, short read, server error).

    `restart` says the bytes already on disk cannot be resumed from and must be dropped.
    """

    def __init__(self, reason: str, restart: bool = False) -> None:
        super().__init__(reason)
        self.restart = restart


class _Fatal(Exception):
    """A failure retrying cannot fix (404, no route to the host, a deadline, a refused redirect)."""


def _hash_prefix(path: Path) -> tuple[Any, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
            size += len(block)
    return digest, size


class _HubHashes(urllib.request.HTTPRedirectHandler):
    """Follows redirects between http(s) URLs, remembering the sha256 a Hugging Face hub announces.

    The hub answers ``/resolve/`` requests for large files with a redirect to its CDN whose
    headers carry ``X-Linked-Etag: "<sha256>"``; urllib drops redirect headers, so they are
    caught here. A redirect to another scheme (``ftp://``, ``file://``) or from https down to
    http is refused: urllib itself would follow ``ftp://``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sha256: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        old, new = urlparse(req.full_url).scheme.lower(), urlparse(newurl).scheme.lower()
        if new not in _SCHEMES or (old == "https" and new != "https"):
            raise _Fatal(f"refused a redirect from {old}:// to {newurl!r}")
        self.sha256 = self.sha256 or _announced_sha256(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _announced_sha256(headers: Any) -> str | None:
    value = (headers.get("X-Linked-Etag") or "").strip().removeprefix("W/").strip('"').lower()
    return value if is_full_sha256(value) else None


def _offline(reason: Any) -> str | None:
    """A short reason when `reason` means the host cannot be reached at all, else None."""
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name ({reason.strerror or reason}): no network or no DNS"
    if isinstance(reason, OSError) and reason.errno in _OFFLINE_ERRNOS:
        return f"{reason.strerror or reason}"
    return None


def _open(url: str, offset: int, timeout: float, hashes: _HubHashes) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        opener = urllib.request.build_opener(hashes)
        return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416:
            raise _Retryable("server refused to resume (HTTP 416)", restart=True) from err
        if err.code in (408, 425, 429) or err.code >= 500:
            raise _Retryable(f"HTTP {err.code} {err.reason}") from err
        raise _Fatal(f"HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        offline = _offline(reason)
        if offline:
            raise _Fatal(offline) from err
        raise _Retryable(str(reason) or type(err).__name__) from err


class _Clock:
    """The overall deadline of one download (all attempts) and the minimum rate of each attempt."""

    def __init__(self, deadline: float, min_rate: float, window: float) -> None:
        self.deadline, self.min_rate, self.window = deadline, min_rate, window
        self.start = time.monotonic()

    def check(self, window_start: float, window_bytes: int) -> bool:
        """Raise when the deadline passed; True when a new rate window should start."""
        now = time.monotonic()
        if now - self.start > self.deadline:
            raise _Fatal(
                f"the download took longer than its {self.deadline:g} s deadline "
                f"(set {DEADLINE_ENV} to allow more)"
            )
        if now - window_start >= self.window:
            rate = window_bytes / (now - window_start)
            if rate < self.min_rate:
                raise _Retryable(f"the server sent {rate:.0f} bytes/s, below {self.min_rate:.0f} bytes/s")
            return True
        return False


def _attempt(
    url: str, partial: Path, timeout: float, progress: bool, clock: _Clock
) -> tuple[Any, str | None]:
    """Stream the rest of `url` onto `partial`; return the hash of the whole partial file and
    the sha256 the server announced for the file (None when it announced none)."""
    from tqdm.auto import tqdm

    digest, offset = _hash_prefix(partial) if partial.exists() else (hashlib.sha256(), 0)
    hashes = _HubHashes()
    response = _open(url, offset, min(timeout, max(clock.deadline, 0.001)), hashes)
    announced = hashes.sha256 or _announced_sha256(response.headers)
    with response:
        status = getattr(response, "status", 200)
        total: int | None = None
        if offset and status != 206:
            # The server ignored our Range header and is sending the whole file: start over.
            digest, offset = hashlib.sha256(), 0
        elif offset:
            content_range = response.headers.get("Content-Range", "").partition(" ")[2]
            start = content_range.partition("-")[0]
            if start != str(offset):
                raise _Retryable(f"server resumed at byte {start or '?'} instead of {offset}", restart=True)
            size = content_range.rpartition("/")[2]
            total = int(size) if size.isdigit() else None
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if total is None and expected is not None:
            total = offset + expected
        received = 0
        mode = "ab" if offset else "wb"
        window_start, window_bytes = time.monotonic(), 0
        with (
            open(partial, mode) as fh,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=partial.name.removesuffix(".partial"),
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            try:
                while True:
                    if clock.check(window_start, window_bytes):
                        window_start, window_bytes = time.monotonic(), 0
                    try:
                        # what has arrived: a trickle cannot hide in a full read
                        block = response.read1(CHUNK)
                    except (OSError, http.client.HTTPException) as err:
                        raise _Retryable(
                            f"connection lost after {offset + received} bytes ({type(err).__name__}: {err})"
                        ) from err
                    if not block:
                        break
                    fh.write(block)
                    digest.update(block)
                    received += len(block)
                    window_bytes += len(block)
                    bar.update(len(block))
            finally:
                fh.flush()
                os.fsync(fh.fileno())
        if expected is not None and received < expected:
            raise _Retryable(f"connection closed after {offset + received} of {offset + expected} bytes")
        if total is not None and offset + received != total:
            raise _Retryable(f"received {offset + received} bytes of a {total}-byte file", restart=True)
    return digest, announced
