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


class _HubHashes(urllib.request.HTTPRedirectHandler):
    """Follows redirects, remembering the sha256 a Hugging Face hub announces on the way.

    The hub answers ``/resolve/`` requests for large files with a redirect to its CDN whose
    headers carry ``X-Linked-Etag: "<sha256>"``; urllib drops redirect headers, so they are
    caught here. That is what `huggingface_hub` checks too, without it being installed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sha256: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        self.sha256 = self.sha256 or _announced_sha256(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _announced_sha256(headers: Any) -> str | None:
    value = (headers.get("X-Linked-Etag") or "").strip().removeprefix("W/").strip('"').lower()
    return value if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else None


def _open(url: str, offset: int, timeout: float, hashes: _HubHashes | None = None) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        opener = urllib.request.build_opener(hashes or _HubHashes())
        return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416:
            raise _Retryable("server refused to resume (HTTP 416)", restart=True) from err
        if err.code in (408, 425, 429) or err.code >= 500:
            raise _Retryable(f"HTTP {err.code} {err.reason}") from err
        raise _Fatal(f"HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise _Retryable(str(reason) or type(err).__name__) from err


def _attempt(url: str, partial: Path, timeout: float, progress: bool) -> tuple[Any, str | None]:
    """Stream the rest of `url` onto `partial`; return the hash of the whole partial file and
    the sha256 the server announced for the file (None when it announced none)."""
    from tqdm.auto import tqdm

    digest, offset = _hash_prefix(partial) if partial.exists() else (hashlib.sha256(), 0)
    hashes = _HubHashes()
    response = _open(url, offset, timeout, hashes)
    announced = hashes.sha256 or _announced_sha256(response.headers)
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
    return digest, announced


def _matches(got: str, expected: str) -> bool:
    """Full digests compare equal; a published prefix (open_clip's release files carry 8 hex
    digits) must start the digest."""
    return got == expected if len(expected) == 64 else got.startswith(expected)


def download(url: str, dest_dir: str | os.PathLike[str] | None = None, expected_sha256: str | None = None,
             retries: int = 3, *, filename: str | None = None, backoff: float = 1.0,
             timeout: float = 30.0, progress: bool = True,
             sleep: Callable[[float], None] = time.sleep) -> Path:
    """Download `url` into `dest_dir` and return the verified file's path.

    `url` may also be a registry name (``"ViT-B/32"``), whose URL and sha256 are then used;
    `dest_dir` defaults to the cache (`clipforge.weights.cache_dir`). `expected_sha256` may be
    a prefix of at least 8 hex digits (what open_clip's release file names carry); without
    one, the sha256 a Hugging Face hub announces for the file is checked. A file already at
    the destination is reused when its sha256 matches (or when no hash is given) and fetched
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
    if expected is not None and (len(expected) < 8 or any(c not in "0123456789abcdef" for c in expected)):
        raise ValueError(f"expected_sha256 {expected_sha256!r} is not a hex sha256 (or a prefix of >= 8 digits)")

    if dest.is_file():
        if expected is None or _matches(sha256_file(dest), expected):
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
            digest, announced = _attempt(url, partial, timeout, progress)
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
        check = expected or announced
        if check is not None and not _matches(got, check):
            partial.unlink(missing_ok=True)
            source = "the expected" if expected else "the server's announced"
            reason = f"sha256 {got} does not match {source} {check}"
            if resumed:
                continue  # the bytes kept from an earlier attempt may be the bad ones: retry clean
            raise _fail(url, reason, dest)
        os.replace(partial, dest)
        return dest
    raise _fail(url, f"{reason}, after {retries + 1} attempts", dest)


def download_pretrained(name: str, root: str | os.PathLike[str] | None = None, *,
                        progress: bool = True, tag: str = "openai", **kwargs: Any) -> Path:
    """Path to a verified copy of a registry checkpoint (``"ViT-B/32"``, or an architecture
    and `tag` such as ``("ViT-B-32", "laion2b_s34b_b79k")``), downloading if needed.

    Each of the entry's sources (release URL, then the Hugging Face hub's files) is tried in
    turn; a verified copy of any of them already in the cache is used without network. When
    all fail, one sentence says which file to fetch and where to put it.
    """
    from clipforge.weights.registry import cache_dir, get_pretrained

    entry = get_pretrained(name, tag)
    base = cache_dir(root)
    sources = entry.sources()
    for source in sources:
        if (base / source.filename).is_file() and (
                source.sha256 is None or _matches(sha256_file(base / source.filename), source.sha256)):
            return base / source.filename
    reasons = []
    for source in sources:
        try:
            return download(source.url, base, source.sha256, filename=source.filename, progress=progress,
                            **kwargs)
        except DownloadError as err:
            reasons.append(str(err).partition(" (")[2].partition("); ")[0] or str(err))
    first = sources[0]
    raise DownloadError(
        f"could not download the {entry.listed_as or entry.name}:{entry.tag} weights ({'; '.join(reasons)}); "
        f"fetch {first.url} another way and save it as {base / first.filename}, or pass the file's path instead.")
