"""What one UI event may carry, and how many one address may leave waiting, checked before gradio sees the join.

gradio stores every input of a `queue/join` in the session's state before any handler runs (values the
handler then refuses included), keeps each event and its answer until the joining session reads its
stream, and runs at most 40 events at a time server-wide, first come first served, before they reach
the model's fair queue (`fair.FairGate`). So the join is where an anonymous client's cost is bounded:

* the event exists and gets exactly as many values as it has inputs (a wrong count made gradio write
  every value it received into a traceback: a 1 MB value, 1 MB of log), each of the shape its component
  takes (`value_refusal`: an image given as a string made gradio print a 1.4 kB traceback per event);
* no string in them is longer than `MAX_UI_STRING_CHARS` (the UI's longest field, a label list, takes
  2,000 characters; a 1,000,000-character query was kept in the session's state after the handler had
  refused it: 1.1 MB per session, for up to 10,000 sessions);
* a session may leave `max_unread_events` answers unread, an address `max_unread_sessions` sessions with
  unread answers and `max_pending` events in all (64 sessions x 32 events of 3 MB each was 6 GB, and
  128 waiting events of one address made another's classify wait 5 s);
* an address may start `max_new_sessions` sessions a minute (gradio keeps the message queues of 2,000
  sessions and drops the least recently used: one client cycling 2,100 sessions made another user's
  running classify end in "session not found");
* the tables this keeps, and gradio's per-session event table, are swept of sessions with nothing left.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MAX_UI_STRING_CHARS", "JoinRules", "value_refusal"]

MAX_UI_STRING_CHARS = 4096
"""Longest string a UI event may carry (paths: Linux's PATH_MAX; the page's fields take at most 2,000)."""
_SWEEP_ABOVE = 1000
"""Tables of sessions are swept of finished ones once they hold more entries than this."""


class JoinRules:
    """`inputs`: fn_index -> number of inputs; `unread(session)`: events gradio keeps for it (pending or unread);
    `sessions()`: gradio's table of them (swept here: it never forgets a session by itself)."""

    def __init__(self, inputs: Mapping[int, int], unread: Callable[[str], int] | None = None,
                 sessions: Callable[[], dict[str, Any]] | None = None, max_unread_events: int = 32,
                 max_unread_sessions: int = 64, max_pending: int = 64, max_new_sessions: int = 120,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inputs = dict(inputs)
        self.unread = unread
        self.sessions = sessions
        self.max_unread_events = int(max_unread_events)
        self.max_unread_sessions = int(max_unread_sessions)
        self.max_pending = int(max_pending)
        self._by_host: dict[str, dict[str, None]] = {}  # address -> its sessions with unread answers
        self.max_new_sessions = int(max_new_sessions)
        self.clock = clock
        self._recent: dict[str, OrderedDict[str, float]] = {}  # address -> sessions it joined in the last minute

    def refusal(self, host: str, join: Any) -> tuple[int, str, str] | None:
        """(status, code, detail) when this `queue/join` body must not reach gradio, else None (then it is counted)."""
        fn_index = join.get("fn_index") if isinstance(join, dict) else None
        if type(fn_index) is not int or fn_index not in self.inputs:
            return 400, "bad_request", "unknown UI event (fn_index)"
        data = join.get("data")
        if not isinstance(data, list) or len(data) != self.inputs[fn_index]:
            got = len(data) if isinstance(data, list) else type(data).__name__
            return 400, "bad_request", f"this UI event takes {self.inputs[fn_index]} values, got {got}"
        if _longest_string(data) > MAX_UI_STRING_CHARS:
            return 413, "payload_too_large", f"a UI value may be at most {MAX_UI_STRING_CHARS:,} characters"
        refusal = self._unread_refusal(host, join.get("session_hash"))
        return refusal if refusal is not None else self._new_session_refusal(host, join.get("session_hash"))

    def _new_session_refusal(self, host: str, session: Any) -> tuple[int, str, str] | None:
        """Count `session` among `host`'s sessions of the last minute; 429 for one more than `max_new_sessions`."""
        if not isinstance(session, str):
            return None
        now = self.clock()
        if len(self._recent) > _SWEEP_ABOVE:
            for other in [h for h, seen in self._recent.items() if not seen or now - next(reversed(seen.values())) > 60]:
                del self._recent[other]
        seen = self._recent.setdefault(host, OrderedDict())
        while seen and now - next(iter(seen.values())) > 60:
            seen.popitem(last=False)
        if session in seen:
            seen.move_to_end(session)
            seen[session] = now
            return None
        if len(seen) >= self.max_new_sessions:
            return 429, "too_many_requests", (f"your address opened {self.max_new_sessions} pages in the last minute; "
                                              f"wait a minute")
        seen[session] = now
        return None

    def _unread_refusal(self, host: str, session: Any) -> tuple[int, str, str] | None:
        if self.unread is None:
            return None
        if not isinstance(session, str) or not 0 < len(session) <= 128:
            return 400, "bad_request", "a UI event needs its session_hash (at most 128 characters)"
        self._sweep()
        sessions = self._by_host.setdefault(host, {})
        for read in [s for s in sessions if s != session and self.unread(s) == 0]:  # read: their place is free
            del sessions[read]
        if self.unread(session) >= self.max_unread_events:
            detail = f"this page has {self.max_unread_events} answers it has not read yet; reload the page"
        elif session not in sessions and len(sessions) >= self.max_unread_sessions:
            detail = (f"{self.max_unread_sessions} pages from your address have answers they have not read yet; "
                      f"close some or reload them")
        elif sum(self.unread(s) for s in sessions) + (0 if session in sessions else self.unread(session)) \
                >= self.max_pending:
            detail = (f"your address has {self.max_pending} UI events waiting or unread already; wait for them "
                      f"or reload the pages")
        else:
            sessions[session] = None
            return None
        if not sessions:
            del self._by_host[host]
        return 429, "too_many_requests", detail

    def _sweep(self) -> None:
        """Forget sessions with nothing pending, here and in gradio's table, once either has grown large."""
        if self.unread is None:
            return
        if len(self._by_host) > _SWEEP_ABOVE:
            for host in list(self._by_host):
                for session in [s for s in self._by_host[host] if self.unread(s) == 0]:
                    del self._by_host[host][session]
                if not self._by_host[host]:
                    del self._by_host[host]
        table = self.sessions() if self.sessions is not None else None
        if table is not None and len(table) > _SWEEP_ABOVE:
            for session in [s for s, ids in table.items() if not ids]:
                table.pop(session, None)


def value_refusal(blocks: Any, join: Any) -> tuple[int, str, str] | None:
    """400 when a value of this `queue/join` (one `JoinRules` let through) is not of the shape its component's
    data model takes: gradio checks it with that model only once the event runs, and prints the traceback of
    every failure to the server's stderr (an image or file list given as a string, a number, a list)."""
    fn = getattr(blocks, "fns", {}).get(join.get("fn_index")) if isinstance(join, dict) else None
    if fn is None or not isinstance(join.get("data"), list):
        return None
    props = set(getattr(fn, "component_prop_inputs", ()) or ())
    for i, (component, value) in enumerate(zip(fn.inputs, join["data"], strict=False)):
        model = getattr(component, "data_model", None)
        if value is None or model is None or i in props or getattr(component, "stateful", False):
            continue
        try:
            model.model_validate(value, context={"validate_meta": True})
        except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
            what = type(component).__name__.lower()
            return 400, "bad_request", (f"value {i + 1} of this UI event ({what}) is not what this page sends "
                                        f"there: a file it uploaded, or null")
    return None


def _longest_string(value: Any, depth: int = 0) -> int:
    """Length of the longest string anywhere in decoded JSON (`upload_paths.upload_paths` bounds the depth first)."""
    if isinstance(value, str):
        return len(value)
    if depth > 32:
        return 0
    if isinstance(value, dict):
        return max((max(len(str(k)), _longest_string(v, depth + 1)) for k, v in value.items()), default=0)
    if isinstance(value, list):
        return max((_longest_string(v, depth + 1) for v in value), default=0)
    return 0
