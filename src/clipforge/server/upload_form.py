"""What the web UI's upload route (`/gradio_api/upload`) may be sent: file parts named `files`, nothing else.

The page's uploader sends one multipart body of at most 1,000 parts, each `name="files"` with a file name (a
browser names even a pasted image, `blob`), and so does gradio's Python client. gradio's parser takes more, and
each extra was a fault of its own:

* a field without a file name (gradio keeps up to 1,000 in memory and ignores them): the guard counted every
  part as a file against the upload folder's budget, so 2,500 fields were answered 507 "upload space full",
  telling the operator the disk was full when the request was bad;
* a file part under another name: gradio writes it to a temporary file in the upload folder and never reads,
  counts or deletes it (the answer is 200 `[]`): 20 MB a request, past the folder's budget, until the server
  stopped;
* a `files` part without a file name: a `TypeError` inside gradio, 500 and a traceback in the log;
* a body cut off inside a file part: gradio answered 200 `[]` and left the part's temporary file behind, as
  above (a cut-off 20 MB part: 20 MB);
* 1,001 fields or files, a part's headers past python-multipart's bounds: gradio's own answers in plain text.

`UploadForm` runs the parser gradio runs (python-multipart's `MultipartParser`, with gradio's reading of the
`Content-Type` charset and `Content-Disposition`) over the same chunks, each one before gradio gets it, so where
a part starts and what it is named are read exactly as gradio reads them; the first part that breaks a rule
raises `UploadRefused` (a 400 naming the part and the rule, 413 for a bound passed), and gradio never sees that
part's headers, so it opens no file for it. What gradio stored of earlier parts is swept by the guard. The
parser skips part data with a `find` for the delimiter: a 20 MB file costs ~10 ms more here; a body holding more
delimiter lines than 1,001 parts is refused before the parser steps through them (`multipart_bound`). A preamble
before the first boundary line (RFC 2046: to be ignored; gradio's parser refused it in its own words) is dropped
before either parser reads the body, and a body that is not multipart says what was expected where.
"""

from __future__ import annotations

from python_multipart import multipart as _multipart
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from clipforge.server.multipart_bound import DelimiterCount, MultipartRefused, Preamble, no_parts, parse_error

__all__ = ["FIELD", "MAX_FILES", "MAX_HEADER_BYTES", "UploadForm", "UploadRefused"]

FIELD = "files"
"""The one part name gradio's upload route stores."""
MAX_FILES = 1000
"""File parts of one upload request (gradio's own bound; the page sends at most this many per request)."""
MAX_HEADER_BYTES = 8 * 1024
"""Bytes of one part's header names and values (gradio's own bound)."""
_SHOWN = 60  # characters of a client's part name quoted back
_LINE_BYTES = getattr(_multipart, "DEFAULT_MAX_HEADER_SIZE", 4096 + 128)  # python-multipart's, one header line
_HEADER_COUNT = getattr(_multipart, "DEFAULT_MAX_HEADER_COUNT", 8)  # ... and headers of one part


class UploadRefused(Exception):
    """An upload body broke a rule of the module docstring: answer `status` with `code` and `detail`."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _decode(raw: bytes, charset: str) -> str:
    """A part name as gradio decodes it (starlette's `_user_safe_decode`)."""
    try:
        return raw.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return raw.decode("latin-1")


_RULE = f"an upload is up to {MAX_FILES:,} file parts named {FIELD!r}, each with a filename, and nothing else"


class UploadForm:
    """Checks an upload body chunk by chunk (module docstring); `files`: file parts begun so far."""

    def __init__(self, content_type: str) -> None:
        kind, params = parse_options_header(content_type)
        if kind != b"multipart/form-data" or not params.get(b"boundary"):
            raise UploadRefused(400, "bad_upload", "an upload is a multipart/form-data body with a boundary "
                                                   f"(got Content-Type {content_type[:_SHOWN]!r})")
        charset = params.get(b"charset", b"utf-8")
        self.charset = charset.decode("latin-1") if isinstance(charset, bytes) else str(charset)
        self.files = 0
        self._parts = 0
        self._header_bytes = 0
        self._field = self._value = b""
        self._disposition: bytes | None = None
        self.ended = False
        callbacks = {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                     "on_header_value": self._header_value, "on_header_end": self._header_end,
                     "on_headers_finished": self._headers_finished, "on_end": self._end}
        self._delimiters = DelimiterCount(content_type, MAX_FILES + 1)  # room for the file that is one too many
        self._preamble = Preamble(self._delimiters.boundary, "the upload")  # gradio is handed the body after it
        try:
            self._parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
        except (FormParserError, ValueError) as exc:  # a boundary over 256 bytes: a 500 inside gradio
            raise UploadRefused(400, "bad_upload", f"the multipart boundary is refused: {exc}") from None

    def feed(self, data: bytes, last: bool = False) -> bytes:
        """Read the next chunk of the body (`last`: the body ends with it); `UploadRefused` at the first part
        that breaks a rule, or at the end of a body that stopped before its closing delimiter. Returns what gradio
        is to be handed of it: the body from its first boundary line on (RFC 2046's preamble is dropped, as its
        parser refuses one: `multipart_bound.Preamble`)."""
        allowed = self._delimiters.feed(data)
        cut = allowed < len(data)
        try:
            passed = self._preamble.feed(data[:allowed] if cut else data, last and not cut)
        except MultipartRefused as exc:
            raise UploadRefused(400, "bad_upload", exc.detail) from None
        try:
            if passed:
                self._parser.write(passed)
        except MultipartParseError as exc:
            why = str(exc)
            where = f"part {max(self._parts, 1)} of the upload"
            if why.startswith("Maximum header size"):  # python-multipart's own bounds on a part's headers
                raise UploadRefused(413, "bad_upload", f"{where} has a header line of more than "
                                                       f"{_LINE_BYTES:,} bytes") from None
            if why.startswith("Maximum header count"):
                raise UploadRefused(413, "bad_upload", f"{where} has more than {_HEADER_COUNT} headers") from None
            raise UploadRefused(400, "bad_upload", parse_error("the upload", self._delimiters.boundary, self._parts,
                                                               why)) from None
        if cut:  # python-multipart steps through a delimiter that ends nothing byte by byte
            raise UploadRefused(400, "bad_upload", self._delimiters.detail("the upload"))
        if last and not self.ended:
            raise UploadRefused(400, "bad_upload", f"the upload ended after {self._parts:,} part(s) without the "
                                                   "closing multipart delimiter (a cut-off body)")
        if last and not self._parts:
            raise UploadRefused(400, "bad_upload", no_parts("the upload", self._delimiters.boundary,
                                                            self._preamble.skipped))
        return passed

    def _end(self) -> None:
        self.ended = True

    # python-multipart's callbacks, read as gradio's `GradioMultiPartParser` reads them
    def _part_begin(self) -> None:
        self._parts += 1
        self._header_bytes = 0
        self._disposition = None

    def _count(self, data: bytes, start: int, end: int) -> bytes:
        self._header_bytes += end - start
        if self._header_bytes > MAX_HEADER_BYTES:
            raise UploadRefused(413, "bad_upload", f"part {self._parts} of the upload has more than "
                                                   f"{MAX_HEADER_BYTES:,} bytes of headers")
        return data[start:end]

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += self._count(data, start, end)

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += self._count(data, start, end)

    def _header_end(self) -> None:
        if self._field.lower() == b"content-disposition":  # the last one counts, as in gradio
            self._disposition = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition or b"")
        where = f"part {self._parts} of the upload"
        if b"name" not in options:
            raise UploadRefused(400, "bad_upload", f"{where} has no Content-Disposition name; {_RULE}")
        name = _decode(options[b"name"], self.charset)
        if name != FIELD:
            raise UploadRefused(400, "bad_upload", f"{where} is named {name[:_SHOWN]!r}; {_RULE}")
        if b"filename" not in options:
            raise UploadRefused(400, "bad_upload", f"{where} has no filename (a form field, not a file); {_RULE}")
        self.files += 1
        if self.files > MAX_FILES:
            raise UploadRefused(413, "too_many_files", f"an upload takes at most {MAX_FILES:,} files (send more in "
                                                       f"another request); {where} is file {self.files:,}")
