"""`/gradio_api/upload` behind `ui_guard.UIGuardMiddleware`: room reserved, the body checked, the files recorded.

An upload reserves room in the upload folder's ledger (`upload_space`) before gradio writes a byte and is
refused (507, with `Retry-After` when uploads too young to evict are in the way) when the folder's byte or file
budget would be passed; its body is checked chunk by chunk before gradio reads it (`upload_form`: a bad body is a
400/413 naming the part and the rule); a full disk is a 507 too, and what a failed upload left behind is removed.
Every upload is bound to the browser that sent it by an HttpOnly cookie holding a random id (`uploader`), which
the guard checks whenever an event or a `file=` request names an upload.

gradio handles an upload on an event loop of its own, in a thread (`UploadLoop`), not on the server's: its parser
creates a `NamedTemporaryFile` for each file part, and its route then makes a folder, resolves a path and renames
a file for each, all on the loop that runs it. One anonymous 107 KB request of 1,000 tiny files held the server's
loop for 100-380 ms at a time (another client's `/healthz` waited that long; audit 61; now ~10-35 ms). The request's body
is still read, checked and counted here, on the server's loop (`receive` and `send` are called back there); the
files gradio stored are measured in a worker thread. gradio's 1,000 files per request stay: the page's own
uploader sends a whole selection of "Add to library" (up to 1,000 files) in one request, and that upload carries
no token (the token travels with the Add event that follows).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from clipforge.server.errors import retry_after_seconds
from clipforge.server.middleware import ASGIApp, Message, Receive, Scope, Send, client_host, send_json
from clipforge.server.service import disk_full
from clipforge.server.upload_form import UploadForm, UploadRefused
from clipforge.server.upload_paths import inside
from clipforge.server.upload_space import UploadLedger, delete_files, sweep

__all__ = ["UPLOADER_COOKIE", "UploadLoop", "UploadRoute", "off_loop", "uploader", "without_upload_id"]

log = logging.getLogger(__name__)

UPLOADER_COOKIE = "clipforge_uploader"
_UPLOADER = re.compile(r"^[0-9a-f]{32}$")


class UploadLoop:
    """An event loop running in a daemon thread of its own, started at first use: where gradio handles uploads
    (module docstring). One for the process: a thread held per upload would be held for as long as a slow client
    takes to send its body."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="clipforge-ui-uploads", daemon=True).start()
            return self._loop


UPLOADS = UploadLoop()


async def off_loop(app: ASGIApp, scope: Scope, receive: Receive, send: Send, where: UploadLoop = UPLOADS) -> None:
    """`app(scope, receive, send)` run on `where`'s loop, in this task's context (its context variables), with
    `receive` and `send` called back on this loop (they belong to its connection); an exception of `app` (or of
    `receive`: a refused body) is raised here. Cancelled here (the server stops), it is cancelled there."""
    here = asyncio.get_running_loop()
    context = contextvars.copy_context()

    async def receive_here() -> Message:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(receive(), here))

    async def send_here(message: Message) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(send(message), here))

    async def there() -> None:  # a task awaiting a task cancels it when cancelled itself
        await context.run(asyncio.get_running_loop().create_task, app(scope, receive_here, send_here))

    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(there(), where.loop()))


class _SpaceFull(UploadRefused):
    """The 507 of an upload the space cannot take while its parts arrive, with the ledger's `wait_s`."""

    def __init__(self, detail: str, wait_s: float | None) -> None:
        super().__init__(507, "insufficient_storage", detail)
        self.wait_s = wait_s


def uploader(scope: Scope) -> str | None:
    """The uploader id in the request's cookie, when it is one this server could have issued."""
    for name, value in scope.get("headers", ()):
        if name != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, _, item = part.strip().partition("=")
            if key == UPLOADER_COOKIE and _UPLOADER.match(item.strip()):
                return item.strip()
    return None


class UploadRoute:
    """The upload route of the guard: the ASGI call for one `POST /gradio_api/upload`, passed on to `app`
    (gradio) with its body checked as it arrives, and the ledger settled with what gradio stored."""

    def __init__(
        self,
        app: ASGIApp,
        upload_dir: str,
        ledger: UploadLedger,
        max_body_bytes: int,
        cache_bytes: int,
        cache_age_s: float,
        forget_uploads: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.app = app
        self.upload_dir = upload_dir
        self.ledger = ledger
        self.max_body_bytes = max_body_bytes
        self.cache_bytes = cache_bytes
        self.cache_age_s = cache_age_s
        self.forget_uploads = forget_uploads  # deleted uploads, for gradio's own record of them
        self._in_flight = 0
        self._litter = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Reserve room, let gradio store the files, record them (owner, size) before answering."""
        try:
            form = UploadForm(
                _header(scope, b"content-type")
            )  # a body that is no upload costs no reservation
        except UploadRefused as exc:
            await send_json(send, exc.status, exc.code, exc.detail)
            return
        gone = self.ledger.expired()
        declared = _content_length(scope)
        reservation = self.ledger.reserve(
            declared if declared else self.max_body_bytes, 1, client_host(scope)
        )
        wait = self.ledger.wait_s  # now: another request's refusal may set it while this one awaits below
        gone += self.ledger.doomed()
        if gone:
            await run_in_threadpool(self._delete, gone)
        if reservation is None:
            await send_json(send, 507, "insufficient_storage", self._full(wait), retry_after=wait)
            return
        refused: UploadRefused | None = None
        gone = False  # the client went away before its body was whole

        async def counted() -> Message:
            """The body as gradio reads it, checked (`upload_form`) before gradio gets each chunk, each file part
            taking its place in the budget as it arrives."""
            nonlocal refused, gone
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            elif message["type"] == "http.request":
                try:  # gradio reads the body from its first boundary line on (a preamble it would refuse)
                    body = form.feed(message.get("body", b""), last=not message.get("more_body", False))
                except UploadRefused as exc:
                    refused = exc
                    raise
                if not self.ledger.grow(reservation, form.files):
                    wait = self.ledger.wait_s
                    refused = _SpaceFull(self._full(wait), wait)
                    raise refused
                message = {**message, "body": body}
            return message

        owner = uploader(scope)
        cookie = None
        if owner is None:
            owner = secrets.token_hex(16)
            cookie = (f"{UPLOADER_COOKIE}={owner}; Path=/; HttpOnly; SameSite=Strict").encode()
        answer: list[Message] = []

        async def hold(message: Message) -> None:
            answer.append(message)

        stored: list[tuple[str, int]] = []
        self._in_flight += 1
        try:
            try:
                await off_loop(self.app, scope, counted, hold)
                if refused is not None:  # gradio answered the aborted body itself (a 400 or a 500)
                    raise refused
            except UploadRefused as exc:
                answer = []
                self._litter = True
                wait = exc.wait_s if isinstance(exc, _SpaceFull) else None
                await send_json(send, exc.status, exc.code, exc.detail, retry_after=wait)
                return
            except OSError as exc:
                if not disk_full(exc):
                    raise
                log.warning("UI upload refused: the disk is full (%s)", exc.strerror)
                answer = []
                self._litter = True
                await send_json(
                    send,
                    507,
                    "insufficient_storage",
                    "the server's disk is full: the upload was not "
                    "kept; try again later or tell its administrator",
                )
                return
            except Exception:
                self._litter = True
                # gradio's parser raised at the client's disconnect (a 500 nobody read and three tracebacks,
                # ~20 kB, in the log for each cut-off anonymous upload): nobody to answer
                if gone:
                    return
                raise
            except BaseException:
                self._litter = True
                raise
            status = answer[0].get("status") if answer else None
            if status == 200:  # a path resolved and measured for each file, off the loop
                try:
                    stored = await run_in_threadpool(_stored_files, answer, self.upload_dir)
                except asyncio.CancelledError:  # the server stops: the files gradio stored are still recorded
                    stored = _stored_files(answer, self.upload_dir)
                    raise
            else:
                self._litter = True
        finally:
            self.ledger.settle(reservation, stored, owner, resolved=True)
            self._in_flight -= 1
            doomed = self.ledger.doomed()  # evicted while the parts arrived
            if doomed:
                await run_in_threadpool(self._delete, doomed)
            if self._litter and self._in_flight == 0:
                self._litter = False
                await run_in_threadpool(sweep, self.upload_dir, self.ledger)
        for message in answer:
            if message["type"] == "http.response.start" and cookie and message.get("status") == 200:
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

    def _delete(self, paths: list[str]) -> None:
        """Delete uploads the ledger let go (in a worker thread), and drop them from gradio's own record."""
        delete_files(paths, self.upload_dir)
        if self.forget_uploads is not None:
            self.forget_uploads(paths)

    def _full(self, wait_s: float | None = None) -> str:
        """The 507's words: why no room is made (`upload_space.UploadLedger`), and when to try again."""
        when = f"try again in {retry_after_seconds(wait_s)} s" if wait_s is not None else "try again later"
        return (
            f"the upload space of this page ({self.cache_bytes:,} bytes, {self.ledger.max_files:,} files) is full, "
            f"and room is made from the biggest holders' older uploads, never from anyone's newest upload younger "
            f"than {self.ledger.min_age_s:g} s (none can make room for this one now); {when}"
        )


def without_upload_id(scope: Scope) -> Scope:
    """The request without its `upload_id` query parameter (see `ui_guard._UNUSED`)."""
    from urllib.parse import parse_qsl, urlencode

    query = scope.get("query_string", b"").decode("latin-1")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "upload_id"]
    return {**scope, "query_string": urlencode(kept).encode("latin-1")}


def _stored_files(answer: list[Message], upload_dir: str) -> list[tuple[str, int]]:
    """(real path, size) of each file gradio says it stored (its 200 answer is a JSON list of paths)."""
    body = b"".join(m.get("body", b"") for m in answer if m["type"] == "http.response.body")
    try:
        paths = json.loads(body)
    except ValueError:
        return []
    stored = []
    for path in paths if isinstance(paths, list) else []:
        if isinstance(path, str) and inside(path, upload_dir):
            try:
                stored.append((os.path.realpath(path), os.lstat(path).st_size))
            except OSError:
                continue
    return stored


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


def _content_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return max(0, int(value))
            except ValueError:
                return 0
    return 0
