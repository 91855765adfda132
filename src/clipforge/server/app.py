"""`create_app`: the whole web app - REST API, OpenAPI docs, gradio UI - as one ASGI app.

A factory (not a module-level app) so tests build it over a temporary library and call it
through FastAPI's TestClient without a server, and so `clipforge serve` owns the lifetime
of the library it opened.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse
from fastapi_offline import FastAPIOffline

from clipforge.server.api import build_router
from clipforge.server.error_shape import ErrorShapeMiddleware
from clipforge.server.errors import install_error_handlers
from clipforge.server.head import HeadAsGetMiddleware
from clipforge.server.limits import ServerLimits
from clipforge.server.middleware import UI_UPLOAD_PATH, BodyLimitMiddleware
from clipforge.server.origins import BrowserOriginMiddleware, HostNames
from clipforge.server.request_time import StoppingMiddleware, TimeoutMiddleware
from clipforge.server.service import LibraryService

__all__ = ["create_app"]

_DESCRIPTION = """Search and classify an image library with CLIP.

* Images are addressed by integer id only (`/api/images/{id}`); the server never opens a path sent by a client.
* Uploads are identified by their bytes (not their name or content type) and bounded in bytes and pixels.
* Changes (`POST /api/images`) need `Authorization: Bearer <token>` or `X-Token: <token>` when the server
  was started with `--token`.
* Every GET route answers HEAD with the same status and headers and no body.
* Every error is JSON: `{"error": code, "detail": message}`. A request that cannot be served as sent gets a 4xx
  whose code names the reason (a refusal from the library is named after its error class, e.g. `query_error`,
  `template_error`, `image_load_error`); a fault of the server itself is 500 `internal_error`, whose details
  stay in the server's log. A store that cannot serve the request is 503: `store_connection_error` for a Milvus
  server that is not answering (with `Retry-After`), `damaged_library_error` for a damaged database, other
  failures of a Milvus store by their class (`store_unavailable_error`, `collection_mismatch_error`, ...).
* No cross-origin access (no CORS headers): only pages served by this server call it from a browser. A
  request other than GET/HEAD/OPTIONS that a browser marks as sent by another site's page is refused (403
  `cross_site_request`), and so is a `Host` name the server was not started to answer to (400
  `host_not_allowed`: addresses, localhost and single-label names always work).
"""


def create_app(library: Any, token: str | None = None, limits: ServerLimits | None = None, *,
               ui: bool = True, allowed_hosts: Sequence[str] = ()) -> FastAPI:
    """The app for an open `clipforge.library.Library` (whose model is loaded here).

    `token`: required for write endpoints when given. `limits`: request ceilings
    (`ServerLimits()` by default). `ui=False` leaves out the gradio UI (the API alone starts faster).
    `allowed_hosts`: dotted names this server answers to beyond its addresses, localhost and its own host
    name ("*": any; see `clipforge.server.origins`).
    """
    from clipforge import __version__

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    limits = limits or ServerLimits()
    service = LibraryService(library, token=token, limits=limits)
    # Swagger UI's assets come from the fastapi-offline package, not a CDN: /docs works offline.
    app = FastAPIOffline(title="clipforge", version=__version__, description=_DESCRIPTION, docs_url="/docs",
                         redoc_url=None, openapi_url="/openapi.json")
    app.state.service = service
    install_error_handlers(app)
    app.include_router(build_router(service))
    # Same-origin only: no page on another origin (another localhost port included) may read
    # answers with the browser's credentials. gradio sees this and adds no CORS of its own.
    app.add_middleware(CORSMiddleware, allow_origins=[], allow_credentials=False)
    if ui:
        from clipforge.server.ui import mount_ui

        app = mount_ui(app, service)
    else:
        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/docs")
    # Around the API, gradio and CORS: their own error answers ({"detail": "Not Found"}, a 422 echoing the
    # client's values, a text/plain 500) leave in the one `{"error", "detail"}` shape.
    app.add_middleware(ErrorShapeMiddleware)
    # Added last = outermost: the body limit also covers the UI's routes, and the timeout also
    # covers a slow body upload.
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes, file_limit=limits.max_upload_bytes,
                       drain_bytes=limits.drain_bytes, idle_timeout=limits.header_timeout_s,
                       body_timeout=limits.request_timeout_s, receiving=service.receiving,
                       min_rate=limits.min_body_rate, upload_route=(UI_UPLOAD_PATH, limits.max_ui_upload_body_bytes))
    # gradio's upload route too: a body trickling in under the idle timeout must not hold a socket forever
    app.add_middleware(TimeoutMiddleware, seconds=limits.request_timeout_s, prefixes=("/api/", UI_UPLOAD_PATH),
                       min_rate=limits.min_body_rate)
    # A rebinding page's or another site's request costs nothing past its headers.
    app.add_middleware(BrowserOriginMiddleware, names=HostNames(allowed_hosts))
    # Outermost: a HEAD is a GET to everything inside (every check included), answered without the body.
    app.add_middleware(HeadAsGetMiddleware)
    # ... but for the server's stop, whose cancellation of the requests still running is answered here.
    app.add_middleware(StoppingMiddleware)
    return app
