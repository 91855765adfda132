"""One error shape for every failure of the REST API: `{"error": code, "detail": message}`, and the
server's one error edge (`api_error`), which the REST handlers and the web UI both call.

Clients branch on the short stable `error` code and show `detail` to people. FastAPI's own
shapes (`{"detail": [...]}` for validation, `{"detail": "..."}` for HTTPException) are
converted here, so a client never has to handle two formats.

What a failure becomes is decided in `api_error` alone, by family, never by a list of types:
the server's own refusals (`APIError`) stay as they are; every `clipforge.errors.UserError`,
whichever layer raised it, becomes its status (`http_status`, 400 unless the class says) and a
code named after its class (`QueryError` -> `query_error`), with its message as one line; both
are logged as one line, without a traceback. Anything else is a bug: the client gets 500 and a
generic sentence (nothing of the server's internals), the log gets the whole traceback.

Every 429 carries `Retry-After` (RFC 9110 §10.2.3, RFC 6585: whole seconds, at least 1), so a client that
honours it backs off instead of asking again at once. Where the limit is a window of time, the refusal names
the real wait (`APIError(..., retry_after=seconds)`, `retry_after_seconds`); where it is a count of requests
running or waiting, a place frees when one of them ends, which nobody knows ahead, and the answer says
`RETRY_SOON_S`. A 429 that names no wait gets that one too (`with_retry_after`), here for FastAPI's answers and
in `middleware.send_json` for the raw-ASGI ones: no 429 leaves without the header.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from clipforge.errors import UserError, one_line
from clipforge.server.limits import MAX_IMAGE_ID
from clipforge.text.typed import REQUEST_UNICODE

__all__ = [
    "INTERNAL_DETAIL",
    "RETRY_SOON_S",
    "SHOWN_CHARS",
    "APIError",
    "api_error",
    "error_body",
    "error_response",
    "install_error_handlers",
    "retry_after_seconds",
    "shown",
    "status_code_name",
    "user_error",
    "validation_error",
    "validation_text",
    "without_folders",
    "with_retry_after",
]

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "timeout",
    507: "insufficient_storage",
}


def status_code_name(status: int) -> str:
    """The `error` code of an answer with this status when nothing more specific names it."""
    return _CODES.get(status, "internal_error" if status >= 500 else "error")


RETRY_SOON_S = 1
"""`Retry-After` of a 429 for a cap on requests running or waiting at once (model work, page builds, UI streams
and unread answers): a place frees as soon as one of the client's own requests ends, which is not known ahead;
one second spaces a well-behaved client's retries without keeping it waiting long."""


def retry_after_seconds(wait: float) -> int:
    """A wait of `wait` seconds as `Retry-After` delay-seconds: whole seconds, rounded up (a client that waits
    the number given never comes back before the limit has freed), at least 1."""
    return max(1, math.ceil(wait)) if math.isfinite(wait) else RETRY_SOON_S


def with_retry_after(status: int, headers: dict[str, str] | None) -> dict[str, str] | None:
    """`headers` of an answer of `status`, with `Retry-After: RETRY_SOON_S` added to a 429 that names no wait."""
    if status != 429 or any(name.lower() == "retry-after" for name in headers or {}):
        return headers
    return {**(headers or {}), "Retry-After": str(RETRY_SOON_S)}


class APIError(Exception):
    """Raise anywhere in a request to answer `status` with `{"error": code, "detail": detail}`.

    `retry_after`: seconds until the client may try again (a 429's or a 503's wait), sent as `Retry-After`
    (`retry_after_seconds`); None leaves `headers` as given."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None,
                 *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = None if retry_after is None else retry_after_seconds(retry_after)
        if self.retry_after is not None:
            headers = {**(headers or {}), "Retry-After": str(self.retry_after)}
        self.headers = headers


INTERNAL_DETAIL = "an internal error stopped this request; the server log has the details"
_MAX_DETAIL = 2000
# The folders of an absolute path in a message (`/home/me/lib/` of `/home/me/lib/library.sqlite3`); not
# inside a URL or a relative path (the character before the first slash is no word character, `:`, `.`, `/`).
_FOLDERS = re.compile(r"(?<![\w:./])(?:/[^\s/'\"]+)+/(?=[^\s/'\"])")


SHOWN_CHARS = 40


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A refused value as an error echoes it back: at most `limit` characters, `...` marking a cut. A client's
    `1e308` for top_k came back as its 309 digits; what the client sent is theirs to see, not to be repeated."""
    try:
        text = str(value)
    except ValueError:  # an int past Python's digit limit for str()
        return f"a number of more than {limit} digits"
    return text if len(text) <= limit else text[:limit] + "..."


def without_folders(message: str) -> str:
    """A UserError names its file for a person at the server's terminal; its client sees the file's name only
    (a folder whose name holds a blank is cut at the blank: its part before it goes, the rest stays)."""
    return _FOLDERS.sub("", message)


def _code(exc: BaseException) -> str:
    """`ImageLoadError` -> `image_load_error`: the class name, which callers already know it by."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type(exc).__name__).lower()


def user_error(exc: BaseException) -> APIError | None:
    """`exc` as the answer to the client when it is a user's mistake (an APIError, any UserError), else None."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, UserError):
        status = getattr(exc, "http_status", 400)
        wait = exc.retry_after
        return APIError(
            status if isinstance(status, int) and 400 <= status < 600 else 400,
            _code(exc),
            exc.client_detail or without_folders(one_line(exc)[:_MAX_DETAIL]),
            retry_after=wait if isinstance(wait, (int, float)) and wait > 0 else None,
        )
    return None


def api_error(exc: BaseException, where: str, level: int = logging.INFO) -> APIError:
    """The server's one error edge: what `exc` becomes for the client, and the log line it leaves.

    A user's mistake (see `user_error`) is logged as one line at `level` (no traceback); anything
    else is a bug, logged with its traceback, and answered 500 with `INTERNAL_DETAIL`.
    """
    error = user_error(exc)
    if error is None:
        log.error("unhandled error in %s", where, exc_info=exc)
        return APIError(500, "internal_error", INTERNAL_DETAIL)
    if error.status >= 500:  # the server's environment failed (a lost store, a damaged database): the operator's
        level = max(level, logging.WARNING)
    told = one_line(exc) if isinstance(exc, UserError) and exc.client_detail else error.detail  # the log's words
    log.log(level, "%s refused (%d %s): %s", where, error.status, error.code, str(told)[:300])
    return error


def error_body(code: str, detail: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail}


def error_response(
    status: int, code: str, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The REST routes' one way an error becomes an answer (a 429 always with `Retry-After`)."""
    return JSONResponse(error_body(code, detail), status_code=status, headers=with_retry_after(status, headers))


def validation_error(errors: list[dict[str, Any]]) -> RequestValidationError:
    """A 422 for errors found outside FastAPI's own parameter parsing (request bodies read by hand)."""
    return RequestValidationError(errors)


_PYDANTIC_STEP = re.compile(r"[\w-]+\[.*\]")  # a union branch or validator in a loc: "list[...]", "function-after[...]"
_PYDANTIC_TAGS = frozenset({"str", "int", "float", "bool", "bytes", "none", "dict", "list"})  # plain union branches


def _is_union_branch(step: Any) -> bool:
    """Whether a loc element after the field's name is pydantic naming the union member it tried."""
    return isinstance(step, str) and (step in _PYDANTIC_TAGS or bool(_PYDANTIC_STEP.fullmatch(step)))


def _message(item: dict[str, Any]) -> str:
    # Our validators raise ValueError with a sentence; pydantic prefixes it with "Value error, ".
    ctx = item.get("ctx")
    error = ctx.get("error") if isinstance(ctx, dict) else None
    if item.get("type") == "value_error" and error is not None:
        return str(error)
    if item.get("type") == "string_unicode":  # JSON's "\ud800": "unable to parse raw data as a unicode string"
        return REQUEST_UNICODE  # the one sentence, `text.typed`'s (the CLI's and the body checks' too)
    return str(item.get("msg", "invalid"))


def _validation_detail(exc: RequestValidationError) -> str:
    return validation_text(exc.errors())


def validation_text(errors: Any) -> str:
    """FastAPI's list of validation errors as one line, `field: message; ...`, without the `input` each item
    echoes (gradio's own routes sent a client's whole value back, and a 1e400 in it made the answer raise)."""
    parts: list[str] = []
    branches: dict[str, tuple[int, tuple[bool, int]]] = {}  # field -> (index in parts, rank) of its union error
    for item in [e for e in errors if isinstance(e, dict)][:10] if isinstance(errors, (list, tuple)) else ():
        loc = tuple(item["loc"]) if isinstance(item.get("loc"), (list, tuple)) else ()
        # the first element names where (FastAPI's "body", "query", "path", "header"); the rest is the field,
        # which may itself be called "query" (`{"query": "fish"}` was reported as "request: ...")
        loc = loc[1:] if loc[:1] in (("body",), ("query",), ("path",), ("header",)) else loc
        # pydantic names each branch of a union it tried ("labels.list[function-after[check(), constrained-str]].0",
        # then "labels.function-after[...]"): the field's path without them, and one branch's error, the one that
        # took the value's type (not "Input should be a valid list" for a string), the deepest of those
        path = [str(p) for k, p in enumerate(loc) if not (k and _is_union_branch(p))]
        line = f"{'.'.join(path) or 'request'}: {_message(item)}"
        if len(path) == len(loc):
            parts.append(line)
            continue
        field, rank = (path[0] if path else ""), (not str(item.get("type", "")).endswith("_type"), len(path))
        if field not in branches:
            branches[field] = (len(parts), rank)
            parts.append(line)
        elif rank > branches[field][1]:
            branches[field] = (branches[field][0], rank)
            parts[branches[field][0]] = line
    return "; ".join(parts)[:2000] or "invalid request"


def _in_path(exc: RequestValidationError) -> bool:
    return all(tuple(item.get("loc", ()))[:1] == ("path",) for item in exc.errors())


def install_error_handlers(app: FastAPI) -> None:
    """Route APIError, validation errors, HTTP errors and crashes through `error_response`."""

    def _where(request: Request) -> str:
        return f"{request.method[:20]} {request.url.path[:80]}"

    # APIError and UserError get handlers of their own (not only the catch-all below): Starlette re-raises
    # what reaches its `Exception` handler, and uvicorn would print the traceback of a user's mistake.
    @app.exception_handler(APIError)
    @app.exception_handler(UserError)
    async def _refused(request: Request, exc: Exception) -> JSONResponse:
        error = api_error(exc, _where(request))
        return error_response(error.status, error.code, error.detail, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if exc.errors() and _in_path(exc):  # a path that names no resource: the id itself is malformed
            return error_response(
                400,
                "invalid_id",
                f"image ids are integers from 1 to {MAX_IMAGE_ID}; " + _validation_detail(exc),
            )
        return error_response(422, "invalid_request", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = status_code_name(exc.status_code)
        return error_response(exc.status_code, code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client closed its connection before its body was whole (an aborted upload, a client's timeout):
        # nobody to answer and no fault of the server. It reached the catch-all below as a bug, and each such
        # request wrote two tracebacks (ours and uvicorn's, ~10 kB) into the log.
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server log, never to the client.
        error = api_error(exc, _where(request))
        return error_response(error.status, error.code, error.detail, error.headers)
