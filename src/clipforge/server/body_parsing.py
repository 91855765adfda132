"""Reading a request body as its `bodies.BodyKind` says: JSON, a urlencoded form or multipart, validated by the
model for its media type; every refusal an APIError (415/422/413/400) in the API's one error shape.

Each form is read so that one anonymous body cannot hold the event loop every client shares: a JSON body's
structure is counted before it is parsed (`check_json_items`) and it is parsed in a worker thread, a urlencoded
form is capped and split by the standard library in a worker thread too, and multipart file parts are read under the upload limit
(`uploads.read_upload`). Text is UTF-8 in every form: a multipart field is no longer read as latin-1 when its bytes
are not (`_Utf8Fields`), as a urlencoded form never was.
"""

import base64
import binascii
import json
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from python_multipart.exceptions import FormParserError, MultipartParseError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from clipforge.server.bodies import JSON_TYPES, URLENCODED, BodyKind
from clipforge.server.errors import APIError, validation_error
from clipforge.server.limits import ServerLimits
from clipforge.server.multipart_bound import (
    DelimiterCount,
    MultipartRefused,
    Preamble,
    no_parts,
    parse_error,
    unclosed,
)
from clipforge.server.uploads import read_upload

__all__ = ["ParsedBody", "check_json_items", "parse_body"]


@dataclass(frozen=True)
class ParsedBody:
    """A validated body: its fields, with file and base64 fields as bytes, and the file name the client
    gave each file part (as sent: attacker input, see `uploads.client_file_name`; none for JSON bodies)."""

    fields: dict[str, Any]
    file_names: dict[str, str] = field(default_factory=dict)


async def parse_body(request: Any, kind: BodyKind, limits: ServerLimits) -> ParsedBody:
    """Read and validate the body of `request` as `kind` says; 415/422/413/400 as an APIError."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    model = kind.models.get(media)
    if model is None:
        accepted = ", ".join(kind.models)
        raise APIError(
            415, "unsupported_media_type", f"send the body as {accepted}, not {media or 'nothing'}"
        )
    if media in JSON_TYPES:
        raw = await request.body()
        check_json_items(raw, limits.max_json_items)
        # Parsing and validating a body of up to 20 MB takes tens of milliseconds: in a thread, so the
        # event loop goes on answering others meanwhile.
        return await run_in_threadpool(_parse_json, raw, model, kind)
    if media == URLENCODED:
        raw = await _read_capped(request, limits.form_overhead_bytes)
        # `parse_qsl` unquotes in Python (256 KB of %-escapes: 40 ms): in a thread, as a JSON body is parsed
        return await run_in_threadpool(_parse_form, raw, model, kind)
    # python-multipart steps through a delimiter that ends nothing byte by byte: bounded by the parts (`multipart_bound`)
    bound = DelimiterCount(request.headers.get("content-type", ""), len(model.model_fields) + len(kind.files))
    # ... and is handed the body from its first boundary line on: a preamble is no error (`multipart_bound`)
    preamble = Preamble(bound.boundary, _BODY)
    form_request = Request(request.scope, _counted(request.receive, bound, preamble))
    async with _multipart_form(
        form_request, frozenset(model.model_fields), frozenset(kind.files), len(model.model_fields), preamble
    ) as form:
        data, file_names = {}, {}
        for name, value in form.multi_items():
            if name in data:
                raise _given_twice(name)
            is_file = hasattr(value, "read")
            if name in kind.files:
                if not is_file:
                    raise validation_error(
                        [{"loc": ("body", name), "msg": "must be a file part", "type": "value_error"}]
                    )
                file_names[name] = str(value.filename or "")
                value = await read_upload(value, limits, kind.files[name])
            elif is_file:
                raise validation_error(
                    [
                        {
                            "loc": ("body", name),
                            "msg": "must be a plain field, not a file",
                            "type": "value_error",
                        }
                    ]
                )
            data[name] = value
    return ParsedBody(_validate(model, data).model_dump(), file_names)


class _NotUtf8(Exception):
    """A plain multipart field (`name`) whose bytes are not UTF-8."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _Utf8Fields(MultiPartParser):
    """starlette's multipart parser (what `Request.form()` runs), but a plain field's bytes must be UTF-8: starlette
    decodes them with the body's charset and falls back to latin-1, so `text=caf\\xe9` searched for "café" where the
    same bytes in a urlencoded form were refused. `fields`: names of the request's text fields, the only parts
    checked (any other is refused by name: "not a field of this request", or "must be a file part" in a file
    field, whatever its bytes; an unknown field of bytes that were not UTF-8 was reported as a bad encoding)."""

    fields: frozenset[str] = frozenset()
    parts = 0  # parts begun, for the refusals that name one
    ended = False  # the closing boundary line was read

    def on_part_begin(self) -> None:
        self.parts += 1
        super().on_part_begin()

    def on_end(self) -> None:
        self.ended = True
        super().on_end()

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None and part.field_name in self.fields:
            try:
                value = bytes(part.data).decode("utf-8")  # whatever charset the header claims, as urlencoded
            except UnicodeDecodeError:
                raise _NotUtf8(part.field_name) from None
            self.items.append((part.field_name, value))
            return
        super().on_part_end()


@asynccontextmanager
async def _multipart_form(
    request: Request, fields: frozenset[str], files: frozenset[str], max_fields: int, preamble: Preamble
) -> AsyncIterator[FormData]:
    """`request.form(...)` as starlette reads it (400 for what it refuses, saying what was expected where), every
    text field of `fields` UTF-8 (422 naming it); a body without its closing boundary line, or without a part, is
    refused (starlette kept the parts before the cut: a search cut off inside its image part searched by its text
    alone); the form's files are closed on the way out."""
    async with aclosing(request.stream()) as stream:
        parser = _Utf8Fields(request.headers, stream, max_files=len(files), max_fields=max_fields)
        parser.fields = fields - files
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            why = exc.__cause__
            if isinstance(why, MultipartParseError):  # python-multipart's words name a state of its parser
                raise APIError(400, "bad_request", parse_error(_BODY, preamble.boundary, parser.parts, str(why))) from None
            if isinstance(why, FormParserError):  # its parser refused the boundary itself (over 256 characters)
                raise APIError(400, "bad_request", f"{_BODY}: the multipart boundary its Content-Type names is "
                                                   f"refused ({str(why)[:200]})") from None
            raise APIError(400, "bad_request", exc.message) from None
        except _NotUtf8 as exc:
            raise validation_error(
                [{"loc": ("body", exc.name[:60]), "msg": "expected UTF-8 text", "type": "value_error"}]
            ) from None
    try:
        if not parser.ended:
            raise APIError(400, "bad_request", unclosed(_BODY, preamble.boundary, parser.parts))
        if not parser.parts:
            raise APIError(400, "bad_request", no_parts(_BODY, preamble.boundary, preamble.skipped))
        yield form
    finally:
        await form.close()


def _counted(receive: Any, bound: DelimiterCount, preamble: Preamble) -> Any:
    """`receive`, refusing (400) a multipart body once it holds more delimiter lines than its parts can: the
    parser is given the body up to that line first, so its own refusal of those parts (too many fields) wins.
    What comes before the first boundary line is not passed on (`preamble`); a body with none is refused."""
    refused = False

    async def counted() -> Any:
        nonlocal refused
        if refused:
            raise APIError(400, "bad_request", bound.detail("the request body"))
        message = await receive()
        if message.get("type") != "http.request":
            return message
        body = message.get("body", b"")
        allowed = bound.feed(body)
        last = allowed == len(body) and not message.get("more_body", False)
        try:
            framed = preamble.feed(body[:allowed] if allowed < len(body) else body, last)
        except MultipartRefused as exc:
            raise APIError(400, "bad_request", exc.detail) from None
        if allowed < len(body):
            refused = True
            return {**message, "body": framed, "more_body": True}
        return {**message, "body": framed}

    return counted


_BODY = "the request body"  # as the refusals of a multipart body name it


async def _read_capped(request: Any, cap: int) -> bytes:
    """The whole body, or 413 as soon as it is known to pass `cap` (declared or counted)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _form_too_large(cap)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise _form_too_large(cap)
    return bytes(body)


def _form_too_large(cap: int) -> APIError:
    return APIError(
        413,
        "body_too_large",
        f"a form body (application/x-www-form-urlencoded) holds at most {cap:,} "
        "bytes: send an image as multipart/form-data or base64 in JSON",
    )


def _urlencoded_items(raw: bytes, max_fields: int) -> list[tuple[str, str]]:
    """`a=1&b=2` -> pairs, split by the standard library (in a worker thread). python-multipart's form parser (what
    `request.form()` runs) stepped through 20 MB of `&` a byte at a time on the event loop (5.3 s of CPU: every
    other client waited), and empty fields never counted towards its field limit; `parse_qsl` counts every
    separator before splitting."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise validation_error(
            [{"loc": ("body",), "msg": "a form body must be UTF-8 text", "type": "value_error"}]
        ) from None
    try:
        return parse_qsl(
            text, keep_blank_values=True, max_num_fields=max_fields, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise validation_error(
            [{"loc": ("body",), "msg": "a form field's %-escapes are not UTF-8", "type": "value_error"}]
        ) from None
    except ValueError:
        raise validation_error(
            [{"loc": ("body",), "msg": f"at most {max_fields} fields are accepted", "type": "value_error"}]
        ) from None


def _parse_form(raw: bytes, model: type[BaseModel], kind: BodyKind) -> ParsedBody:
    return _form_fields(_urlencoded_items(raw, len(model.model_fields)), model, kind)


def _form_fields(items: list[tuple[str, str]], model: type[BaseModel], kind: BodyKind) -> ParsedBody:
    data: dict[str, str] = {}
    for name, value in items:
        if name in data:
            raise _given_twice(name)
        if name in kind.files:
            raise validation_error(
                [
                    {
                        "loc": ("body", name),
                        "msg": "must be a file part (send multipart/form-data)",
                        "type": "value_error",
                    }
                ]
            )
        data[name] = value
    return ParsedBody(_validate(model, data).model_dump())


def _given_twice(name: str) -> APIError:
    return validation_error([{"loc": ("body", name), "msg": "given more than once", "type": "value_error"}])


def check_json_items(raw: bytes, limit: int) -> None:
    """Refuse (413) a JSON body with more than `limit` structural characters before parsing it.

    Counting five bytes with `bytes.count` takes milliseconds on 20 MB, whereas `json.loads` and
    validation of a million keys or list items took seconds (holding the GIL, so not even a
    thread helps). Strings (a base64 image) are a few structural characters however long.
    """
    items = sum(raw.count(char) for char in (b'"', b",", b":", b"[", b"{"))
    if items > limit:
        raise APIError(
            413,
            "too_complex",
            f"the JSON body has {items:,} quotes, commas, colons and brackets; at "
            f"most {limit:,} are accepted (a search or classify needs a few hundred)",
        )


def _json_error(exc: BaseException) -> str:
    """Why `json.loads` refused a body, for its client: Python's words for a deep nest ("maximum recursion depth
    exceeded while decoding...") and a long number ("...; use sys.set_int_max_str_digits() to increase the
    limit") spoke of the server's interpreter, and the second told the client to change it."""
    if isinstance(exc, RecursionError):
        return "arrays or objects nested too deeply"
    if "integer string conversion" in str(exc):
        return f"a number with more than {sys.get_int_max_str_digits():,} digits"
    return str(exc)


def _parse_json(raw: bytes, model: type[BaseModel], kind: BodyKind) -> ParsedBody:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise APIError(422, "invalid_request", f"body: not valid JSON ({_json_error(exc)})"[:300]) from None
    fields = _validate(model, data).model_dump(exclude_unset=False)
    for name in kind.files:
        if fields.get(name) is not None:
            fields[name] = _decode_base64(fields[name], name)
    return ParsedBody(fields)


def _validate(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error([_named(e, model) for e in exc.errors()]) from None


def _named(error: Any, model: type[BaseModel]) -> dict[str, Any]:
    """pydantic's error, located in the body; an unknown field says which fields there are ("Extra inputs are
    not permitted" alone left `{"query": "fish"}` to guess that the field is `text`)."""
    error = {**error, "loc": ("body", *error.get("loc", ()))}
    if error.get("type") == "extra_forbidden":
        error["msg"] = f"not a field of this request; its fields are {', '.join(model.model_fields)}"
    return error


def _decode_base64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise validation_error(
            [{"loc": ("body", name), "msg": f"not valid base64 ({exc})", "type": "value_error"}]
        ) from None
