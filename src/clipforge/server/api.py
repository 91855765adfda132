"""The REST endpoints under /api (plus /healthz), as one router built for one service.

The router is also the contract: every operation declares its parameters with their bounds,
its request bodies (JSON and form, from `bodies`), each status code it can answer with the
`{"error", "detail"}` schema (its own, and those of the layers in front of it and of the turn it takes:
`schemas.error_responses`), and its success schema, so `/openapi.json` says exactly what the
server accepts and returns. Sync library calls (model inference, SQLite, JPEG encoding) run
in the threadpool so the event loop keeps serving; model work and the decoding of a request's
image run there in the client's turn (`fair.FairGate`). Methods a path does not list answer 405
with an `Allow` header, and `/api/...` paths that match no endpoint get a JSON 404 here
instead of falling through to the UI mounted at `/` (`not_here`).
"""

# No `from __future__ import annotations`: the parameter bounds below refer to `limits`, a local of
# build_router, and FastAPI must evaluate the annotations where they are written.

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BeforeValidator
from starlette.routing import Route as StarletteRoute

from clipforge.server import schemas
from clipforge.server.bodies import IMAGE_MEDIA_TYPES, build_bodies
from clipforge.server.body_parsing import parse_body
from clipforge.server.fair import client_key
from clipforge.server.limits import MAX_IMAGE_ID
from clipforge.server.middleware import client_host
from clipforge.server.not_here import NotHere
from clipforge.server.sending import ReleasingResponse, ReleasingStream
from clipforge.server.service import LibraryService
from clipforge.server.uploads import client_file_name, sniff_image

__all__ = ["build_router"]

# Kept by the browser, asked again each time (a 304 when its ETag, the content's sha256, still holds): an id can
# be given to another photo after `index remove`, and an hour's unasked copy showed the old one.
_IMAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-cache"}


_CHUNK = 1 << 20
_DIGITS = re.compile(r"[1-9][0-9]{0,18}")


def _plain_digits(value: Any) -> Any:
    """An id in a path is written one way: `1_0`, `+1`, `01`, `1.0` and `１` were read as ids too (several URLs
    for one image, past a cache's or a proxy rule's idea of which image a URL names)."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError(
            "an image id is written in digits 0-9 with no sign, point, separator or leading zero"
        )
    return value


_NOT_MODIFIED = {
    "description": "not modified: the request's If-None-Match names the ETag (the content's sha256)"
}


def _not_modified(tag: str) -> Response:
    return Response(status_code=304, headers={**_IMAGE_HEADERS, "ETag": tag})


def _bytes_response(data: bytes, mime: str, tag: str, release: Callable[[], None]) -> Response:
    """An original's bytes, sent a megabyte at a time (an indexed photo may be hundreds of megabytes: sent in
    one message, the event loop copied it into the socket's buffer at once, 2.9 s for 2 GB, while every other
    client waited), each piece after the client has taken the last; `release` runs when it is done with (the
    bytes are counted while it is sent: `sending`)."""
    headers = {**_IMAGE_HEADERS, "ETag": tag}
    if len(data) <= _CHUNK:
        response: Response = ReleasingResponse(content=data, media_type=mime, headers=headers)
    else:
        view = memoryview(data)
        pieces = (bytes(view[i : i + _CHUNK]) for i in range(0, len(data), _CHUNK))
        response = ReleasingStream(
            pieces, media_type=mime, headers={**headers, "Content-Length": str(len(data))}
        )
    response.release = release  # type: ignore[attr-defined]
    return response


_errors = schemas.error_responses
_REFUSED = (400, "a refusal from the library, named after its error class (e.g. `query_error`, `template_error`)")
_BAD_ID = (400, "an image id that is not a positive integer (`invalid_id`)")
_NO_IMAGE = (404, "no image with this id, or its file is gone")
_SENDING = (429, "the answers being sent to this address hold more than its share of bytes (`too_many_requests`)")


def _token(auth: list[Any]) -> list[tuple[int, str]]:
    """A token's refusals, declared only when the server has a token (`security.TokenChecker`)."""
    if not auth:
        return []
    return [(401, "missing or wrong token"),
            (429, "too many wrong tokens from this address: it is locked out for a while (`too_many_requests`)")]


def _prefix(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def served_image_types() -> list[str]:
    """Every type an original may be served as: what Pillow names the formats it reads (`media.image_bytes` asks it),
    so that an AVIF or JPEG 2000 upload's `image/avif` / `image/jp2` is one the contract declares (generated clients
    and schemathesis refused the undeclared type)."""
    from PIL import Image

    Image.init()
    named = {mime for mime in Image.MIME.values() if mime.startswith("image/")}
    return sorted(named | {t.strip() for t in IMAGE_MEDIA_TYPES.split(",")})


def build_router(service: LibraryService) -> APIRouter:
    """All endpoints, closed over `service` (its limits shape the declared bounds)."""
    router = APIRouter()
    limits = service.limits
    bodies = build_bodies(limits)
    # Declared only when the server has a token, so the spec never promises a 401 it will not send.
    auth = (
        [
            Security(HTTPBearer(auto_error=False, description="the server's --token")),
            Security(APIKeyHeader(name="X-Token", auto_error=False, description="the server's --token")),
        ]
        if service.tokens.enabled
        else []
    )
    page, thumb = (
        min(50, limits.max_page_size),
        min(limits.thumb_size, limits.max_thumb_size),
    )  # defaults in bounds
    ImageId = Annotated[
        int,
        Path(ge=1, le=MAX_IMAGE_ID, description="an image id from search or listing"),  # noqa: N806
        BeforeValidator(_plain_digits),
    ]

    def sniffed(data: bytes | None, what: str):
        # Called inside the client's turn, as is the library call that decodes the image (`uploads` reads
        # only its header): a 20 MB PNG may decode to 150 MB of pixels, so images are decoded one turn at
        # a time, not as soon as each body has arrived.
        return None if data is None else sniff_image(data, limits, what)

    async def in_turn(request: Request, fn: Any, *args: Any, gate: Any = None) -> Any:
        """fn(*args) in a thread when this client's turn comes in `gate` (see `fair.FairGate`): the model's
        by default, `service.reads` for files and thumbnails."""
        client = client_key(request.client.host if request.client else None)
        # The body has been read: `receive` now only completes when the client disconnects.
        return await (gate or service.gate).run(client, fn, *args, left=request.receive)

    @router.get("/healthz", response_model=schemas.HealthOut, responses=_errors("GET", "/healthz"), tags=["server"])
    def healthz() -> schemas.HealthOut:
        """Liveness: the model is loaded and the server answers."""
        return schemas.HealthOut(
            status="ok",
            model=service.model_name,
            model_notice=service.notice,
            write_token_required=service.tokens.enabled,
        )

    @router.post(
        "/api/search",
        response_model=schemas.SearchOut,
        responses=_errors("POST", "/api/search", _REFUSED, (400, "nothing to search for once the text is cleaned "
                          "(`empty_query`)"), body=True, gate=service.gate),
        tags=["search"],
        openapi_extra={"requestBody": bodies.search.openapi()},
    )
    async def search(request: Request) -> schemas.SearchOut:
        """Library images most similar to a text, an image, or both (summed).

        JSON: `{"text": "a photo of a fish", "top_k": 3}`, with `"image": "<base64 of the file>"` to search
        by example. Form data works too (the image as a file part).
        """
        body = (await parse_body(request, bodies.search, limits)).fields

        def work():  # the notice and an empty result's reason too: they read files and the store, never on the loop
            hits, took = service.search(
                body.get("text"), sniffed(body.get("image"), "query image"), body["top_k"], body.get("tags")
            )
            reason = None if hits else service.no_results_reason(body.get("tags"))
            return hits, took, service.search_notice(service.clean_text(body.get("text"))), reason, schemas.gone_files(hits)

        hits, took, notice, reason, gone = await in_turn(request, work)
        prefix = _prefix(request)
        return schemas.SearchOut(
            text=service.clean_text(body.get("text")),
            image=body.get("image") is not None,
            top_k=body["top_k"],
            tags=service.clean_labels(body.get("tags"), "tags") or None,
            model=service.model_name,
            took_ms=round(took, 2),
            results=[schemas.hit_out(h, prefix, h.id in gone) for h in hits],
            notice=notice,
            reason=reason,
        )

    @router.post(
        "/api/classify",
        response_model=schemas.ClassifyOut,
        responses=_errors("POST", "/api/classify", _REFUSED, (400, "no label left once the labels are cleaned "
                          "(`no_labels`)"), (413, "more prompts (labels × templates) than a classify may encode "
                          "(`too_many_prompts`)"), body=True, gate=service.gate),
        tags=["classify"],
        openapi_extra={"requestBody": bodies.classify.openapi()},
    )
    async def classify(request: Request) -> schemas.ClassifyOut:
        """Zero-shot probabilities of each label for an image (nothing is stored). `scoring` says how to
        read them: softmax (CLIP) sums to 1 over the labels; sigmoid (SigLIP) scores each label on its own.

        JSON: `{"image": "<base64 of the file>", "labels": ["cat", "dog"], "template": "a photo of a {}."}`.
        Form data works too (labels comma-separated, the image as a file part).
        """
        body = (await parse_body(request, bodies.classify, limits)).fields
        service.classify_plan(body["labels"], body["template"])  # a 400 now, not after waiting for a turn

        def work():
            ranked, templates, took = service.classify(
                sniffed(body["image"], "image"), body["labels"], body["template"]
            )
            return ranked, templates, took, service.classify_notice(service.clean_labels(body["labels"]))

        ranked, templates, took, notice = await in_turn(request, work)
        scoring = service.library.encoder.scoring()
        return schemas.ClassifyOut(
            labels=[schemas.LabelProbability(label=lb, probability=round(p, 6)) for lb, p in ranked],
            templates=templates,
            model=service.model_name,
            took_ms=round(took, 2),
            scoring=scoring.kind,
            note=scoring.note,
            notice=notice,
        )

    @router.get(
        "/api/images",
        response_model=schemas.ImageListOut,
        responses=_errors("GET", "/api/images", (422, "`limit` or `offset` is not an integer in its bounds"),
                          gate=service.pages),
        tags=["images"],
    )
    async def list_images(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=limits.max_page_size, description="page size")] = page,
        offset: Annotated[int, Query(ge=0, le=limits.max_offset, description="images to skip")] = 0,
    ) -> schemas.ImageListOut:
        """Indexed images, oldest first, one page at a time."""
        prefix = _prefix(request)

        def work() -> tuple[list[schemas.ImageOut], int | None]:
            # SQLite skips `offset` rows one by one and reads each image's tags: takes turns with the UI's pages
            records, next_offset = service.list_images(limit, offset)
            return [schemas.image_out(r, service.tags(r.id), prefix) for r in records], next_offset

        images, next_offset = await in_turn(request, work, gate=service.pages)
        return schemas.ImageListOut(images=images, limit=limit, offset=offset, next_offset=next_offset)

    @router.post(
        "/api/images",
        response_model=schemas.UploadOut,
        status_code=201,
        responses={
            200: {
                "model": schemas.UploadOut,
                "description": "these bytes were already in the library: the existing image",
            },
            **_errors("POST", "/api/images", *_token(auth), (403, "the library is read-only (its folder or disk "
                      "cannot be written)"), (503, "another process is writing the library (`library_busy`)"),
                      (507, "the library's disk is full: nothing was added"), body=True, gate=service.gate),
        },
        tags=["images"],
        dependencies=auth,
        openapi_extra={"requestBody": bodies.upload.openapi()},
    )
    async def upload_image(request: Request, response: Response) -> schemas.UploadOut:
        """Add an image to the library (needs the token when the server has one). 200 when already present.

        The photo keeps the file part's name, cleaned (`../x/cat photo.JPG` is shown as `cat photo.jpg`: the
        last component, letters, digits and a few marks, the extension from the bytes); bytes already in
        the library keep the name they were first added under.
        """
        service.tokens.require(
            request.headers.get("authorization"),
            request.headers.get("x-token"),
            request.client.host if request.client else None,
        )
        parsed = await parse_body(request, bodies.upload, limits)
        name = client_file_name(parsed.file_names.get("file"))
        record, created = await in_turn(
            request, lambda: service.add(sniffed(parsed.fields["file"], "upload"), name)
        )
        if not created:
            response.status_code = 200
        return schemas.UploadOut(
            created=created, image=schemas.image_out(record, service.tags(record.id), _prefix(request))
        )

    image_types = {t: {"schema": {"type": "string", "format": "binary"}} for t in served_image_types()}

    @router.get(
        "/api/images/{image_id}",
        response_class=Response,
        tags=["images"],
        responses={
            200: {"description": "the original file", "content": image_types},
            304: _NOT_MODIFIED,
            # a 422 is never sent here (a malformed id is a 400): listed so FastAPI adds no 422 of another shape
            **_errors("GET", "/api/images/{image_id}", _BAD_ID, _NO_IMAGE, _SENDING,
                      (422, "not sent here: a malformed id is a 400"), gate=service.reads),
        },
    )
    async def get_image(request: Request, image_id: ImageId) -> Response:
        """The original file of an image, by id (its type is sniffed from its bytes)."""
        data, mime, tag = await in_turn(
            request, service.image_bytes, image_id, request.headers.get("if-none-match"), gate=service.reads
        )
        if data is None:
            return _not_modified(tag)
        return _bytes_response(data, mime, tag, service.sending.hold(client_host(request.scope), len(data)))

    @router.get(
        "/api/images/{image_id}/thumb",
        response_class=Response,
        tags=["images"],
        responses={
            200: {
                "description": "a JPEG thumbnail",
                "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
            },
            304: _NOT_MODIFIED,
            **_errors("GET", "/api/images/{image_id}/thumb", _BAD_ID, _NO_IMAGE, _SENDING,
                      (422, "`size` is not an integer in its bounds"), gate=service.reads),
        },
    )
    async def get_thumbnail(
        request: Request,
        image_id: ImageId,
        size: Annotated[
            int, Query(ge=16, le=limits.max_thumb_size, description="longest side in pixels")
        ] = thumb,
    ) -> Response:
        """A JPEG thumbnail whose longest side is at most `size` pixels (never enlarged)."""
        data, tag = await in_turn(
            request,
            service.thumbnail,
            image_id,
            size,
            request.headers.get("if-none-match"),
            gate=service.reads,
        )
        if data is None:
            return _not_modified(tag)
        return _bytes_response(
            data, "image/jpeg", tag, service.sending.hold(client_host(request.scope), len(data))
        )

    @router.get(
        "/api/stats",
        response_model=schemas.StatsOut,
        responses=_errors("GET", "/api/stats", gate=service.pages),
        tags=["server"],
    )
    async def stats(request: Request) -> dict[str, Any]:
        """Counts, model, index state, tags, recent failures and this server's limits."""
        return await in_turn(request, service.stats, gate=service.pages)  # counts scan the library's tables

    # Registered last, for every method (QUERY and other extension methods too): they only see
    # requests that no endpoint above took.
    not_here = NotHere(router.routes)
    router.routes.append(StarletteRoute("/healthz", not_here, include_in_schema=False))
    router.routes.append(StarletteRoute("/api/{rest:path}", not_here, include_in_schema=False))
    return router
