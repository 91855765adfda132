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
  128 waiting events of one address made another's classify wait 5 s). A join is parsed in a worker thread and
  gradio records its event only after the guard has forwarded it, so a join let through holds its place
  (`admit`) until gradio has recorded it or its request has ended (`settle`): counting gradio's tables alone,
  50 joins of one address sent together all saw the count from before any of them and all got in;
* an address may start `max_new_sessions` sessions a minute (gradio keeps the message queues of 2,000
  sessions and drops the least recently used: one client cycling 2,100 sessions made another user's
  running classify end in "session not found"); its 429's `Retry-After` is the seconds until the address's
  oldest session of the minute leaves it (the unread caps': the seconds until enough of the address's unread
  answers are forgotten, below; `errors.RETRY_SOON_S` while a page is reading them);
* the tables this keeps, and gradio's per-session event table, are swept of sessions with nothing left, and
  answers left unread for `UNREAD_AGE_S` with no stream reading them are forgotten (`forget_unread`): gradio keeps
  them for good, so 16 joins never read had locked their address (every user, on loopback) out of the UI.

Every UI event body (join, cancel, reset) is also JSON that writes back as it came (`json_refusal`): a number
that is not finite (`NaN`, `Infinity`, `1e400`) made gradio's 422 answer raise while echoing it (a 500 and a
17 kB traceback per anonymous request on `cancel`, `reset` and a join's `trigger_id`), and a lone surrogate
(`"\\ud800"`) in a search made the handler raise deep in the tokenizer (a 5 kB traceback per event).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import TypeAdapter

from clipforge.server.errors import RETRY_SOON_S, retry_after_seconds

__all__ = ["MAX_UI_STRING_CHARS", "UNREAD_AGE_S", "Cancels", "JoinRules", "Refusal", "forget_unread", "json_refusal",
           "value_refusal"]

Refusal = tuple[int, str, str] | tuple[int, str, str, int]
"""(status, code, detail) of a refused UI event, a 429's with its `Retry-After` seconds after them: the arguments
of `middleware.send_json`."""

MAX_UI_STRING_CHARS = 4096
"""Longest string a UI event may carry (paths: Linux's PATH_MAX; the page's fields take at most 2,000)."""
UNREAD_AGE_S = 60.0
"""Answers of a session left unread this long after its last join or read, with no stream open, are forgotten
(a page reads each answer as it comes, over the `queue/data` stream it opens with its join)."""
_SWEEP_ABOVE = 1000
"""Tables of sessions are swept of finished ones once they hold more entries than this."""
_GRADIO_INT = TypeAdapter(int)
"""How gradio's `CancelBody` reads a cancel's `fn_index` (pydantic's lax int: "6" and 6.0 are 6)."""


class JoinRules:
    """`inputs`: fn_index -> number of inputs; `unread(session)`: events gradio keeps for it (pending or unread);
    `sessions()`: gradio's table of them (swept here: it never forgets a session by itself). Every count adds the
    joins `admit` let through that gradio has not recorded yet (`_held`)."""

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
        self._by_host: dict[str, dict[str, float]] = {}  # address -> its sessions with unread answers: last seen
        self._reading: dict[str, int] = {}  # session -> its `queue/data` streams open now
        self._joining: dict[str, int] = {}  # session -> joins admitted, not yet settled (in gradio's table or ended)
        self.drop: Callable[[str], bool] | None = None  # forget a session's unread answers (`forget_unread`)
        self.max_new_sessions = int(max_new_sessions)
        self.clock = clock
        self._recent: dict[str, OrderedDict[str, float]] = {}  # address -> sessions it joined in the last minute

    def refusal(self, host: str, join: Any) -> Refusal | None:
        """(status, code, detail) when this `queue/join` body must not reach gradio, else None (then it is counted
        among its address's sessions; its event is counted once `unread` shows it: `admit` holds its place until)."""
        refusal = self.shape_refusal(join)
        return refusal if refusal is not None else self.count_refusal(host, join)

    def shape_refusal(self, join: Any) -> tuple[int, str, str] | None:
        """The checks of `refusal` that read the join alone (its event, its values): safe in a worker thread."""
        fn_index = join.get("fn_index") if isinstance(join, dict) else None
        if type(fn_index) is not int or fn_index not in self.inputs:
            return 400, "bad_request", "unknown UI event (fn_index)"
        data = join.get("data")
        if not isinstance(data, list) or len(data) != self.inputs[fn_index]:
            got = len(data) if isinstance(data, list) else type(data).__name__
            return 400, "bad_request", f"this UI event takes {self.inputs[fn_index]} values, got {got}"
        if _longest_string(data) > MAX_UI_STRING_CHARS:
            return 413, "payload_too_large", f"a UI value may be at most {MAX_UI_STRING_CHARS:,} characters"
        return None

    def count_refusal(self, host: str, join: Any) -> Refusal | None:
        """The checks of `refusal` against what `host` and the join's session hold (on the event loop); a join
        they let through is counted."""
        refusal = self._unread_refusal(host, join.get("session_hash"))
        return refusal if refusal is not None else self._new_session_refusal(host, join.get("session_hash"))

    def admit(self, host: str, join: Any) -> Refusal | None:
        """`count_refusal`, and a join it lets through holds a place among its session's events until `settle`:
        check and hold in one step on the event loop, so joins arriving together each see the ones before."""
        refusal = self.count_refusal(host, join)
        session = join.get("session_hash")
        if refusal is None and self.unread is not None and isinstance(session, str):
            self._joining[session] = self._joining.get(session, 0) + 1
        return refusal

    def settle(self, session: Any) -> None:
        """A join `admit` let through is now in gradio's table (its answer has started) or its request has ended:
        gradio's count alone tells from here on. Call once per admitted join."""
        if not isinstance(session, str):
            return  # `admit` held nothing for it
        count = self._joining.get(session, 0) - 1
        if count > 0:
            self._joining[session] = count
        else:
            self._joining.pop(session, None)

    def _held(self, session: str) -> int:
        """Events of `session` gradio keeps, and its joins admitted that gradio has not recorded yet."""
        return (self.unread(session) if self.unread is not None else 0) + self._joining.get(session, 0)

    def _new_session_refusal(self, host: str, session: Any) -> Refusal | None:
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
        if len(seen) >= self.max_new_sessions:  # a place frees when the oldest session leaves the minute
            wait = retry_after_seconds(next(iter(seen.values())) + 60 - now)
            return 429, "too_many_requests", (f"your address opened {self.max_new_sessions} pages in the last minute; "
                                              f"wait a minute"), wait
        seen[session] = now
        return None

    def _unread_refusal(self, host: str, session: Any) -> Refusal | None:
        if self.unread is None:
            return None
        if not isinstance(session, str) or not 0 < len(session) <= 128:
            return 400, "bad_request", "a UI event needs its session_hash (at most 128 characters)"
        self._sweep()
        sessions = self._by_host.setdefault(host, {})
        for read in [s for s in sessions if s != session and self._held(s) == 0]:  # read: their place is free
            del sessions[read]
        self._expire(sessions)
        pending = sum(self._held(s) for s in sessions) + (0 if session in sessions else self._held(session))
        if self._held(session) >= self.max_unread_events:
            detail = f"this page has {self.max_unread_events} answers it has not read yet; reload the page"
            wait = self._free_in(sessions, [session], self._held(session) - self.max_unread_events + 1)
        elif session not in sessions and len(sessions) >= self.max_unread_sessions:
            detail = (f"{self.max_unread_sessions} pages from your address have answers they have not read yet; "
                      f"close some or reload them")
            wait = self._free_in(sessions, list(sessions), 1, count=False)
        elif pending >= self.max_pending:
            detail = (f"your address has {self.max_pending} UI events waiting or unread already; wait for them "
                      f"or reload the pages")
            wait = self._free_in(sessions, [*sessions, session], pending - self.max_pending + 1)
        else:
            sessions[session] = self.clock()
            return None
        if not sessions:
            del self._by_host[host]
        return 429, "too_many_requests", detail, retry_after_seconds(wait)

    def _free_in(self, sessions: dict[str, float], blocking: list[str], need: int, count: bool = True) -> float:
        """Seconds until `need` events (`count`) or sessions of `blocking` are freed, a refused join's `Retry-After`.

        Unread answers nobody reads are forgotten `UNREAD_AGE_S` after their session was last seen (`_expire`), so
        that wait is known: the address's 429 said "1 s" while it stayed locked 50 s, and a client honouring it
        asked ~50 times in vain. A session whose stream is open, or whose join is on its way, frees as the page
        reads its answers, at no time known ahead (`RETRY_SOON_S`); so does one past its age that `_expire` could
        not drop (an event of it still waits or runs), and all of them when nothing forgets answers (`drop`)."""
        if self.drop is None:
            return RETRY_SOON_S
        now = self.clock()
        frees: list[tuple[float, int]] = []
        for session in blocking:
            if count and not self._held(session):
                continue  # the joining page's own new session: it holds nothing yet
            seen = sessions.get(session)
            if seen is None or session in self._reading or session in self._joining or now - seen > UNREAD_AGE_S:
                return RETRY_SOON_S
            frees.append((seen + UNREAD_AGE_S - now, self._held(session) if count else 1))
        for wait, freed in sorted(frees):
            need -= freed
            if need <= 0:
                return wait
        return RETRY_SOON_S

    def reading(self, session: str, opened: bool) -> None:
        """A `queue/data` stream of `session` opened (True) or ended: answers being read are not abandoned, and
        the session counts as seen when its stream ends."""
        count = self._reading.get(session, 0) + (1 if opened else -1)
        if count > 0:
            self._reading[session] = count
        else:
            self._reading.pop(session, None)
        for sessions in self._by_host.values():
            if session in sessions:
                sessions[session] = self.clock()

    def _expire(self, sessions: dict[str, float]) -> None:
        """Forget the answers of `sessions` nobody has read for `UNREAD_AGE_S` (no stream open, nothing of theirs
        waiting or running): gradio keeps them for good, and 16 joins never read locked their address out of the
        UI until the server restarted (on loopback or behind a proxy: every user)."""
        if self.drop is None:
            return
        now = self.clock()
        for session, seen in list(sessions.items()):
            if session not in self._reading and session not in self._joining and now - seen > UNREAD_AGE_S \
                    and self.drop(session):
                del sessions[session]

    def _sweep(self) -> None:
        """Forget sessions with nothing pending, here and in gradio's table, once either has grown large."""
        if self.unread is None:
            return
        if len(self._by_host) > _SWEEP_ABOVE:
            for host in list(self._by_host):
                for session in [s for s in self._by_host[host] if self._held(s) == 0]:
                    del self._by_host[host][session]
                if not self._by_host[host]:
                    del self._by_host[host]
        table = self.sessions() if self.sessions is not None else None
        if table is not None and len(table) > _SWEEP_ABOVE:
            for session in [s for s, ids in table.items() if not ids]:
                table.pop(session, None)


_SCALAR_COMPONENTS = frozenset({"Textbox", "Slider", "Number", "Checkbox"})
"""Components whose value is text, a number or a flag: a list or object there (49,000 empty objects in a text
box's place, 196 kB) was parsed again by gradio on the event loop, kept in the session's state and refused by
the handler only once the event ran."""


def value_refusal(blocks: Any, join: Any) -> tuple[int, str, str] | None:
    """400 when a value of this `queue/join` (one `JoinRules` let through) is not of the shape its component's
    data model takes: gradio checks it with that model only once the event runs, and prints the traceback of
    every failure to the server's stderr (an image or file list given as a string, a number, a list); a text
    box's, slider's, number's or checkbox's value that is no scalar (`_SCALAR_COMPONENTS`)."""
    fn = getattr(blocks, "fns", {}).get(join.get("fn_index")) if isinstance(join, dict) else None
    if fn is None or not isinstance(join.get("data"), list):
        return None
    props = set(getattr(fn, "component_prop_inputs", ()) or ())
    for i, (component, value) in enumerate(zip(fn.inputs, join["data"], strict=False)):
        model = getattr(component, "data_model", None)
        if value is None or i in props or getattr(component, "stateful", False):
            continue
        what = type(component).__name__
        if what in _SCALAR_COMPONENTS and not isinstance(value, (str, int, float)):
            return 400, "bad_request", (f"value {i + 1} of this UI event ({what.lower()}) is not what this page "
                                        f"sends there: text or a number")
        if model is None:
            continue
        try:
            model.model_validate(value, context={"validate_meta": True})
        except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
            return 400, "bad_request", (f"value {i + 1} of this UI event ({what.lower()}) is not what this page sends "
                                        f"there: a file it uploaded, or null")
    return None


class Cancels:
    """Which `/gradio_api/cancel` bodies reach gradio: one per event, while it waits or runs, of the session named.

    gradio's cancel route queues a "process completed" message for the session whenever the event it names is among
    the session's unread ones, however often it is asked, and only the session's stream empties that queue: 300
    anonymous cancels of one answered event left 303 messages queued, and nothing bounded their number. A cancel
    of an event gradio holds no longer (answered, or never was), of another session's, or one already sent changes
    nothing in gradio but that queue, so the guard answers it itself as gradio does (`{"success": true}`)."""

    def __init__(self) -> None:
        self.sent: set[str] = set()  # event ids whose cancel reached gradio, kept while gradio holds the event

    def forward(self, queue: Any, body: Any) -> bool:
        """Whether this cancel `body` goes to gradio; one that does is counted as sent until `refused` says gradio
        did not take it. A body without text `session_hash` and `event_id` goes too: gradio refuses it (422)."""
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("session_hash", "event_id")):
            return True
        live = queue.event_ids_to_events
        self.sent = {sent for sent in self.sent if sent in live}  # at most the events gradio holds
        event = live.get(body["event_id"])
        if event is None or getattr(event, "session_hash", None) != body["session_hash"] or body["event_id"] in self.sent:
            return False
        self.sent.add(body["event_id"])
        return True

    def refusal(self, queue: Any, body: Any) -> tuple[int, str, str] | None:
        """400 when the cancel `body` names an event gradio holds for that session with another event's `fn_index`.

        gradio cancels the tasks of `session_hash + fn_index` but completes `event_id`: a cancel of a waiting page
        event naming the search's fn_index killed the session's search without an answer (its stream sent
        heartbeats for good) and answered the page event twice. The fn_index compared is the one gradio recorded
        for the event (`Event.fn._id`), read as gradio reads the body; a body gradio refuses itself goes on (its
        422), and one naming no live event of the session is `forward`'s to answer."""
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("session_hash", "event_id")):
            return None
        event = queue.event_ids_to_events.get(body["event_id"])
        if event is None or getattr(event, "session_hash", None) != body["session_hash"]:
            return None
        recorded = getattr(getattr(event, "fn", None), "_id", None)
        try:
            asked = _GRADIO_INT.validate_python(body.get("fn_index"))
        except ValueError:  # pydantic's ValidationError: gradio answers its 422
            return None
        if recorded is None or asked == recorded:
            return None
        return 400, "bad_request", (f"this cancel names event {body['event_id']} with fn_index {asked}; that "
                                    f"event's fn_index is {recorded}")

    def refused(self, body: Any) -> None:
        """gradio did not take the cancel `body` that `forward` sent (a 422 for its `fn_index`): not sent after all."""
        if isinstance(body, dict) and isinstance(body.get("event_id"), str):
            self.sent.discard(body["event_id"])


def forget_unread(queue: Any, session: str) -> bool:
    """Drop `session` from gradio's tables of unread answers (`queue` is gradio's `Queue`), unless an event of its
    still waits or runs (gradio would look its message queue up when the event ends); True when dropped. A stream
    opened for it afterwards is a 404 "reload the page" (`ui_guard`)."""
    ids = queue.pending_event_ids_session.get(session, ())
    if any(event_id in queue.event_ids_to_events for event_id in ids):
        return False
    queue.pending_event_ids_session.pop(session, None)
    queue.pending_messages_per_session.pop(session, None)
    return True


def json_refusal(decoded: Any) -> tuple[int, str, str] | None:
    """400 when decoded JSON does not write back as strict JSON in UTF-8: a number that is not finite, or a
    string (key or value) holding a lone surrogate. Neither is anything a browser's page sends (its JSON turns
    NaN into null); one C-speed pass over at most `max_ui_request_bytes`."""
    try:
        json.dumps(decoded, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except ValueError as exc:  # UnicodeEncodeError is a ValueError too
        if isinstance(exc, UnicodeEncodeError):
            return 400, "bad_request", "a UI value holds text that is not valid Unicode (a lone surrogate)"
        return 400, "bad_request", "a UI value holds a number that is not finite (NaN, Infinity or past 1e308)"
    except RecursionError:
        return 400, "bad_request", "request data is nested too deeply"
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
