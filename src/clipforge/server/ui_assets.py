"""gradio's own static files (`/assets/`, `/static/`): compressed per request only when they are small.

gradio compresses an answer whose path ends in a text extension (`.js`, `.css`, `.json`, ...) with brotli or
gzip whenever the client accepts it, again for every request, on the event loop. Its frontend ships files the
page never loads, up to 4.6 MB (`PlotlyPlot-*.js`; bokeh's 1.2 MB under `/static/`): one anonymous GET of that
bundle cost 0.27 s (brotli) to 0.47 s (gzip) of the loop's CPU, as often as anyone asked. A file larger than
`MAX_COMPRESSED_BYTES` now reaches gradio without the request's `Accept-Encoding` and is sent as it is stored;
the page's own entry files (135 kB of script, 33 kB of style) and its components' chunks stay compressed.
"""

from __future__ import annotations

import os

from clipforge.server.middleware import Scope

__all__ = ["MAX_COMPRESSED_BYTES", "StaticFiles"]

MAX_COMPRESSED_BYTES = 256 * 1024
"""Largest static file gradio compresses for a request (a gzip of this many bytes: ~10 ms)."""


class StaticFiles:
    """Which static requests keep their `Accept-Encoding`: `roots` maps a URL prefix to the folder it serves."""

    def __init__(self, roots: dict[str, str]) -> None:
        self.roots = dict(roots)

    @classmethod
    def of_gradio(cls) -> StaticFiles:
        """The folders gradio serves `/assets/` and `/static/` from."""
        from gradio.route_utils import BUILD_PATH_LIB, STATIC_PATH_LIB

        return cls({"/assets/": str(BUILD_PATH_LIB), "/static/": str(STATIC_PATH_LIB)})

    def scope(self, scope: Scope, path: str) -> Scope:
        """`scope` (a request for `path`), without `Accept-Encoding` when it names a static file too large to
        compress per request."""
        prefix = next((p for p in self.roots if path.startswith(p)), None)
        if prefix is None:
            return scope
        try:  # a path gradio would refuse (`..`, a NUL) just keeps its headers: gradio answers it
            size = os.stat(os.path.join(self.roots[prefix], path[len(prefix) :])).st_size
        except (OSError, ValueError):
            return scope
        if size <= MAX_COMPRESSED_BYTES:
            return scope
        return {
            **scope,
            "headers": [(k, v) for k, v in scope.get("headers", ()) if k.lower() != b"accept-encoding"],
        }
