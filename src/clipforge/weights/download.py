"""Verified, resumable, atomic downloads, trusted only through a full pinned sha256.

A checkpoint is hundreds of megabytes fetched over networks that drop connections, so the
download streams into ``<file>.partial`` while hashing, resumes that file with an HTTP Range
request after a failure, and renames it into place only once it is verified. The final path
therefore never holds a partial or corrupt file, and a reader never needs to re-check for
truncation.

What this module decides (the trust policy):

- A file is trusted when its sha256 equals a full 64-digit hash pinned in the registry (OpenAI's
  URLs carry theirs). An 8-digit prefix (open_clip's release file names) or a hash the server
  announces (a Hugging Face hub's ``X-Linked-Etag``) is not a pin: `HF_ENDPOINT` may point at any
  mirror, and a prefix is cheap to collide. Such files are refused before any byte is fetched,
  unless the user opts in with ``CLIPFORGE_ALLOW_UNPINNED=1`` (or `allow_unpinned=True`); then the
  prefix and announced hash are still checked, `verify` (the registry passes a check of every
  tensor's shape against the named architecture) must accept the file, and a ``<file>.sha256``
  record beside it lets later runs re-check the cached copy cheaply.
- Only http(s) URLs, and redirects only between http(s) URLs without a downgrade to http.
- A host that cannot be resolved, or refuses or cannot be routed to, is not retried (offline
  machines get one line at once); drops, short reads and server errors are retried with backoff.
- A download has an overall deadline and a minimum rate, so a server that trickles bytes cannot
  hold a command forever.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from clipforge.weights.errors import DownloadError

CHUNK = 1 << 20
USER_AGENT = "clipforge-downloader"
ALLOW_UNPINNED_ENV = "CLIPFORGE_ALLOW_UNPINNED"
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


def sha256_file(path: str | os.PathLike[str], chunk: int = CHUNK) -> str:
    """Hex sha256 of a file, streamed so multi-GB checkpoints never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def allow_unpinned_from_env() -> bool:
    """Whether the user opted in to files without a full pinned sha256 (``CLIPFORGE_ALLOW_UNPINNED=1``)."""
    return os.environ.get(ALLOW_UNPINNED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def is_full_sha256(value: str | None) -> bool:
    return value is not None and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


def unpinned_reason(url: str, expected: str | None) -> str:
    """Why a file without a full pinned hash is refused, naming the opt-in."""
    what = f"only the {len(expected)}-digit sha256 prefix {expected}" if expected else "no sha256"
    return (f"clipforge has {what} pinned for {url}, so a mirror or proxy could swap the file; set "
            f"{ALLOW_UNPINNED_ENV}=1 to accept it after its tensor shapes are checked")


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
            raise _Fatal(f"the download took longer than its {self.deadline:g} s deadline "
                         f"(set {DEADLINE_ENV} to allow more)")
        if now - window_start >= self.window:
            rate = window_bytes / (now - window_start)
            if rate < self.min_rate:
                raise _Retryable(f"the server sent {rate:.0f} bytes/s, below {self.min_rate:.0f} bytes/s")
            return True
        return False


def _attempt(url: str, partial: Path, timeout: float, progress: bool, clock: _Clock) -> tuple[Any, str | None]:
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
        with open(partial, mode) as fh, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=partial.name.removesuffix(".partial"), disable=not progress, leave=False) as bar:
            try:
                while True:
                    if clock.check(window_start, window_bytes):
                        window_start, window_bytes = time.monotonic(), 0
                    try:
                        block = response.read1(CHUNK)  # what has arrived: a trickle cannot hide in a full read
                    except (OSError, http.client.HTTPException) as err:
                        raise _Retryable(f"connection lost after {offset + received} bytes "
                                         f"({type(err).__name__}: {err})") from err
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


def _matches(got: str, expected: str) -> bool:
    """Full digests compare equal; a published prefix (open_clip's release files carry 8 hex
    digits) must start the digest."""
    return got == expected if len(expected) == 64 else got.startswith(expected)


def _record(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _cached_ok(dest: Path, expected: str | None, verify: Callable[[Path], None] | None) -> bool:
    """Whether a file already at `dest` may be used: its pinned hash matches; or, unpinned, the
    record written when it was accepted matches, or `verify` accepts it now (a file a user saved
    there by hand), after which the record is written."""
    digest = sha256_file(dest)
    if is_full_sha256(expected):
        return digest == expected
    if expected is not None and not _matches(digest, expected):
        return False
    record = _record(dest)
    if record.is_file() and record.read_text(encoding="ascii", errors="replace").strip() == digest:
        return True
    if verify is None:
        return False
    try:
        verify(dest)
    except (ValueError, OSError, RuntimeError):
        return False
    _write_record(dest, digest)
    return True


def _write_record(dest: Path, digest: str) -> None:
    from clipforge.atomic import write_text_atomic

    write_text_atomic(_record(dest), digest + "\n")


def _deadline(deadline: float | None) -> float:
    if deadline is not None:
        return deadline
    try:
        return float(os.environ.get(DEADLINE_ENV) or DEFAULT_DEADLINE_S)
    except ValueError:
        return DEFAULT_DEADLINE_S


def download(url: str, dest_dir: str | os.PathLike[str] | None = None, expected_sha256: str | None = None,
             retries: int = 3, *, filename: str | None = None, backoff: float = 1.0,
             timeout: float = 30.0, progress: bool = True,
             sleep: Callable[[float], None] = time.sleep, allow_unpinned: bool | None = None,
             verify: Callable[[Path], None] | None = None, deadline: float | None = None,
             min_rate: float = MIN_RATE, rate_window: float = RATE_WINDOW_S) -> Path:
    """Download `url` into `dest_dir` and return the verified file's path.

    `url` may also be a registry name (``"ViT-B/32"``), whose URL and sha256 are then used;
    `dest_dir` defaults to the cache (`clipforge.weights.cache_dir`). Without a full 64-digit
    `expected_sha256` the download is refused unless `allow_unpinned` (default: the
    ``CLIPFORGE_ALLOW_UNPINNED`` variable); see the module docstring. `verify(path)` may refuse
    the complete file (raising ValueError/OSError) before it gets its final name. Failures worth
    retrying are retried `retries` times, waiting `backoff * 2**k` seconds and resuming from the
    bytes on disk, within `deadline` seconds overall. Raises `DownloadError` with one sentence
    naming the URL, the reason and how to pass a local file instead.
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
    pinned = is_full_sha256(expected)
    allowed = pinned or (allow_unpinned_from_env() if allow_unpinned is None else allow_unpinned)

    if dest.is_file():
        if _cached_ok(dest, expected, verify if allowed else None):
            return dest
        if not allowed:
            raise _fail(url, f"the file already at {dest} is not verified: {unpinned_reason(url, expected)}", dest)
        dest.unlink()  # corrupt or replaced by hand: fetch a good copy
        _record(dest).unlink(missing_ok=True)
    if urlparse(url).scheme.lower() not in _SCHEMES:
        raise _fail(url, "only http:// and https:// URLs are downloaded", dest)
    if not allowed:
        raise _fail(url, unpinned_reason(url, expected), dest)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _fail(url, f"cannot create {dest_dir}: {err.strerror or err}", dest) from err

    clock = _Clock(_deadline(deadline), min_rate, rate_window)
    reason = "no attempt made"
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        resumed = partial.exists() and partial.stat().st_size > 0
        try:
            digest, announced = _attempt(url, partial, timeout, progress, clock)
        except _Fatal as err:
            partial.unlink(missing_ok=True)
            raise _fail(url, str(err), dest) from err
        except _Retryable as err:
            reason = str(err)
            if err.restart:
                partial.unlink(missing_ok=True)
            continue
        except OSError as err:  # local trouble (disk full, permissions): retrying will not help
            partial.unlink(missing_ok=True)
            raise _fail(url, f"cannot write {partial}: {err.strerror or err}", dest) from err
        got = digest.hexdigest()
        for check, source in ((expected, "the expected"), (announced, "the server's announced")):
            if check is not None and not _matches(got, check):
                partial.unlink(missing_ok=True)
                reason = f"sha256 {got} does not match {source} {check}"
                break
        else:
            check = None
        if check is not None:
            if resumed:
                continue  # the bytes kept from an earlier attempt may be the bad ones: retry clean
            raise _fail(url, reason, dest)
        if verify is not None and not pinned:
            try:
                verify(partial)
            except (ValueError, OSError, RuntimeError) as err:
                partial.unlink(missing_ok=True)
                raise _fail(url, f"refused the downloaded file: {err}", dest) from err
        os.replace(partial, dest)
        if not pinned:
            _write_record(dest, got)
        return dest
    raise _fail(url, f"{reason}, after {retries + 1} attempts", dest)


def _short_reason(err: DownloadError) -> str:
    return str(err).partition(" (")[2].rpartition("); fetch")[0] or str(err)


def download_pretrained(name: str, root: str | os.PathLike[str] | None = None, *,
                        progress: bool = True, tag: str = "openai", **kwargs: Any) -> Path:
    """Path to a verified copy of a registry checkpoint (``"ViT-B/32"``, or an architecture
    and `tag` such as ``("ViT-B-32", "laion2b_s34b_b79k")``), downloading if needed.

    Each of the entry's sources (release URL, then the Hugging Face hub's files) is tried in
    turn; a verified copy of any of them already in the cache is used without network. A source
    without a full pinned sha256 is skipped unless the user opted in (see the module docstring),
    and every file from such a source must hold tensors of the entry's architecture. When all
    fail, one sentence says which file to fetch and where to put it.
    """
    from clipforge.weights.registry import cache_dir, get_pretrained

    entry = get_pretrained(name, tag)
    base = cache_dir(root)
    sources = entry.sources()
    allowed = kwargs.pop("allow_unpinned", None)
    allowed = allow_unpinned_from_env() if allowed is None else allowed

    def verify(path: Path) -> None:
        from clipforge.weights.loading import check_architecture

        check_architecture(path, entry.name)

    for source in sources:  # a copy accepted earlier (pinned, or recorded under the opt-in) needs no network
        path = base / source.filename
        trusted = is_full_sha256(source.sha256) or allowed or _record(path).is_file()
        if path.is_file() and trusted and _cached_ok(path, source.sha256, verify if allowed else None):
            return path
    reasons, skipped = [], []
    for source in sources:
        if not is_full_sha256(source.sha256) and not allowed:
            skipped.append(source)
            continue
        try:
            return download(source.url, base, source.sha256, filename=source.filename, progress=progress,
                            allow_unpinned=allowed, verify=verify, **kwargs)
        except DownloadError as err:
            reasons.append(f"{urlparse(source.url).netloc}: {_short_reason(err)}")
    if skipped:
        host = urlparse(skipped[0].url).netloc
        reasons.append(f"{'the ' + host + ' copy' if reasons else host} has no full sha256 pinned in clipforge, "
                       f"so it was not tried (set {ALLOW_UNPINNED_ENV}=1 to accept it after its tensor shapes "
                       f"are checked)")
    first = next((s for s in sources if is_full_sha256(s.sha256)), sources[0])
    then = "" if is_full_sha256(first.sha256) else f" and set {ALLOW_UNPINNED_ENV}=1"
    raise DownloadError(
        f"could not download the {entry.listed_as or entry.name}:{entry.tag} weights ({'; '.join(reasons)}); "
        f"fetch {first.url} another way and save it as {base / first.filename}{then}, or pass the file's path "
        f"instead.")
