"""A server out of file descriptors says so once a minute, not thousands of tracebacks a second.

When the process reaches its descriptor limit (``ulimit -n``), asyncio's accept loop
(`selector_events._accept_connection`, CPython 3.11) tries ``accept()`` up to `backlog` times per
readable event, and for every ``EMFILE`` / ``ENFILE`` / ``ENOBUFS`` / ``ENOMEM`` it calls the loop's
exception handler, whose default logs a ~500-byte traceback: with uvicorn's backlog of 2048 that is
~3,800 tracebacks a second (15 MB of log in 10 s measured with ``ulimit -n 64`` and 120 held
connections; the soak audit of stop 53 logged ~790 MB in 5 minutes). Nothing is wrong with the
request that could not be accepted, and the operator needs one fact: the limit was reached.

`AcceptErrorLog` is installed as the loop's exception handler when the server starts
(`runner.build_server`'s `Server.serve`): the first such error is one line naming the errno, the
limit and what to do; the next ones are counted and summed up in one line at most every `interval_s`
seconds while they last. An error more than `interval_s` after the one before it starts a new
episode: the old one's uncounted failures are said first, with the time up to its last failure, then
the first line again, hint included (they were summed into the next episode, hours later, as one run
"in the last 10800 s"). Every other context goes to the handler that was there before (asyncio's
default), unchanged.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ACCEPT_OUT_OF_RESOURCE", "AcceptErrorLog", "install_accept_error_log"]

ACCEPT_OUT_OF_RESOURCE = "socket.accept() out of system resource"  # asyncio's own message for these errors
_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _descriptor_limit() -> str:
    """The soft descriptor limit, for the message ("1024"), or "unknown" where `resource` is missing."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return "unknown"
    return "unlimited" if soft == getattr(resource, "RLIM_INFINITY", -1) else str(soft)


QUIET_S = 3.0
"""asyncio retries accepting each second: this long without a failure, accepting works again."""


class AcceptErrorLog:
    """The loop exception handler described in the module docstring."""

    def __init__(self, logger: logging.Logger, previous: Callable[..., Any] | None = None, *,
                 interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.previous = previous
        self.interval_s = interval_s
        self.clock = clock
        self.unsaid = 0  # accept errors since the last line
        self.said_at: float | None = None  # when the last line was written; None: no episode yet
        self.failed_at = 0.0  # when the last accept error came
        self.reason = ""  # and its errno's words
        self.started_at = 0.0  # when this episode's first error came
        self._watch: asyncio.TimerHandle | None = None  # the check that says when accepting works again

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if context.get("message") != ACCEPT_OUT_OF_RESOURCE or getattr(error, "errno", None) not in _RESOURCE_ERRNOS:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = self.clock()
        if self.said_at is not None and now - self.failed_at > self.interval_s:
            self._end_episode(now)
        reason = os.strerror(error.errno) if error is not None else "out of resources"
        self.unsaid += 1
        self.failed_at, self.reason = now, reason
        if self._watch is None:  # the end of the episode is said when it ends, not at the next one (review 63)
            self._watch = loop.call_later(QUIET_S, self.check_end, loop)
        if self.said_at is not None and now - self.said_at < self.interval_s:
            return
        if self.said_at is None:
            self.started_at = now
            self.logger.error(
                "cannot accept new connections: %s (this process's descriptor limit, `ulimit -n`, is %s); "
                "they wait in the listen queue and accepting is retried each second; raise the limit or "
                "look for what holds the descriptors", reason, _descriptor_limit())
        else:
            self.logger.error("cannot accept new connections: %s; %d failed accepts in the last %d s",
                              reason, self.unsaid, round(now - self.said_at))
        self.unsaid = 0
        self.said_at = now

    def check_end(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run `QUIET_S` after an error (the loop's timer): no failure since then means accepting works again, said
        in one line with the failures not said yet; else look again later."""
        self._watch = None
        if self.said_at is None:
            return
        now = self.clock()
        if now - self.failed_at < QUIET_S:
            self._watch = loop.call_later(QUIET_S, self.check_end, loop)
            return
        self.logger.warning("accepting new connections again (they failed for %d s): %d failed accepts since the last "
                            "line", round(self.failed_at - self.started_at), self.unsaid)
        self.unsaid = 0
        self.said_at = None

    def _end_episode(self, now: float) -> None:
        """The episode whose last failure was `failed_at` is over: its failures since its last line, if any, in
        one line with the time they took and how long ago they stopped; the next error starts a new one."""
        if self.unsaid and self.said_at is not None:
            self.logger.error("cannot accept new connections: %s; %d failed accepts in the %d s to %d s ago, then none "
                              "until now", self.reason, self.unsaid, round(self.failed_at - self.said_at),
                              round(now - self.failed_at))
        self.unsaid = 0
        self.said_at = None


def install_accept_error_log(loop: asyncio.AbstractEventLoop, logger: logging.Logger) -> AcceptErrorLog:
    """Make `loop`'s exception handler an `AcceptErrorLog` in front of the handler it had."""
    handler = AcceptErrorLog(logger, loop.get_exception_handler())
    loop.set_exception_handler(handler)
    return handler
