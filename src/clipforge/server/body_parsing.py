"""Reading a request body as its `bodies.BodyKind` says: JSON, a urlencoded form or multipart, validated by the
model for its media type; every refusal an APIError (415/422/413/400) in the API's one error shape.

Each form is read so that one anonymous body cannot hold the event loop every client shares: a JSON body's
structure is counted before it is parsed (`check_json_items`) and it is parsed in a worker thread, a urlencoded
form is capped and split by the standard library in a worker thread too, and multipart file parts are read under the upload limit
(`uploads.read_upload`). Text is UTF-8 in every form: a multipart field is no longer read as latin-1 when its bytes
are not (`_Utf8Fields`), as a urlencoded form never was. A body is read as it was sent: one in a content coding
(`Content-Encoding: gzip`) is refused (415) before any of it is read, never decompressed.
"""

import base64
import binascii
import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from encodings import normalize_encoding
from encodings.aliases import aliases as _ENCODING_ALIASES
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from python_multipart.exceptions import FormParserError, MultipartParseError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from clipforge.server.bodies import JSON_TYPES, URLENCODED, BodyKind
from clipforge.server.errors import APIError, shown, validation_error
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
            415, "unsupported_media_type", f"send the body as {accepted}, not {shown(media) if media else 'nothing'}"
        )
    _check_not_encoded(request.headers.getlist("content-encoding"))
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
            if name in kind.files:  # a file part (`_Utf8Fields` refused a plain part of this name)
                file_names[name] = str(value.filename or "")
                value = await read_upload(value, limits, kind.files[name])
            elif hasattr(value, "read"):  # a file part of another name: a plain field's, or no field at all
                words = "must be a plain field, not a file" if name in model.model_fields else _not_a_field(model)
                raise validation_error([{"loc": ("body", _name(name)), "msg": words, "type": "value_error"}])
            data[name] = value
    return ParsedBody(_validate(model, data).model_dump(), file_names)


_NOT_DECOMPRESSED = ("request bodies are not decompressed: send the body without a Content-Encoding (or with "
                     "Content-Encoding: identity)")
_CHARSET_HINT = " (a charset belongs in Content-Type, e.g. application/json; charset=utf-8; a form names none)"


# Python's names of text encodings (`utf_8`, `latin_1`, `us_ascii`, ...) and their aliases, less its bytes-to-bytes
# codecs (`zlib`, `base64`, `rot13`): a table, not `codecs.lookup`, which tries an import of `encodings.<name>` for
# each name it does not know (~0.3 ms, for any value a client sends).
_CHARSETS = frozenset({"utf_8_sig"} | {name for pair in _ENCODING_ALIASES.items() for name in pair
                                       if not pair[1].endswith("_codec") and pair[1] != "rot_13"})


def _is_charset(coding: str) -> bool:
    """Whether a Content-Encoding value (lower case) is a charset's name (`utf-8`, `latin-1`, `windows-1252`)."""
    return normalize_encoding(coding) in _CHARSETS


def _check_not_encoded(encodings: list[str]) -> None:
    """415 for a body in a content coding (RFC 9110 §8.4: a server answers 415 to one it does not take), with
    `Accept-Encoding: identity` saying which it takes (§15.5.16), before any of it is read: a gzip JSON body was
    read as its raw bytes ("not valid JSON"), and a plain one labelled gzip was searched. A charset named there
    (`Content-Encoding: UTF-8`, a known mistake that was ignored before) is told where it belongs."""
    codings = [c.strip().lower() for value in encodings for c in value.split(",")]
    refused = [c for c in codings if c and c != "identity"]
    if refused:
        detail = _NOT_DECOMPRESSED + (_CHARSET_HINT if any(_is_charset(c) for c in refused) else "")
        raise APIError(415, "unsupported_media_type", detail, headers={"Accept-Encoding": "identity"})


class _PartRefused(Exception):
    """A multipart part refused by `_Utf8Fields` as it ends: `name`, and what is wrong with it."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(name)
        self.name = name
        self.why = why


# RFC 5987's extended parameter: python-multipart reads a part that has it and no `filename=` as a plain field
_STARRED = re.compile(rb";\s*filename\*\s*=", re.IGNORECASE)


def _no_file_name(disposition: bytes) -> str:
    """Why a part sent in a file field is not a file: its Content-Disposition has no `filename=` parameter ("must be
    a file part" alone left a client that sent `filename*=`, or no name, to guess what makes a part a file)."""
    if _STARRED.search(disposition or b""):
        return ("must be a file part: its Content-Disposition has filename*= but no filename= parameter "
                "(multipart/form-data names a file with filename=)")
    return "must be a file part: its Content-Disposition has no filename= parameter"


class _Utf8Fields(MultiPartParser):
    """starlette's multipart parser (what `Request.form()` runs), but a plain field's bytes must be UTF-8: starlette
    decodes them with the body's charset and falls back to latin-1, so `text=caf\\xe9` searched for "café" where the
    same bytes in a urlencoded form were refused. `fields`: names of the request's text fields, the only parts
    checked (any other is refused by name: "not a field of this request", or "must be a file part" in a file
    field, whatever its bytes; an unknown field of bytes that were not UTF-8 was reported as a bad encoding). `files`:
    names of its file fields, where a part without `filename=` is refused as it ends (`_no_file_name`)."""

    fields: frozenset[str] = frozenset()
    files: frozenset[str] = frozenset()
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
        if part.file is None and part.field_name in self.files:
            raise _PartRefused(part.field_name, _no_file_name(part.content_disposition))
        if part.file is None and part.field_name in self.fields:
            try:
                value = bytes(part.data).decode("utf-8")  # whatever charset the header claims, as urlencoded
            except UnicodeDecodeError:
                raise _PartRefused(part.field_name, "expected UTF-8 text") from None
            self.items.append((part.field_name, value))
            return
        super().on_part_end()


@asynccontextmanager
async def _multipart_form(
    request: Request, fields: frozenset[str], files: frozenset[str], max_fields: int, preamble: Preamble
) -> AsyncIterator[FormData]:
    """`request.form(...)` as starlette reads it (400 for what it refuses, saying what was expected where), every
    text field of `fields` UTF-8 and every part of `files` a file (422 naming it); a body without its closing
    boundary line, or without a part, is refused (starlette kept the parts before the cut: a search cut off inside
    its image part searched by its text alone); the form's files are closed on the way out."""
    async with aclosing(request.stream()) as stream:
        parser = _Utf8Fields(request.headers, stream, max_files=len(files), max_fields=max_fields)
        parser.fields, parser.files = fields - files, files
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
        except _PartRefused as exc:
            raise validation_error(
                [{"loc": ("body", _name(exc.name)), "msg": exc.why, "type": "value_error"}]
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
    return validation_error([{"loc": ("body", _name(name)), "msg": "given more than once", "type": "value_error"}])


def _name(name: Any) -> Any:
    """A field name of the client's as a refusal names it: at most 60 characters (`errors.shown`); a JSON key of
    1,900 characters came back whole."""
    return shown(name, 60) if isinstance(name, str) else name


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
    if not isinstance(data, dict):  # pydantic: "request: Input should be a valid dictionary or instance of SearchJSON"
        raise APIError(422, "invalid_request", f"body: must be a JSON object ({_field_list(model)}), not "
                                               f"{_JSON_KINDS.get(type(data), 'a number')}")
    fields = _validate(model, data).model_dump(exclude_unset=False)
    for name in kind.files:
        if fields.get(name) is not None:
            fields[name] = _decode_base64(fields[name], name)
    return ParsedBody(fields)


_JSON_KINDS = {list: "an array", type(None): "null", str: "a string", bool: "true or false"}


def _field_list(model: type[BaseModel]) -> str:
    return f"its fields are {', '.join(model.model_fields)}"


def _not_a_field(model: type[BaseModel]) -> str:
    """What a body's part or key of a name `model` has no field for is told (a JSON key, a form field, a file part)."""
    return f"not a field of this request; {_field_list(model)}"


def _validate(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error([_named(e, model) for e in exc.errors()]) from None


def _named(error: Any, model: type[BaseModel]) -> dict[str, Any]:
    """pydantic's error, located in the body; an unknown field says which fields there are ("Extra inputs are
    not permitted" alone left `{"query": "fish"}` to guess that the field is `text`)."""
    loc = tuple(error.get("loc", ()))  # its first step is the client's key; the others, pydantic's union branches
    error = {**error, "loc": ("body", *((_name(loc[0]), *loc[1:]) if loc else ()))}
    if error.get("type") == "extra_forbidden":
        error["msg"] = _not_a_field(model)
    return error


def _decode_base64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise validation_error(
            [{"loc": ("body", name), "msg": f"not valid base64 ({exc})", "type": "value_error"}]
        ) from None
