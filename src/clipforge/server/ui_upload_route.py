"""`/gradio_api/upload` behind `ui_guard.UIGuardMiddleware`: room reserved, the body checked, the files recorded.

An upload reserves room in the upload folder's ledger (`upload_space`) before gradio writes a byte and is
refused (507) when the folder's byte or file budget would be passed; its body is checked chunk by chunk
before gradio reads it (`upload_form`: a bad body is a 400/413 naming the part and the rule); a full disk
is a 507 too, and what a failed upload left behind is removed. Every upload is bound to the browser that
sent it by an HttpOnly cookie holding a random id (`uploader`), which the guard checks whenever an event or
a `file=` request names an upload.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from clipforge.server.middleware import ASGIApp, Message, Receive, Scope, Send, client_host, send_json
from clipforge.server.service import disk_full
from clipforge.server.upload_form import UploadForm, UploadRefused
from clipforge.server.upload_paths import inside
from clipforge.server.upload_space import UploadLedger, delete_files, sweep

__all__ = ["UPLOADER_COOKIE", "UploadRoute", "uploader", "without_upload_id"]

log = logging.getLogger(__name__)

UPLOADER_COOKIE = "clipforge_uploader"
_UPLOADER = re.compile(r"^[0-9a-f]{32}$")


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
        gone += self.ledger.doomed()
        if gone:
            await run_in_threadpool(self._delete, gone)
        if reservation is None:
            await send_json(send, 507, "insufficient_storage", self._full())
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
                    refused = UploadRefused(507, "insufficient_storage", self._full())
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
                await self.app(scope, counted, hold)
                if refused is not None:  # gradio answered the aborted body itself (a 400 or a 500)
                    raise refused
            except UploadRefused as exc:
                answer = []
                self._litter = True
                await send_json(send, exc.status, exc.code, exc.detail)
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
            if status == 200:
                stored = _stored_files(answer, self.upload_dir)
            else:
                self._litter = True
        finally:
            self.ledger.settle(reservation, stored, owner)
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

    def _full(self) -> str:
        return (
            f"the upload space of this page ({self.cache_bytes:,} bytes, {self.ledger.max_files:,} files) is "
            f"full while other uploads are still arriving; try again in a moment"
        )


def without_upload_id(scope: Scope) -> Scope:
    """The request without its `upload_id` query parameter (see `ui_guard._UNUSED`)."""
    from urllib.parse import parse_qsl, urlencode

    query = scope.get("query_string", b"").decode("latin-1")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "upload_id"]
    return {**scope, "query_string": urlencode(kept).encode("latin-1")}


def _stored_files(answer: list[Message], upload_dir: str) -> list[tuple[str, int]]:
    """(path, size) of each file gradio says it stored (its 200 answer is a JSON list of paths)."""
    body = b"".join(m.get("body", b"") for m in answer if m["type"] == "http.response.body")
    try:
        paths = json.loads(body)
    except ValueError:
        return []
    stored = []
    for path in paths if isinstance(paths, list) else []:
        if isinstance(path, str) and inside(path, upload_dir):
            try:
                stored.append((path, os.lstat(path).st_size))
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
