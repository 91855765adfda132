"""The REST endpoints under /api (plus /healthz), as one router built for one service.

Sync library calls (model inference, SQLite, JPEG encoding) run in the threadpool so the
event loop keeps serving other requests; uploads are read asynchronously with a byte cap.
Image ids are parsed from the path by hand so that anything that is not a plain integer
gets this API's 400 JSON error, and `/api/...` paths that match no endpoint get a 404
here instead of falling through to the UI mounted at `/`.
"""

# No `from __future__ import annotations`: the parameter bounds below refer to `limits`, a local of
# build_router, and FastAPI must evaluate the annotations where they are written.

import re
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from clipforge.server import schemas
from clipforge.server.errors import APIError
from clipforge.server.service import DEFAULT_TEMPLATE, LibraryService
from clipforge.server.uploads import read_upload, sniff_image

__all__ = ["build_router"]

_ID = re.compile(r"[0-9]{1,18}")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorOut, "description": text}
    for code, text in {400: "bad input", 401: "missing or wrong token", 404: "unknown id",
                       413: "file or pixel count over the limit", 415: "not an image",
                       422: "undecodable image or invalid field", 503: "timed out"}.items()
}
_IMAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}


def parse_image_id(raw: str) -> int:
    """A path segment as an image id; anything but 1-18 ASCII digits is a 400."""
    if not _ID.fullmatch(raw):
        raise APIError(400, "invalid_id", f"image ids are positive integers, got {raw[:40]!r}")
    return int(raw)


def _prefix(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


async def _sniffed(upload: UploadFile, service: LibraryService, what: str):
    data = await read_upload(upload, service.limits, what)
    return await run_in_threadpool(sniff_image, data, service.limits, what)


def build_router(service: LibraryService) -> APIRouter:
    """All endpoints, closed over `service` (its limits shape the declared parameter bounds)."""
    router = APIRouter()
    limits = service.limits

    def require_token(authorization: str | None, x_token: str | None) -> None:
        service.tokens.require(authorization, x_token)

    @router.get("/healthz", response_model=schemas.HealthOut, tags=["server"])
    def healthz() -> schemas.HealthOut:
        """Liveness: the model is loaded and the server answers."""
        return schemas.HealthOut(status="ok", model=service.model_name, model_notice=service.notice,
                                 write_token_required=service.tokens.enabled)

    @router.post("/api/search", response_model=schemas.SearchOut, responses=_ERRORS, tags=["search"])
    async def search(
        request: Request,
        text: Annotated[str | None, Form(description="what to look for, e.g. 'a dog on the beach'")] = None,
        image: Annotated[UploadFile | None, File(description="query image (summed with the text when both)")] = None,
        top_k: Annotated[int, Form(ge=1, le=limits.max_top_k)] = 20,
        tags: Annotated[str | None, Form(description="comma-separated zero-shot tags to restrict to")] = None,
    ) -> schemas.SearchOut:
        """Library images most similar to a text, an image, or both (multipart form)."""
        sniffed = await _sniffed(image, service, "query image") if image is not None and image.filename is not None \
            else None
        hits, took = await run_in_threadpool(service.search, text, sniffed, top_k, tags)
        prefix = _prefix(request)
        return schemas.SearchOut(text=service.clean_text(text), image=sniffed is not None, top_k=top_k,
                                 tags=service.clean_labels(tags, "tags") or None, model=service.model_name,
                                 took_ms=round(took, 2), results=[schemas.hit_out(h, prefix) for h in hits])

    @router.post("/api/classify", response_model=schemas.ClassifyOut, responses=_ERRORS, tags=["classify"])
    async def classify(
        image: Annotated[UploadFile, File(description="the image to classify")],
        labels: Annotated[str, Form(description="comma-separated labels, e.g. 'cat, dog, car'")],
        template: Annotated[str, Form(description="a prompt with {} for the label, or a template set name "
                                                  "such as 'imagenet'")] = DEFAULT_TEMPLATE,
    ) -> schemas.ClassifyOut:
        """Zero-shot probabilities of each label for an uploaded image (nothing is stored)."""
        sniffed = await _sniffed(image, service, "image")
        ranked, templates, took = await run_in_threadpool(service.classify, sniffed, labels, template)
        return schemas.ClassifyOut(labels=[schemas.LabelProbability(label=lb, probability=round(p, 6))
                                           for lb, p in ranked],
                                   templates=templates, model=service.model_name, took_ms=round(took, 2))

    @router.get("/api/images", response_model=schemas.ImageListOut, responses=_ERRORS, tags=["images"])
    def list_images(request: Request, limit: Annotated[int, Query(ge=1, le=limits.max_page_size)] = 50,
                    offset: Annotated[int, Query(ge=0)] = 0) -> schemas.ImageListOut:
        """Indexed images, oldest first, one page at a time."""
        records, next_offset = service.list_images(limit, offset)
        prefix = _prefix(request)
        return schemas.ImageListOut(images=[schemas.image_out(r, service.tags(r.id), prefix) for r in records],
                                    limit=limit, offset=offset, next_offset=next_offset)

    @router.post("/api/images", response_model=schemas.UploadOut, status_code=201, responses=_ERRORS,
                 tags=["images"])
    async def upload_image(
        request: Request,
        response: Response,
        file: Annotated[UploadFile, File(description="an image file; its format is read from its bytes")],
        authorization: Annotated[str | None, Header()] = None,
        x_token: Annotated[str | None, Header()] = None,
    ) -> schemas.UploadOut:
        """Add an image to the library (needs the token when the server has one). 200 when already present."""
        require_token(authorization, x_token)
        sniffed = await _sniffed(file, service, "upload")
        record, created = await run_in_threadpool(service.add, sniffed)
        if not created:
            response.status_code = 200
        return schemas.UploadOut(created=created, image=schemas.image_out(record, service.tags(record.id),
                                                                          _prefix(request)))

    @router.get("/api/images/{image_id}", responses={**_ERRORS, 200: {"content": {"image/*": {}}}},
                response_class=Response, tags=["images"])
    def get_image(image_id: str) -> Response:
        """The original file of an image, by id (its type is sniffed from its bytes)."""
        data, mime = service.image_bytes(parse_image_id(image_id))
        return Response(content=data, media_type=mime, headers=_IMAGE_HEADERS)

    @router.get("/api/images/{image_id}/thumb", responses={**_ERRORS, 200: {"content": {"image/jpeg": {}}}},
                response_class=Response, tags=["images"])
    def get_thumbnail(image_id: str, size: Annotated[int, Query(ge=16, le=limits.max_thumb_size)] = limits.thumb_size,
                      ) -> Response:
        """A JPEG thumbnail whose longest side is at most `size` pixels."""
        data = service.thumbnail(parse_image_id(image_id), size)
        return Response(content=data, media_type="image/jpeg", headers=_IMAGE_HEADERS)

    @router.get("/api/stats", tags=["server"])
    def stats() -> dict[str, Any]:
        """Counts, model, index state, tags, recent failures and this server's limits."""
        return service.stats()

    @router.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def no_such_endpoint(rest: str) -> None:
        raise APIError(404, "not_found", f"no endpoint /api/{rest[:80]}; see /docs")

    return router
