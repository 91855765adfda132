"""What the mounted gradio UI accepts from a client: files it uploaded, nothing else.

gradio's event API takes `FileData` objects whose `path` names a file on the server; gradio
copies that file into its cache and serves the copy at `/gradio_api/file=`. gradio checks that
the path lies in its upload folder only for apps started with `launch()`: a UI mounted into
FastAPI skips the check, which let any client read any file. Three independent layers close
this (`ui.mount_ui` turns gradio's own check back on, the handlers open only files inside the
upload folder, and this middleware), so a gap in one of them is not a hole:

* every JSON body sent to `/gradio_api/` (queue/join, run, call, ...) is parsed, bounded in
  size, and refused (403) when any object in it carries a `path` that is not a regular file
  inside this server's upload folder - the request never reaches gradio;
* `/gradio_api/file=` serves only files inside the upload folder, never a URL (gradio would
  fetch it: a server-side request on behalf of an anonymous client), and always whole: gradio's answer to a
  `Range` copied every request header into it (`ui_file_route`);
* a queue/join is checked by `ui_events.JoinRules` before gradio stores anything of it: an event the UI
  has, with its number of values, none too long, and the address's pending events and new sessions bounded
  (a join let through holds its place until gradio has recorded it: `_Settle`);
* a `cancel` reaches gradio once per event while the event waits or runs (`ui_events.Cancels`): each one naming an
  unread event queued one more message for its session;
* gradio routes the page never uses (named-endpoint API, proxy, component server, recording, deep links,
  streaming, vibe editing, run history, profiling, monitoring, startup events, login and logout) answer 404, and so does
  `queue/data` for a session gradio does not hold, and a heartbeat for a session id no gradio client makes;
* `/gradio_api/upload` (`ui_upload_route`) takes file parts named `files` and nothing else, checked chunk by
  chunk before gradio reads them (`upload_form`: a bad body is a 400/413 naming the part and the rule, never a 507); it
  reserves room in the upload folder's ledger (`upload_space`) before gradio writes a byte, and is refused (507) when the folder's byte or file budget would be passed (after
  files older than their maximum age are deleted); a full disk is a 507 too, and what the failed
  upload left behind is removed;
* every upload is bound to the browser that sent it (an HttpOnly cookie holding a random id),
  and events or `file=` requests naming another browser's upload are refused (403); a browser naming
  its own upload after the server deleted it (age, room) is told so and to upload it again (410);
* an address's uploads in flight reserve at most half the space, and deleted uploads leave gradio's own
  record of uploaded files (`forget_uploads`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.routing import get_route_path

from clipforge.server.body_parsing import check_json_items
from clipforge.server.errors import APIError
from clipforge.server.middleware import ASGIApp, Message, Receive, Scope, Send, client_host, send_json
from clipforge.server.ui_assets import StaticFiles
from clipforge.server.ui_events import Cancels, JoinRules, forget_unread, json_refusal, value_refusal
from clipforge.server.ui_file_route import whole_send, without_ranges
from clipforge.server.ui_upload_route import UPLOADER_COOKIE, UploadRoute, uploader, without_upload_id
from clipforge.server.upload_paths import inside, is_upload, upload_paths
from clipforge.server.upload_space import EXPIRED, UploadLedger

__all__ = ["MAX_EVENT_FILES", "UPLOADER_COOKIE", "UIGuardMiddleware", "uploader"]

_SESSION = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # a gradio session id: the page's base-36, its client's uuid4
_MAX_UI_JSON_ITEMS = 100_000  # structural JSON characters of one UI event (1,000 FileData fit easily)

_API = "/gradio_api/"
# The browser page talks to gradio through queue/join + queue/data, upload and file= only; the
# named-endpoint routes (run/, call/, api/) serve API clients, and this UI publishes no API.
# `upload_progress` too: gradio tracks an upload's progress under an id the client picks, in a process-wide
# table that only that route's stream empties (every new id it was asked about stayed for good); uploads
# are sent to gradio without their `upload_id`, so nothing is tracked and the page does without progress.
# `custom_component` serves files of third-party components (this page has none) and prints each request's
# path segments to the server's stdout: any client could write lines of its choosing into the server's log.
_UNUSED = (
    "proxy=",
    "component_server",
    "custom_component",
    "process_recording",
    "stream/",
    "vibe",
    "undo-vibe",
    "run-history",
    "runs",
    "profiling",
    "dev/",
    "mcp",
    "monitoring",
    "deep_link",
    "run/",
    "call/",
    "api/",
    "upload_progress",
    "startup-events",
)
# gradio's own login routes, for `launch(auth=...)`, which this UI does not use (the token guards its writes):
# `/login` parsed any anonymous form body with python-multipart, a byte at a time (19 MB of `&`: 4.1 s of CPU).
_UNUSED_TOP = frozenset({"/login", "/login/", "/logout", "/logout/"})
_FORBIDDEN = (
    "files must be uploaded through this page first, in this browser; the server never opens a path "
    "sent by a client"
)


MAX_EVENT_FILES = 1000
"""Files one UI event may name: what the Add tab reads of a selection (`ui_handlers.Handlers.add`)."""


class UIGuardMiddleware:
    """Enforce the rules in the module docstring in front of the gradio app mounted at `/`."""

    def __init__(
        self,
        app: ASGIApp,
        upload_dir: str | os.PathLike[str],
        max_json_bytes: int,
        cache_bytes: int,
        cache_age_s: float,
        rules: JoinRules | None = None,
        cache_files: int = 2000,
        max_body_bytes: int | None = None,
        known_session: Callable[[str], bool] | None = None,
        forget_uploads: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.app = app
        self.rules = rules  # what a queue/join may carry (`ui_events`); None: not checked
        self.known_session = known_session  # whether gradio holds a stream for a session hash
        self.cancels = Cancels()  # which `cancel` bodies reach gradio (`ui_events.Cancels`)
        self.static = StaticFiles.of_gradio()  # which static files gradio may compress (`ui_assets`)
        self.upload_dir = os.path.realpath(upload_dir)
        self.max_json_bytes = int(max_json_bytes)
        self.cache_bytes = int(cache_bytes)
        self.cache_age_s = float(cache_age_s)
        self.max_body_bytes = int(max_body_bytes or cache_bytes)
        self.ledger = UploadLedger(self.upload_dir, cache_bytes, cache_files, cache_age_s)
        self.uploads = UploadRoute(
            app,
            self.upload_dir,
            self.ledger,
            self.max_body_bytes,
            self.cache_bytes,
            self.cache_age_s,
            forget_uploads,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = get_route_path(scope) if scope["type"] == "http" else ""  # without a --root-path prefix
        if path in _UNUSED_TOP:
            await send_json(send, 404, "not_found", "no such endpoint")
            return
        if scope["type"] != "http" or not (path.startswith(_API) or path.startswith("/monitoring")):
            await self.app(self.static.scope(scope, path) if scope["type"] == "http" else scope, receive, send)
            return
        rest = path[len(_API) :] if path.startswith(_API) else "monitoring"
        if rest.startswith(_UNUSED):
            await send_json(send, 404, "not_found", "no such endpoint")
            return
        if rest.startswith(("file=", "file/")):
            owner = uploader(scope)
            if not is_upload(rest[5:], self.upload_dir) or not self.ledger.owns(rest[5:], owner):
                why = self._gone(rest[5:], owner)
                if why is not None:
                    await send_json(send, 410, "gone", self._gone_detail(rest[5:], why))
                else:
                    await send_json(
                        send, 403, "forbidden", "only files uploaded through this page are served here"
                    )
                return
            await self.app(without_ranges(scope), receive, whole_send(send))
            return
        if rest.startswith("heartbeat/") and not _SESSION.fullmatch(rest[len("heartbeat/") :]):
            # gradio puts the session id into a URL when the stream ends: a control character in it made that
            # raise inside its cleanup (two tracebacks, 18 kB of log, for each anonymous request)
            await send_json(send, 404, "not_found", "no such UI session; reload the page")
            return
        if scope.get("method") != "POST":
            if (
                rest.rstrip("/") == "queue/data"
                and self.known_session is not None
                and not self.known_session(_query_value(scope, "session_hash"))
            ):
                # gradio answers 200 and then logs a 15 kB traceback for each such request
                await send_json(send, 404, "not_found", "no such UI session; reload the page")
                return
            if rest.rstrip("/") == "queue/data" and self.rules is not None:
                await self._stream(scope, receive, send, self.rules)
                return
            await self.app(scope, receive, send)
            return
        if rest.rstrip("/") == "upload":
            await self.uploads(without_upload_id(scope), receive, send)
            return
        await self._event(scope, receive, send)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, rules: JoinRules) -> None:
        """gradio's `queue/data` stream, its session counted as reading its answers while it is open."""
        session = _query_value(scope, "session_hash")
        rules.reading(session, True)
        try:
            await self.app(scope, receive, send)
        finally:
            rules.reading(session, False)

    def _files_refusal(self, paths: list[Any], owner: str | None) -> tuple[int, str, str] | None:
        """None when every path is a regular file in the upload folder that `owner` uploaded; else 403, or
        410 when the only ones missing are `owner`'s own uploads that the server has deleted since."""
        gone = None
        for path in paths:
            if is_upload(path, self.upload_dir) and self.ledger.owns(path, owner):
                continue
            why = self._gone(path, owner)
            if why is None:
                return 403, "forbidden", _FORBIDDEN
            gone = gone or (path, why)
        return None if gone is None else (410, "gone", self._gone_detail(*gone))

    def _gone(self, path: Any, owner: str | None) -> str | None:
        """Why `owner`'s upload at `path` is no longer there (`upload_space.EXPIRED`/`EVICTED`, or `RESTARTED`), or
        None."""
        if isinstance(path, str) and _earlier_run(path, self.upload_dir):
            return RESTARTED
        if not isinstance(path, str) or not inside(path, self.upload_dir):
            return None
        if self.ledger.owns(
            path, owner
        ):  # still on the books, the file deleted by gradio's own cache cleaner
            return EXPIRED
        return self.ledger.removed(path, owner)

    def _gone_detail(self, path: str, why: str) -> str:
        name = os.path.basename(path)[:120]
        if why == RESTARTED:  # the page still shows an image chosen before: not an attack, as the 403 said
            return f"{name}: the server restarted since this image was uploaded, and uploads do not outlive it; upload it again"
        reason = (
            f"uploads are kept {self.cache_age_s:g} s"
            if why == EXPIRED
            else "when this page's upload space is full, the oldest uploads of whoever holds the most make room"
        )
        return f"{name}: this upload was deleted from the server ({reason}); upload it again"

    async def _event(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer a (small) JSON body, refuse it when it names a server file, else replay it to gradio."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            size += len(message.get("body", b""))
            if size > self.max_json_bytes:
                await send_json(
                    send,
                    413,
                    "payload_too_large",
                    f"UI requests are limited to {self.max_json_bytes:,} bytes (files go to the upload "
                    f"endpoint)",
                )
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        join = get_route_path(scope).rstrip("/").endswith("/queue/join") and self.rules is not None
        decoded, paths, refusal, values = await run_in_threadpool(
            _read_event, body, self.rules if join else None, _blocks(scope)
        )
        if refusal is not None:
            await send_json(send, *refusal)
            return
        queue = getattr(_blocks(scope), "_queue", None)
        if queue is not None and get_route_path(scope).rstrip("/") == f"{_API}cancel":
            if (refusal := self.cancels.refusal(queue, decoded)) is not None:  # another event's fn_index
                await send_json(send, *refusal)
                return
            if not self.cancels.forward(queue, decoded):
                await _send_ok(send, b'{"success":true}')  # what gradio answers, without the message it would queue
                return
            send = _watch_cancel(self.cancels, decoded, send)
        if join and self.rules is not None:
            if self.rules.drop is None and queue is not None:  # gradio's queue exists once the app has started
                self.rules.drop = lambda session: forget_unread(queue, session)
            refusal = self.rules.admit(client_host(scope), decoded)  # holds its place until settled below
            if refusal is not None:
                await send_json(send, *refusal)
                return
            settled = _Settle(self.rules, decoded.get("session_hash"), send)
            try:
                await self._forward(scope, receive, settled.send, body, paths, values)
            finally:
                settled()
            return
        await self._forward(scope, receive, send, body, paths, values)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, paths: list[Any], values: Any
    ) -> None:
        """The checks of an event's files and values, then the event (`body`) handed to gradio."""
        if len(paths) > MAX_EVENT_FILES:
            await send_json(
                send, 413, "payload_too_large", f"a UI event may name at most {MAX_EVENT_FILES:,} files"
            )
            return
        owner = uploader(scope)
        refusal = await run_in_threadpool(self._files_refusal, paths, owner) if paths else None  # stat calls
        refusal = refusal or values  # after the paths: a server path is a 403 whatever its shape
        if refusal is not None:
            await send_json(send, *refusal)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _Settle:
    """Settles a join `JoinRules.admit` let through once, when its answer starts (gradio records the event before
    it answers) or, when called, as its request ends (refused here or by gradio, or the client gone)."""

    def __init__(self, rules: JoinRules, session: Any, send: Send) -> None:
        self.rules, self.session, self._send, self._done = rules, session, send, False

    def __call__(self) -> None:
        if not self._done:
            self._done = True
            self.rules.settle(self.session)

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self()
        await self._send(message)


RESTARTED = "restarted"
"""Why an upload is gone: it was made in an earlier run of the server (each run has an upload folder of its own)."""


def _earlier_run(path: str, upload_dir: str) -> bool:
    """`path` names a file in another run's upload folder: a sibling of `upload_dir` of the same name pattern
    (`runner`'s `clipforge-ui-uploads-*`), read as text only (nothing is opened or stat'ed)."""
    folder = os.path.basename(upload_dir.rstrip(os.sep))
    prefix = folder[: folder.rfind("-") + 1] if folder.startswith("clipforge-ui-uploads-") else ""
    if not prefix or "\0" in path or not os.path.isabs(path):
        return False
    parent = os.path.dirname(upload_dir.rstrip(os.sep))
    rest = os.path.relpath(os.path.normpath(path), parent)
    first = rest.split(os.sep, 1)[0]
    return first != folder and first.startswith(prefix) and not rest.startswith("..") and os.sep in rest


def _read_event(body: bytes, rules: JoinRules | None, blocks: Any) -> tuple[Any, list[Any], Any, Any]:
    """(decoded, its paths, refusal, refusal of its values) of a UI event body; `rules` for a join. The parse and
    every check that walks the whole body, for a worker thread: on the event loop, a 196 kB join of 49,000 empty
    objects cost 70 ms of Python, and 40 of them from one client held everyone's `/healthz` up to 1 s."""
    try:
        check_json_items(body, _MAX_UI_JSON_ITEMS)
    except APIError as exc:
        return None, [], (exc.status, exc.code, exc.detail), None
    try:
        decoded = json.loads(body) if body.strip() else None
        paths = list(upload_paths(decoded))
    except (ValueError, RecursionError):
        return None, [], (400, "bad_request", "the request body is not valid JSON"), None
    refusal = json_refusal(decoded)  # NaN, 1e400, a lone surrogate: gradio's 422 echo raised, a handler too
    if refusal is None and rules is not None:
        refusal = rules.shape_refusal(decoded)
    values = value_refusal(blocks, decoded) if refusal is None and rules is not None else None
    return decoded, paths, refusal, values


def _watch_cancel(cancels: Cancels, body: Any, send: Send) -> Send:
    """`send`, telling `cancels` when gradio refuses the cancel `body` it was forwarded."""

    async def watched(message: Message) -> None:
        if message["type"] == "http.response.start" and message.get("status") != 200:
            cancels.refused(body)
        await send(message)

    return watched


async def _send_ok(send: Send, body: bytes) -> None:
    """A 200 JSON answer of `body`."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _blocks(scope: Scope) -> Any:
    """The gradio Blocks of the page (`ui.mount_ui` keeps it in the app's state), or None."""
    return getattr(getattr(scope.get("app"), "state", None), "ui_blocks", None)


def _query_value(scope: Scope, name: str) -> str:
    """The value of query parameter `name` that gradio reads: its last, as FastAPI takes one ("" when absent).
    The first let `?session_hash=<live>&session_hash=gone` past the unknown-session check, and counted a
    stream as reading a session it never read (`JoinRules.reading`)."""
    from urllib.parse import parse_qsl

    query = scope.get("query_string", b"").decode("latin-1")
    return next((v for k, v in reversed(parse_qsl(query, keep_blank_values=True)) if k == name), "")
