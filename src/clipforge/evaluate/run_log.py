"""An evaluation run's log file: every clipforge log record of the run, and only the run's.

The human-readable story beside a run's JSON report (`clipforge.evaluate.report`). A library user may run
evaluations in threads side by side, so each run's handler takes only the records logged in its own context,
and the package logger's level is held at INFO while any run is open, then put back.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["open_run_log"]

# The runs open in this context (this thread, this asyncio task): a run's handler takes a record only when its run is
# among them, so runs in threads side by side each get their own lines, and a nested run's lines reach the outer log.
_OPEN_RUNS: contextvars.ContextVar[tuple[object, ...]] = contextvars.ContextVar("clipforge_open_runs", default=())
_LEVEL_LOCK = threading.Lock()
_level_users = 0  # run logs open in the whole process
_level_saved: tuple[int, int] | None = None  # (the package logger's level before the first, the level set for them)


class _RunFilter(logging.Filter):
    """Passes the records logged in the context of one run (`open_run_log`), whatever module logs them."""

    def __init__(self, run: object) -> None:
        super().__init__()
        self.run = run

    def filter(self, record: logging.LogRecord) -> bool:
        return self.run in _OPEN_RUNS.get()


class _OutsideRuns(logging.Handler):
    """Records logged outside every open run, shown as if no run were open.

    While a run's handler sits on the package logger, logging's last resort (stderr, or the CLI's one-line form)
    is not used, since a handler exists; the run filters refuse a record of another thread, so a clipforge warning
    logged there went nowhere (review 65). This handler, on the package logger while any run is open, hands such a
    record to the last resort when no handler of the application would show it."""

    def emit(self, record: logging.LogRecord) -> None:
        if _OPEN_RUNS.get():  # a run's own record: its log has it, as before
            return
        last = logging.lastResort
        if last is not None and record.levelno >= last.level and not _shown_elsewhere(record.name):
            last.handle(record)


def _shown_elsewhere(name: str) -> bool:
    """Whether a handler other than the run logs' (the application's, a test's capture) takes records of `name`."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        if any(not isinstance(h, _OutsideRuns) and not any(isinstance(f, _RunFilter) for f in h.filters)
               for h in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


_OUTSIDE_RUNS = _OutsideRuns()


def _hold_info_level(package: logging.Logger) -> None:
    """Let INFO records through the package logger while any run log is open. Counted across the process: the
    level is set by the first run to open and put back by the last to close (per run, the run that closed first
    set NOTSET under a run still going, whose INFO lines were lost, and that one then "restored" INFO for good)."""
    global _level_users, _level_saved
    with _LEVEL_LOCK:
        if _level_users == 0:
            old = package.level
            new = logging.INFO if old == logging.NOTSET or old > logging.INFO else old
            package.setLevel(new)
            _level_saved = (old, new)
            package.addHandler(_OUTSIDE_RUNS)
        _level_users += 1


def _release_info_level(package: logging.Logger) -> None:
    """The last run log to close puts the level back, unless the application set another one meanwhile (its own)."""
    global _level_users, _level_saved
    with _LEVEL_LOCK:
        _level_users -= 1
        if _level_users == 0:
            package.removeHandler(_OUTSIDE_RUNS)
        if _level_users == 0 and _level_saved is not None:
            old, new = _level_saved
            if package.level == new:
                package.setLevel(old)
            _level_saved = None


@contextmanager
def open_run_log(path: Path, name: str = "clipforge.evaluate") -> Iterator[logging.Logger]:
    """Send every clipforge log record of the run (INFO and up) to `path`; yield the runner's logger.

    The handler sits on the package logger so messages of the classifier, cache and data
    layers land in the same file; it is removed afterwards so runs do not leak into each other.
    Its filter takes only the records logged in this run's context (`_OPEN_RUNS`): two runs in threads of one
    process each keep their own lines (they used to write each other's), and a line another thread of the
    application logs through clipforge meanwhile is not the run's. The package logger is at INFO while any run
    log is open and back at its own level when the last closes (`_hold_info_level`).
    A run that stops before its report (an error, Ctrl-C) keeps its log, which then ends with why,
    and says on stderr where it is: a `.log` with no `.json` beside it was otherwise a mystery.
    Runners check their arguments before opening the log, so a refused run leaves none.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    package = logging.getLogger("clipforge")
    run = object()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)  # INFO and up, whatever lower level the application gave the package logger
    handler.addFilter(_RunFilter(run))
    token = _OPEN_RUNS.set(_OPEN_RUNS.get() + (run,))
    _hold_info_level(package)
    package.addHandler(handler)
    log = logging.getLogger(name)
    try:
        yield log
    except BaseException as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else \
            (" ".join(str(exc).split()) or type(exc).__name__)
        log.error("run stopped before its report was written: %s", why)
        print(f"log of the unfinished run: {path}", file=sys.stderr)
        raise
    finally:
        package.removeHandler(handler)
        _release_info_level(package)
        _OPEN_RUNS.reset(token)
        handler.close()
