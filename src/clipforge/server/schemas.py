"""Response shapes of the REST API, declared so `/docs` shows clients exactly what they get.

Responses carry image ids, file names and URLs, never absolute server paths: a client
addresses images by id only, and the layout of the server's disk is none of its business.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clipforge.library.dbfile import display_path
from clipforge.server.origins import SAFE_METHODS

__all__ = ["ClassifyOut", "ErrorOut", "HealthOut", "ImageListOut", "ImageOut", "LabelProbability", "SearchHitOut",
           "SearchOut", "StatsOut", "TagOut", "UploadOut", "error_responses", "image_out", "hit_out"]


class ErrorOut(BaseModel):
    """Every error of the API (and only this shape)."""

    model_config = ConfigDict(extra="forbid")
    error: str = Field(description="short stable code, e.g. not_an_image, payload_too_large, unauthorized")
    detail: str = Field(description="what was wrong, for people")


# Why an operation may answer each error status, by the layer that sends it (`app.create_app` stacks them); an
# operation's declared errors are put together from what it does (`error_responses`), so `/openapi.json` lists the
# answers of the layers in front of a route as well as its own: a listing's 429 and a body's 408 were sent and
# never declared, and a generated client had no branch for them.
_ANY_REQUEST = (  # `origins.BrowserOriginMiddleware`, `middleware.BodyLimitMiddleware`, `not_here`
    (400, "a Host name this server does not answer to (`host_not_allowed`), or a Content-Length that is not a number"),
    (405, "method not allowed here (the Allow header lists the allowed ones)"),
    # the body limit holds for every method: a GET declaring a body over it is refused before the route runs
    (413, "a declared Content-Length over the body limit, whatever the method (`payload_too_large`)"),
)
_BROWSER_WRITE = (  # `origins`: a method other than its SAFE_METHODS
    (403, "a page of another site sent it from a browser (`cross_site_request`)"),
)
_BODY = (  # `body_parsing.parse_body`, and `middleware.BodyLimitMiddleware` while the body arrives
    (400, "a multipart body whose framing cannot be read (its boundary, closing line or parts), or an empty image "
          "file (`empty_file`)"),
    (408, "the request body stopped arriving, or came too slowly (`request_timeout`)"),
    (413, "the body, a file in it or an image's pixel count is over its limit"),
    (415, "a body type this route does not take, a compressed body (any Content-Encoding but identity), or a file "
          "that is not an image in an accepted format"),
    (422, "the body is not valid JSON or not a JSON object, a field is missing, mistyped or out of bounds, or an "
          "image cannot be decoded"),
    (429, "this address's request bodies being read or answered are over its share (`too_many_requests`)"),
    (503, "the request bodies this server is reading or answering are over its limit"),
)
_UNDER_API = (  # `request_time.TimeoutMiddleware` (under /api/), and the library's store
    (503, "the request took longer than the time limit (`timeout`), or the library's store cannot serve it"),
)
_NOT_A_READ = (  # `request_time.StoppingMiddleware` (any method but GET and HEAD)
    (503, "the server is stopping (`server_stopping`)"),
)
_RETRY_AFTER = {"description": "whole seconds to wait before asking again", "schema": {"type": "integer", "minimum": 1}}
_ALLOW = {"description": "the methods this path allows", "schema": {"type": "string"}}


def error_responses(method: str, path: str, *own: tuple[int, str], body: bool = False,
                    gate: Any = None) -> dict[int | str, dict[str, Any]]:
    """The error answers `method path` declares (FastAPI's `responses`): the route's `own` (status, why) and those of
    the layers in front of it: every request's (a Host, a 405), a browser write's (any method not in
    `origins.SAFE_METHODS`), a request body's (`body`: the operation reads one), the time limit's under /api/, and
    `gate`'s 429 (the `fair.FairGate` the route takes its turn in, named by its own words) with `Retry-After`."""
    reasons = [*_ANY_REQUEST, *own]
    if method.upper() not in SAFE_METHODS:
        reasons += _BROWSER_WRITE
    if body:
        reasons += _BODY
    if path.startswith("/api/"):
        reasons += _UNDER_API
    if method.upper() not in ("GET", "HEAD"):
        reasons += _NOT_A_READ
    if gate is not None:  # its two caps, as `fair.FairGate._admit` words them: one client's, then one address's
        reasons.append((429, f"too many {gate.what} of this client are running or waiting (at most {gate.per_client}), "
                             f"or {gate.per_host} requests from its address are (`too_many_requests`)"))
    out: dict[int | str, dict[str, Any]] = {}
    for status, why in sorted(reasons, key=lambda reason: reason[0]):
        entry = out.setdefault(status, {"model": ErrorOut, "description": why})
        if why not in entry["description"]:
            entry["description"] += f"; {why}"
    if 405 in out:
        out[405]["headers"] = {"Allow": _ALLOW}
    if 429 in out:  # every 429 says when to come back (`errors.with_retry_after`)
        out[429]["headers"] = {"Retry-After": {**_RETRY_AFTER, "required": True}}
    if 503 in out:  # where the wait is known: a store reconnecting, the server's share of bodies, its stop
        out[503]["headers"] = {"Retry-After": {**_RETRY_AFTER, "required": False}}
    return out


class TagOut(BaseModel):
    label: str
    score: float


class ImageOut(BaseModel):
    id: int
    filename: str
    width: int | None
    height: int | None
    size: int = Field(description="file size in bytes")
    sha256: str | None
    added_at: float = Field(description="Unix time the image was indexed")
    url: str
    thumb_url: str
    tags: list[TagOut] = []


class SearchHitOut(BaseModel):
    id: int
    filename: str
    score: float = Field(description="cosine similarity with the query, in [-1, 1]")
    width: int | None
    height: int | None
    url: str
    thumb_url: str
    duplicates: int = Field(description="other files in the library with the same bytes")
    same_file: int = Field(0, description="other names in the library of this very file (a hard link, a symlinked "
                                          "folder's path): not copies, deleting one deletes the photo")
    tags: list[TagOut] = []
    missing: bool = Field(False, description="the file was deleted since it was indexed (its folder is there, the "
                                             "file is not): `url` and `thumb_url` answer 404 (`clipforge index "
                                             "prune` forgets it); a file whose folder is not there either (an "
                                             "unplugged drive) is not marked")


class SearchOut(BaseModel):
    text: str | None
    image: bool = Field(description="whether a query image was part of the query")
    top_k: int
    tags: list[str] | None
    model: str
    took_ms: float
    results: list[SearchHitOut]
    notice: str | None = Field(None, description="sentences to show beside the results when the query is in a "
                                                 "language the model was not trained for, or longer than the model "
                                                 "reads (what was cut off); null otherwise")
    reason: str | None = Field(None, description="when there are no results, why (an empty library, no photo with "
                                                 "those tags, or nothing matched); null otherwise")


class LabelProbability(BaseModel):
    label: str
    probability: float


class ClassifyOut(BaseModel):
    labels: list[LabelProbability] = Field(description="every label, most probable first; probabilities sum to 1 "
                                                       "under softmax scoring (CLIP), not under sigmoid (SigLIP)")
    templates: list[str] | str
    model: str
    took_ms: float
    scoring: str = Field("softmax", description="softmax: a distribution over the labels offered; sigmoid "
                                                "(SigLIP): each label's probability is independent of the others")
    note: str | None = Field(None, description="what to tell users beside sigmoid scores; null for softmax")
    notice: str | None = Field(None, description="sentences to show beside the probabilities when the labels cannot "
                                                 "be what was meant (one label under softmax, Chinese words separated "
                                                 "by spaces) or are in a language the model was not trained for; "
                                                 "null otherwise")


class ImageListOut(BaseModel):
    images: list[ImageOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page, null on the last page")


class UploadOut(BaseModel):
    created: bool = Field(description="false when this exact file was already in the library")
    image: ImageOut


class StatsOut(BaseModel):
    """Library statistics; more keys may appear as the library grows new features."""

    model_config = ConfigDict(extra="allow")
    library: str = Field(description="the library folder's name (never a full server path)")
    images: dict[str, int] = Field(description="image count by status (ok, failed, ...)")
    model: dict[str, Any] | None
    failures: list[dict[str, str]] = Field(description="recent failures: file name and reason")
    server: dict[str, Any] = Field(description="model, token requirement and the limits of this server")


class HealthOut(BaseModel):
    status: str
    model: str
    model_notice: str | None
    write_token_required: bool


def _urls(prefix: str, image_id: int) -> dict[str, str]:
    return {"url": f"{prefix}/api/images/{image_id}", "thumb_url": f"{prefix}/api/images/{image_id}/thumb"}


def _tags(tags: Any) -> list[TagOut]:
    return [TagOut(label=label, score=round(float(score), 6)) for label, score in tags or []]


def image_out(record: Any, tags: Any, prefix: str = "") -> ImageOut:
    """An ImageRecord as the API shows it."""
    return ImageOut(id=record.id, filename=display_path(os.path.basename(record.path)), width=record.width, height=record.height,
                    size=record.size, sha256=record.sha256, added_at=record.added_at, tags=_tags(tags),
                    **_urls(prefix, record.id))


def hit_out(hit: Any, prefix: str = "", missing: bool = False) -> SearchHitOut:
    """A SearchHit as the API shows it; `missing`: its file is gone (`gone_files`, looked up off the event loop)."""
    return SearchHitOut(id=hit.id, filename=display_path(os.path.basename(hit.path)), score=round(float(hit.score), 6),
                        width=hit.width, height=hit.height, duplicates=len(hit.duplicates), tags=_tags(hit.tags),
                        same_file=len(getattr(hit, "same_file", ()) or ()), missing=missing, **_urls(prefix, hit.id))


def gone_files(hits: Any) -> set[int]:
    """The ids of the hits whose files were deleted since they were indexed (`deleted_since_indexed`, the CLI's own
    rule): their originals and thumbnails answer 404, which a client saw as result 1 with a broken picture and no
    word. Two stats each."""
    from clipforge.library.search import deleted_since_indexed

    return {hit.id for hit in hits if deleted_since_indexed(hit.path)}
