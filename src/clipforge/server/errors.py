"""One error shape for every failure of the REST API: `{"error": code, "detail": message}`.

Clients branch on the short stable `error` code and show `detail` to people. FastAPI's own
shapes (`{"detail": [...]}` for validation, `{"detail": "..."}` for HTTPException) are
converted here, so a client never has to handle two formats.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from clipforge.server.limits import MAX_IMAGE_ID

__all__ = ["APIError", "error_body", "error_response", "install_error_handlers", "validation_error"]

log = logging.getLogger(__name__)

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests",
          503: "timeout", 507: "insufficient_storage"}


class APIError(Exception):
    """Raise anywhere in a request to answer `status` with `{"error": code, "detail": detail}`."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


def error_body(code: str, detail: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail}


def error_response(status: int, code: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, detail), status_code=status, headers=headers)


def validation_error(errors: list[dict[str, Any]]) -> RequestValidationError:
    """A 422 for errors found outside FastAPI's own parameter parsing (request bodies read by hand)."""
    return RequestValidationError(errors)


def _message(item: dict[str, Any]) -> str:
    # Our validators raise ValueError with a sentence; pydantic prefixes it with "Value error, ".
    error = (item.get("ctx") or {}).get("error")
    if item.get("type") == "value_error" and error is not None:
        return str(error)
    return str(item.get("msg", "invalid"))


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for item in exc.errors()[:10]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {_message(item)}")
    return "; ".join(parts)[:2000] or "invalid request"


def _in_path(exc: RequestValidationError) -> bool:
    return all(tuple(item.get("loc", ()))[:1] == ("path",) for item in exc.errors())


def install_error_handlers(app: FastAPI) -> None:
    """Route APIError, validation errors, HTTP errors and crashes through `error_response`."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if exc.errors() and _in_path(exc):  # a path that names no resource: the id itself is malformed
            return error_response(400, "invalid_id", f"image ids are integers from 1 to {MAX_IMAGE_ID}; "
                                                      + _validation_detail(exc))
        return error_response(422, "invalid_request", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server log, never to the client.
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", f"{type(exc).__name__} while handling the request; "
                                                     f"see the server log")
