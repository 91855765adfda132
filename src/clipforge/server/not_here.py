"""What the API answers where none of its endpoints does: 405 with an `Allow` header when the path exists for other
methods, else a JSON 404 (an `/api/...` path that matched nothing fell through to the UI mounted at `/`)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.routing import Match

from clipforge.server.errors import error_response

__all__ = ["NotHere"]


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
        path = request.url.path[:80]
        if allowed:
            response = error_response(
                405,
                "method_not_allowed",
                f"{request.method[:20]} is not allowed on {path}; use {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)},
            )
        else:
            response = error_response(404, "not_found", f"no endpoint {path}; see /docs")
        await response(scope, receive, send)
