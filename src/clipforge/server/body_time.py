"""How long a request body may take to arrive: the one rule `middleware.BodyLimitMiddleware` (the body itself) and
`request_time.TimeoutMiddleware` (the whole request) both apply, and the words of its 408.

A body has `request_timeout_s`; one keeping `min_body_rate` earns one more second per that many bytes (a 4 MB photo
over a slow link was cut at 60 s), up to a ceiling (`SLOW_BODY_EXTRA`), because bytes in flight hold a share of
`max_receiving_bytes`.
"""

from __future__ import annotations

__all__ = ["SLOW_BODY_EXTRA", "body_deadline", "too_slow"]

SLOW_BODY_EXTRA = 2.0
"""A body's time past `request_timeout_s` is at most this many times it (3 minutes in all by default): bytes in
flight hold a share of `max_receiving_bytes`, and an allowance without a ceiling let 4 addresses send 64 MiB each in
3 s, then a byte every 8 s, and hold every upload of the server off for 35 minutes (for 60 s before)."""


def body_deadline(begun: float, seconds: float | None, received: int, min_rate: float | None) -> float | None:
    """When a body that began arriving at `begun` must be whole: `seconds` later, plus one second for every
    `min_rate` bytes received so far, up to `SLOW_BODY_EXTRA` x `seconds` more (a slow link's upload keeps its
    time while it keeps that rate)."""
    if seconds is None:
        return None
    return begun + seconds + (min(received / min_rate, SLOW_BODY_EXTRA * seconds) if min_rate else 0.0)


def too_slow(received: int, elapsed: float, seconds: float | None, min_rate: float | None) -> str:
    """The 408's words for a body that did not arrive within its `body_deadline`."""
    rule = f"{seconds:g} s" + (f", and one more second for every {min_rate / 1024:g} KiB received (at most "
                               f"{(1 + SLOW_BODY_EXTRA) * (seconds or 0):g} s in all)" if min_rate else "")
    return (f"the request body did not arrive in time: {received:,} bytes in {elapsed:.0f} s, where this server "
            f"allows {rule}; on a slower link send smaller or fewer files")
