"""Verified, resumable, atomic downloads, trusted only through a full pinned sha256.

A checkpoint is hundreds of megabytes fetched over networks that drop connections, so the
download streams into ``<file>.partial`` while hashing, resumes that file with an HTTP Range
request after a failure, and renames it into place only once it is verified. The final path
therefore never holds a partial or corrupt file, and a reader never needs to re-check for
truncation.

The trust policy (which hash pins a file, the ``CLIPFORGE_ALLOW_UNPINNED=1`` opt-in, the ``<file>.sha256``
record) is `clipforge.weights.download_trust`; one HTTP attempt (resume, redirects, offline hosts not
retried, the deadline and minimum rate) is `clipforge.weights.download_http`. This module owns the download
itself: when a cached file may be used, one downloader at a time per file (`_one_downloader`), the retries
around the attempts, the final rename, and a registry checkpoint's sources tried in turn (`download_pretrained`).
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from clipforge.errors import Notice
from clipforge.weights.download_http import (
    _SCHEMES,
    CHUNK,
    DEADLINE_ENV,
    DEFAULT_DEADLINE_S,
    MIN_RATE,
    RATE_WINDOW_S,
    _attempt,
    _Clock,
    _Fatal,
    _Retryable,
)
from clipforge.weights.download_trust import (
    ALLOW_UNPINNED_ENV,
    _matches,
    _record,
    _write_record,
    allow_unpinned_from_env,
    is_full_sha256,
    unpinned_reason,
)
from clipforge.weights.errors import DownloadError

try:
    import fcntl
except ImportError:  # not POSIX: downloads of one file are not serialised (`_one_downloader`)
    fcntl = None  # type: ignore[assignment]


# `sha256_file` and `_cached_refusal` live together here: `_cached_refusal` finds `sha256_file` in this module's
# namespace, where a caller (or a test of the network-free cache) may replace it.
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
        f'instead: clipforge.load("/path/to/{dest.name}").'
    )


def _cached_refusal(dest: Path, expected: str | None, verify: Callable[[Path], None] | None) -> str | None:
    """None when a file already at `dest` may be used: its pinned hash matches; or, unpinned, the record
    written when it was accepted matches, or `verify` accepts it now (a file a user saved there by hand),
    after which the record is written. Else why not, as a clause for "<dest> was refused (...)": another
    sha256 than the pinned one (or than the published prefix) with the file's size, or `verify`'s reason.
    A mismatching copy was never put there by `download`, which renames only verified files into place."""
    digest = sha256_file(dest)
    if is_full_sha256(expected) or (expected is not None and not _matches(digest, expected)):
        if digest == expected:
            return None
        what = "the pinned" if is_full_sha256(expected) else "the published prefix"
        shown = f"{str(expected)[:16]}..." if len(str(expected)) > 16 else expected
        return (f"its sha256 is {digest[:16]}..., not {what} {shown}, in {dest.stat().st_size:,} bytes: a copy "
                "saved there another way, perhaps cut short, or changed on disk")
    record = _record(dest)
    if record.is_file() and record.read_text(encoding="ascii", errors="replace").strip() == digest:
        return None
    if verify is None:
        return "no pinned sha256, and no record of an earlier acceptance, vouches for it"
    try:
        verify(dest)
    except (ValueError, OSError, RuntimeError) as exc:
        text = str(exc)
        return text if len(text) <= 160 else text[:157] + "..."
    _write_record(dest, digest)
    return None


def _deadline(deadline: float | None) -> float:
    if deadline is not None:
        return deadline
    try:
        return float(os.environ.get(DEADLINE_ENV) or DEFAULT_DEADLINE_S)
    except ValueError:
        return DEFAULT_DEADLINE_S


def download(
    url: str,
    dest_dir: str | os.PathLike[str] | None = None,
    expected_sha256: str | None = None,
    retries: int = 3,
    *,
    filename: str | None = None,
    backoff: float = 1.0,
    timeout: float = 30.0,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    allow_unpinned: bool | None = None,
    verify: Callable[[Path], None] | None = None,
    deadline: float | None = None,
    min_rate: float = MIN_RATE,
    rate_window: float = RATE_WINDOW_S,
) -> Path:
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
    expected = expected_sha256.lower() if expected_sha256 else None
    if expected is not None and (len(expected) < 8 or any(c not in "0123456789abcdef" for c in expected)):
        raise ValueError(
            f"expected_sha256 {expected_sha256!r} is not a hex sha256 (or a prefix of >= 8 digits)"
        )
    pinned = is_full_sha256(expected)
    allowed = pinned or (allow_unpinned_from_env() if allow_unpinned is None else allow_unpinned)

    seen: tuple[tuple[int, ...] | None, str] | None = None  # the copy already at `dest` that was refused, and why
    if dest.is_file():
        stamp = _stamp(dest)
        why = _cached_refusal(dest, expected, verify if allowed else None)
        if why is None:
            return dest
        if not allowed:
            raise _fail(url, f"the file already at {dest} is not verified: {unpinned_reason(url, expected)}", dest)
        seen = (stamp, why)
    if urlparse(url).scheme.lower() not in _SCHEMES:
        raise _fail(url, "only http:// and https:// URLs are downloaded", dest)
    if not allowed:
        raise _fail(url, unpinned_reason(url, expected), dest)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _fail(url, f"cannot create {dest_dir}: {err.strerror or err}", dest) from err
    with _one_downloader(dest):
        usable, removed = _settle(dest, expected, verify, seen)
        if usable:  # another downloader put a verified copy there while this one waited
            return dest
        try:
            path = _fetch(url, dest, expected, verify, retries, backoff, timeout, progress, sleep,
                          _Clock(_deadline(deadline), min_rate, rate_window))
        except DownloadError as err:
            if not removed:
                raise
            raise DownloadError(f"{removed}; {err}") from err.__cause__
    if removed:
        _notice(f"{removed}; downloaded {url} anew", stacklevel=3)
    return path


def _notice(message: str, stacklevel: int) -> None:
    """Tell the user `message` as a `Notice` (the CLI prints it as a ``notice:`` line, ``--quiet`` hides it, a
    program may filter it). Where the warning filters turn it into an exception (``python -W error``,
    ``simplefilter("error")``), it is printed as that one line on stderr instead: a remark about a download that
    worked must not fail it, nor leave a waiting downloader's lock behind. `stacklevel` counts from the caller."""
    try:
        warnings.warn(message, Notice, stacklevel=stacklevel)
    except Notice:
        print(f"notice: {message}", file=sys.stderr)


def _stamp(path: Path) -> tuple[int, ...] | None:
    """Which file is at `path` (device, inode, size, mtime: whether a verdict on it still holds); None: no file."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None


def _settle(dest: Path, expected: str | None, verify: Callable[[Path], None] | None,
            seen: tuple[tuple[int, ...] | None, str] | None) -> tuple[bool, str]:
    """Under `dest`'s lock: (True, "") when a copy there may now be used (another downloader's), else (False, why a
    refused copy was removed, or ""). `seen`'s verdict on the same file stands without hashing it again."""
    if (stamp := _stamp(dest)) is None:  # nothing there (any more)
        return False, ""
    why = seen[1] if seen is not None and seen[0] == stamp else _cached_refusal(dest, expected, verify)
    if why is None:
        return True, ""
    dest.unlink(missing_ok=True)  # corrupt or replaced by hand: fetch a good copy
    _record(dest).unlink(missing_ok=True)
    return False, f"{dest} was refused ({why}) and removed"


@contextmanager
def _one_downloader(dest: Path) -> Iterator[None]:
    """Hold ``<dest>.lock`` (flock) while `dest` is checked and fetched: one downloader of a file at a time, across
    processes and threads (two writers of one ``.partial`` interleaved their bytes, and one renamed the mix into
    place as verified: it had hashed only what it received). The holder removes the lock file before letting go;
    a waiter then finding another file (or none) there locks anew. Without fcntl (Windows): unguarded."""
    lock, fd, told = dest.with_name(f"{dest.name}.lock"), None, False
    while fcntl is not None and fd is None:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError:  # a read-only folder: the download itself will say why it cannot write
            break
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not told:
                    _notice(f"another download of {dest.name} into {dest.parent} is under way; waiting for it "
                            "to finish", stacklevel=5)
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            held, current = os.fstat(fd), os.stat(lock)
            if (held.st_dev, held.st_ino) != (current.st_dev, current.st_ino):
                raise FileNotFoundError(lock)  # the previous holder removed it: take the lock anew
        except OSError as err:  # FileNotFoundError: the holder removed it, lock anew; else no flock here: unguarded
            os.close(fd)
            fd = None
            if not isinstance(err, FileNotFoundError):
                break
        except BaseException:  # an interrupt while waiting
            os.close(fd)
            raise
    try:
        yield
    finally:
        if fd is not None:
            lock.unlink(missing_ok=True)
            os.close(fd)


def _fetch(url: str, dest: Path, expected: str | None, verify: Callable[[Path], None] | None, retries: int,
           backoff: float, timeout: float, progress: bool, sleep: Callable[[float], None], clock: _Clock) -> Path:
    """`download`'s network part, under `dest`'s lock: the attempts onto ``<dest>.partial``, each hash check, the
    final rename."""
    partial = dest.with_name(f"{dest.name}.partial")
    pinned = is_full_sha256(expected)
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
                size = partial.stat().st_size
                partial.unlink(missing_ok=True)
                reason = f"sha256 {got} does not match {source} {check}: {_MISMATCH.format(size=size)}"
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


_MISMATCH = (
    "the {size:,} bytes received were removed; a transfer cut short unnoticed or altered by a proxy or mirror "
    "gives other bytes, and so does a file changed upstream: run again to download it anew, and if it fails "
    "alike, the file changed upstream"
)
"""What a downloaded file of the wrong sha256 means, after `_attempt` saw every byte the server announced."""


def _short_reason(err: DownloadError) -> str:
    """The reason inside `_fail`'s "could not download URL (...)", without a removed copy's prefix (the caller
    names refused copies itself)."""
    text = str(err)
    tail = text.partition("; could not download ")[2] or text
    return tail.partition(" (")[2].rpartition("); fetch")[0] or text


def download_pretrained(name: str, root: str | os.PathLike[str] | None = None, *, progress: bool = True,
                        tag: str = "openai", **kwargs: Any) -> Path:
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

    refused: dict[Path, str] = {}  # files the checks refused, and why (`download` replaces them if it can)
    for source in sources:  # a copy accepted earlier (pinned, or recorded under the opt-in) needs no network
        path = base / source.filename
        trusted = is_full_sha256(source.sha256) or allowed or _record(path).is_file()
        if path.is_file() and trusted:
            why = _cached_refusal(path, source.sha256, verify if allowed else None)
            if why is None:
                return path
            if is_full_sha256(source.sha256) or allowed:
                refused[path] = why
    reasons, skipped = [], []
    for source in sources:
        if not is_full_sha256(source.sha256) and not allowed:
            skipped.append(source)
            continue
        try:
            got = download(source.url, base, source.sha256, filename=source.filename, progress=progress,
                           allow_unpinned=allowed, verify=verify, **kwargs)
        except DownloadError as err:
            reasons.append(f"{urlparse(source.url).netloc}: {_short_reason(err)}")
            continue
        for path, why in refused.items():  # removed by a failed download of an earlier source: said here
            if path != got and not path.exists():
                _notice(f"{path} was refused ({why}) and removed; the {entry.listed_as or entry.name}:{entry.tag} "
                        f"weights came from {urlparse(source.url).netloc} instead", stacklevel=3)
        return got
    if skipped:
        host = urlparse(skipped[0].url).netloc
        reasons.append(f"{'the ' + host + ' copy' if reasons else host} has no full sha256 pinned in clipforge, so it "
                       f"was not tried (set {ALLOW_UNPINNED_ENV}=1 to accept it after its tensor shapes are checked)")
    first = next((s for s in sources if is_full_sha256(s.sha256)), sources[0])
    saved = base / first.filename  # where this line's own advice put it
    if saved.is_file() and not allowed and not is_full_sha256(first.sha256):
        raise DownloadError(
            f"{saved} is there, but clipforge pins no sha256 for the {entry.listed_as or entry.name}:{entry.tag} "
            f"weights, so a copy is used once accepted: set {ALLOW_UNPINNED_ENV}=1 for one run (its tensor shapes "
            f"are checked, and it is recorded as accepted), or pass the file's path instead."
        )
    then = "" if is_full_sha256(first.sha256) else f" and set {ALLOW_UNPINNED_ENV}=1"
    # Files saved there by hand and refused were removed by `download`: said, or the user saves the same ones again.
    gone = "".join(f"{path} was refused ({why}) and removed; " for path, why in refused.items() if not path.exists())
    raise DownloadError(
        f"{gone}could not download the {entry.listed_as or entry.name}:{entry.tag} weights ({'; '.join(reasons)}); "
        f"fetch {first.url} another way and save it as {base / first.filename}{then}, or pass the file's path "
        f"instead."
    )
