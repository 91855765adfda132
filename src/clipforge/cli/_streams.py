"""The CLI's standard streams made safe before a command runs, and library log records shown as its lines.

Apart from `cli.main` (one idea: what a process started with a closed stream, or a library record no handler takes,
turns into); the module's name starts with ``_`` so the command registry passes it over.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TextIO

__all__ = ["CLOSED_STDOUT", "StdoutWriteError", "log_records_as_lines", "standard_streams", "stdout_failure",
           "stdout_writes_named"]


@contextlib.contextmanager
def log_records_as_lines() -> Iterator[None]:
    """Library log records that reach no handler (Python's `logging.lastResort`, which printed the bare message:
    ``could not write class-embedding cache ...``) as `cli.main`'s warning lines: ``warning: ...``, escaped, and a
    record's traceback after it as lastResort printed it (a server's 500 is diagnosed from it). A handler someone
    configured (an eval run's log file, a test's capture) gets the records as before."""
    import logging

    from clipforge.cli.common import one_line as printable

    class OneLine(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                print(f"{record.levelname.lower()}: {printable(record.getMessage())}", file=sys.stderr)
                if record.exc_info:  # the cause of a server's 500 (`server.errors.api_error`): kept, line by line
                    for line in logging.Formatter().formatException(record.exc_info).splitlines():
                        print(printable(line), file=sys.stderr)
            except Exception:  # logging's rule: a record that cannot be shown never stops the program
                self.handleError(record)

    previous = logging.lastResort
    logging.lastResort = OneLine(logging.WARNING)
    try:
        yield
    finally:
        logging.lastResort = previous


CLOSED_STDOUT = ("standard output is closed (>&-): clipforge writes its results there, so nothing was done; to "
                 "discard them, send them to /dev/null (>/dev/null)")


def standard_streams(argv: Sequence[str] | None, services: Collection[str]) -> str | None:
    """A closed standard stream made safe, or the error when the command cannot run (audit 65).

    stderr closed (``2>&-``, ``sys.stderr`` None): progress bars (tqdm raised), notices and warnings (printed on
    stdout, in front of --json) go to /dev/null, which also takes descriptor 2, so no file opened later gets it and
    what C code or a child writes to "stderr". stdout closed (``>&-``): every command's results or summary go
    there, so none starts: nothing done, rather than a run whose output is thrown away (`CLOSED_STDOUT`); except a
    service (`services`: `serve`, `milvus-server`, what a daemonizer starts with ``>&- 2>&-``), whose stdout is only its log
    and goes to /dev/null the same way (review 65: uvicorn's log setup raised there before)."""
    if sys.stderr is None:
        sys.stderr = _devnull_on(2)
    if sys.stdout is None:
        tokens = list(sys.argv[1:] if argv is None else argv)
        if next((t for t in tokens if not t.startswith("-")), None) not in services:
            return CLOSED_STDOUT
        sys.stdout = _devnull_on(1)
    return None


def _devnull_on(descriptor: int) -> TextIO:
    """/dev/null as a text stream, on `descriptor` when that is free (closed), so no file opened later takes it."""
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        os.fstat(descriptor)
    except OSError:  # free: /dev/null takes it
        os.dup2(fd, descriptor)
        os.close(fd)
        fd = descriptor
    return open(fd, "w", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115 (the process's)


class StdoutWriteError(OSError):
    """A write to standard output failed: a full disk under ``> report.json`` (``> /dev/full``), an I/O error, a quota.
    Its own class so the error line can say that stdout is what failed, and what the command had already saved: it
    was Python's bare ``error: [Errno 28] No space left on device`` after `index add` had committed every photo, and a
    retrying script took it for nothing indexed (audit 66). A closed pipe stays `BrokenPipeError` (the quiet 141)."""


class _NamedStream:
    """A standard output whose failed writes raise `StdoutWriteError`; every other attribute is the stream's own
    (encoding, reconfigure, fileno, isatty), and `buffer` (``--paths`` writes raw bytes) is wrapped the same way."""

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    @property
    def buffer(self) -> _NamedStream:
        return _NamedStream(self._stream.buffer)  # type: ignore[attr-defined]

    def write(self, data: object) -> object:
        return _named(self._stream.write, data)  # type: ignore[attr-defined]

    def writelines(self, lines: object) -> object:
        return _named(self._stream.writelines, lines)  # type: ignore[attr-defined]

    def flush(self) -> object:
        return _named(self._stream.flush)  # type: ignore[attr-defined]


def _named(call: Callable[..., object], *args: object) -> object:
    try:
        return call(*args)
    except (BrokenPipeError, StdoutWriteError):
        raise
    except OSError as exc:
        raise StdoutWriteError(exc.errno, exc.strerror or str(exc)) from exc


@contextlib.contextmanager
def stdout_writes_named() -> Iterator[None]:
    """While a command runs, a failed write to stdout (``print``, ``sys.stdout.buffer.write``, the final flush) is a
    `StdoutWriteError`, told apart from the command's own OSErrors (a photo that cannot be read)."""
    stream = sys.stdout
    sys.stdout = _NamedStream(stream)  # type: ignore[assignment]
    try:
        yield
    finally:
        if isinstance(sys.stdout, _NamedStream):
            sys.stdout = stream


def stdout_failure(error: StdoutWriteError, saved: str | None = None) -> str:
    """The error line's text: that writing to standard output failed and why, then what the command had already
    saved (`saved`: a command sets ``args.saved`` once its work is committed, as `index add` does)."""
    return f"could not write to standard output: {error.strerror or error}" + (f"; {saved}" if saved else "")
