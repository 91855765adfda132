"""What the API answers where none of its endpoints does: 405 with an `Allow` header when the path exists for other
methods, else a JSON 404 (an `/api/...` path that matched nothing fell through to the UI mounted at `/`).

Both name the path asked for, which is what the client needs to see, but as a URL (`shown_path`), and the method
only when it is a standard one (`shown_method`): the decoded path and any method went into the detail as sent, so a
caller chose what the server appeared to write (`no endpoint /api/please send your token to evil.example`). Every
other 405 of the server (gradio's and Starlette's routes, reworded by `error_shape`) is worded by the same
`not_allowed_detail`: one rule, where the second copy had kept echoing `PUT is not allowed on /assets/please ...`.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPMethod
from typing import Any
from urllib.parse import quote

from fastapi import Request
from starlette.routing import Match

from clipforge.server.errors import error_response

__all__ = ["NotHere", "not_allowed_detail", "shown_method", "shown_path"]

SHOWN_PATH_CHARS = 80
# RFC 9110's methods, PATCH, and QUERY (a safe method with a body: an IETF draft)
_METHODS = frozenset({*(m.value for m in HTTPMethod), "QUERY"})


def shown_path(path: str, limit: int = SHOWN_PATH_CHARS) -> str:
    """`path` as an error names it: percent-encoded (letters, digits and `/-._~` as they are; a blank is `%20`), at
    most `limit` characters of it, cut after a whole character (all of its escapes), `...` marking the cut."""
    out = ""
    for char in path:
        piece = quote(char, safe="/")
        if len(out) + len(piece) > limit:
            return out + "..."
        out += piece
    return out


def shown_method(method: str) -> str:
    """`method` as an error names it: a standard HTTP method by its name, any other as "this method"."""
    return method if method in _METHODS else "this method"


def not_allowed_detail(method: str, path: str, allowed: Iterable[str]) -> str:
    """A 405's detail, for every 405 of the server: the method (`shown_method`), the path (`shown_path`) and the
    methods to use, sorted (a route's method set came out in either order), HEAD wherever GET is."""
    methods = {m.strip() for m in allowed if m.strip()}
    if "GET" in methods:  # answered as GET is (`head.HeadAsGetMiddleware`)
        methods.add("HEAD")
    return f"{shown_method(method)} is not allowed on {shown_path(path)}; use {', '.join(sorted(methods))}"


def _allowed_methods(request: Request, routes: list[Any]) -> list[str]:
    """Methods of the `routes` whose path matches this request (but whose method does not)."""
    scope = dict(request.scope)
    allowed: set[str] = set()
    for route in routes:
        methods = getattr(route, "methods", None)
        if not methods:
            continue
        match, _ = route.matches(scope)
        if match is Match.PARTIAL:
            allowed |= set(methods)
    if "GET" in allowed:  # answered as GET is (`head.HeadAsGetMiddleware`)
        allowed.add("HEAD")
    return sorted(allowed)


class NotHere:
    """An ASGI endpoint (so its route takes every method): 405 + Allow when another method of the
    path exists, else a JSON 404 (instead of falling through to the UI mounted at `/`)."""

    def __init__(self, routes: list[Any]) -> None:
        self.routes = list(routes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        allowed = _allowed_methods(request, self.routes)
        if allowed:
            response = error_response(
                405,
                "method_not_allowed",
                not_allowed_detail(request.method, request.url.path, allowed),
                headers={"Allow": ", ".join(allowed)},
            )
        else:
            response = error_response(404, "not_found", f"no endpoint {shown_path(request.url.path)}; see /docs")
        await response(scope, receive, send)
