"""A multipart body holds one delimiter line per part: any more is refused before python-multipart reads it.

python-multipart finds the end of a part's data with a `find` for the delimiter (`CRLF--boundary`), which
costs ~0.5 ms per MB. But where the delimiter is followed by anything other than CRLF or `--` (so it neither
ends the part nor the body) it steps through the bytes one by one in Python: a 19.5 MB file part made of
`CRLF--boundary-x` repeated cost 1.5 s of CPU on the event loop behind an anonymous `POST /api/search` (a
plain 19.5 MB part: 70 ms), 3.2 s behind the UI's `/gradio_api/upload` (parsed twice: `upload_form`, then
gradio), and four such requests at once held `/healthz` for up to 0.6 s. The cost is per delimiter, ~1.4 µs
each; a well-formed body has one for each part and one to close it.

`DelimiterCount` counts complete delimiters in the chunks as they arrive (`bytes.count` in C, across chunk
edges) so a caller refuses a body once it holds more than its parts can: the REST routes (a few fields, at
most one file; `body_parsing`) and the upload route (`upload_form.MAX_FILES` files).

The same callers hand python-multipart a body from its first boundary line on (`Preamble`: RFC 2046's preamble
and transport padding, which it refused as "Invalid multipart data.", are dropped, the preamble bounded by
`MAX_PREAMBLE_BYTES`), and word its refusals as what was expected where (`parse_error`, `unclosed`, `no_parts`):
"Invalid multipart data." named nothing.
"""

from __future__ import annotations

from python_multipart.multipart import parse_options_header

__all__ = ["MAX_PREAMBLE_BYTES", "DelimiterCount", "MultipartRefused", "Preamble", "no_parts", "parse_error", "unclosed"]


class DelimiterCount:
    """Complete `CRLF--boundary` lines seen so far in a multipart body whose Content-Type is `content_type`; at
    most `max_parts + 1` are let through (a preamble's line included)."""

    def __init__(self, content_type: str | bytes, max_parts: int) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary") or b""
        self.boundary = (
            boundary if isinstance(boundary, bytes) else str(boundary).encode("latin-1", "replace")
        )
        self._delimiter = b"\r\n--" + self.boundary
        self.most = int(max_parts) + 1
        self.seen = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> int:
        """How many bytes of `chunk` may be parsed: all of it, or those before the delimiter that passes the
        bound (the parser reads that far, so a refusal of its own about those parts comes first)."""
        if not self.boundary or not chunk:
            return len(chunk) if self.seen <= self.most else 0
        data = self._tail + chunk
        found = data.count(self._delimiter)
        if self.seen + found <= self.most:
            self.seen += found
            # too short to hold a whole delimiter: none is counted twice
            self._tail = data[1 - len(self._delimiter) :]
            return len(chunk)
        at = -1
        for _ in range(self.most - self.seen + 1):  # the first delimiter past the bound
            at = data.find(self._delimiter, at + 1)
        self.seen = self.most + 1
        return max(0, at - len(self._tail))

    def detail(self, what: str) -> str:
        """The refusal, naming `what` the body is for and the line its data may not hold."""
        shown = self.boundary[:40].decode("latin-1")
        return (
            f"{what} holds more than {self.most:,} multipart delimiter lines (one for each part and one to close "
            f"it; a part's data may not contain '--{shown}')"
        )


MAX_PREAMBLE_BYTES = 8 * 1024
"""Bytes a body may hold before its first boundary line (RFC 2046's preamble; as much as one part's headers may
hold, `upload_form.MAX_HEADER_BYTES`): past it the body is refused, not read to its end looking for one."""
_BLANKS = b" \t"


class MultipartRefused(ValueError):
    """A multipart body is not one: `detail` says what was expected (one line)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _line(boundary: bytes, close: bool = False) -> str:
    """The delimiter line a refusal names: `'--BOUNDARY'` (at most 40 characters of it), or the closing one."""
    shown = boundary[:40].decode("latin-1") + ("..." if len(boundary) > 40 else "")
    return f"'--{shown}{'--' if close else ''}'"


class Preamble:
    """What python-multipart is handed of a multipart body: from its first boundary line on.

    RFC 2046 (5.1.1) lets a body begin with a preamble (lines before the first boundary line, "to be ignored") and
    its boundary lines end with blanks (transport padding, "receivers MUST be able to handle"); python-multipart
    refuses both before the first part ("Invalid multipart data."). `feed` drops them: the first `CRLF--boundary`
    of the body (or `--boundary` at its very start) is found with `bytes.find` across chunks, what precedes it
    (at most `most` bytes) and the blanks after it are not passed on. Line breaks (CR, LF) at the very start are
    skipped first, as python-multipart skipped them: `\n--boundary` opening a body is its first boundary line, not
    a preamble hiding it (its first part was dropped, and the second read as the first). An epilogue after the
    closing line python-multipart ignores itself. `what`: the body as the refusals name it ("the request body",
    "the upload"); an empty boundary is refused (python-multipart's words blamed the body's first line)."""

    def __init__(self, boundary: bytes, what: str, most: int = MAX_PREAMBLE_BYTES) -> None:
        self.boundary, self.what, self.most = boundary, what, int(most)
        self._delimiter = b"\r\n--" + boundary
        self._held = b"\r\n"  # the body as if after a line: a boundary at its start is a boundary line too
        self._offset = -2  # where `_held` begins in the body
        self._state = "preamble"
        self._leading = True  # nothing but line breaks read so far (they are skipped)
        self._blanks = 0
        self.skipped = 0  # bytes of preamble dropped

    def feed(self, chunk: bytes, last: bool = False) -> bytes:
        """The bytes of `chunk` (and of earlier chunks, held back) python-multipart is to read; MultipartRefused
        when no boundary line begins within `most` bytes, or the body (`last`: it ends with `chunk`) has none."""
        if self._state == "parts":
            return chunk
        if not self.boundary:  # RFC 2046: 1 to 70 characters (python-multipart takes up to 256)
            raise MultipartRefused(f"{self.what}: expected a multipart boundary in its Content-Type "
                                   "(boundary=...), not an empty one")
        if self._state == "padding":
            return self._after_padding(chunk)
        if self._leading:  # the line breaks skipped stand before the virtual CRLF held: they count to `most`
            rest = chunk.lstrip(b"\r\n")
            self._offset += len(chunk) - len(rest)
            self._leading, chunk = not rest, rest
        data = self._held + chunk
        # a line found before `end` follows <= `most` bytes (never negative: `find` would count it from the end)
        end = max(0, self.most - self._offset + len(self._delimiter))
        at = data.find(self._delimiter, 0, end)
        if at == -1:
            if len(data) >= end:  # any boundary line from here on would follow a longer preamble: not read on
                raise MultipartRefused(
                    f"{self.what}: expected a part starting with the line {_line(self.boundary)} (the boundary its "
                    f"Content-Type names) within its first {self.most:,} bytes, the most a preamble before it may be"
                )
            keep = max(0, len(data) - len(self._delimiter) + 1)  # a tail too short to hold a whole line is held
            self._offset += keep
            self._held = data[keep:]
            if last:
                size = max(0, self._offset + len(self._held))
                if not size:
                    raise MultipartRefused(
                        f"{self.what} is empty: expected a part starting with the line {_line(self.boundary)} (the "
                        f"boundary its Content-Type names), then the closing multipart delimiter "
                        f"{_line(self.boundary, close=True)}"
                    )
                raise MultipartRefused(
                    f"{self.what}: expected a part starting with the line {_line(self.boundary)} (the boundary its "
                    f"Content-Type names); its {size:,} bytes hold no such line"
                )
            return b""
        self.skipped = max(0, self._offset + at)
        self._held = b""
        self._state = "padding"
        first = data[at + 2 : at + len(self._delimiter)]  # `--boundary`, the line's CRLF (or the virtual one) left
        return first + self._after_padding(data[at + len(self._delimiter) :])

    def _after_padding(self, data: bytes) -> bytes:
        rest = data.lstrip(_BLANKS)
        self._blanks += len(data) - len(rest)
        if self._blanks > self.most:
            raise MultipartRefused(
                f"{self.what}: expected a line break after the boundary line {_line(self.boundary)}, not more than "
                f"{self.most:,} blanks"
            )
        if rest:
            self._state = "parts"
        return rest


def parse_error(what: str, boundary: bytes, part: int, why: str) -> str:
    """python-multipart's refusal `why` (of a body `Preamble` has passed on) as a line saying what was expected
    where: its words name a state of its parser and an offset within one chunk."""
    where = f"part {max(part, 1):,}"
    if why.startswith(("Did not find CR at end of boundary", "Did not find LF at end of boundary")):
        expected = f"a line break (CRLF) right after the boundary line {_line(boundary)} that begins {where}"
    elif why.startswith("Did not find CRLF after boundary padding"):  # a line after part `part`'s data: the next
        expected = f"a line break (CRLF) right after the boundary line {_line(boundary)} that begins part {part + 1:,}"
    elif why.startswith("Did not find - at end of boundary"):
        expected = f"the closing line {_line(boundary, close=True)} after {where}"
    elif why.startswith(("Found invalid character", "Found 0-length header", "Did not find LF character at end "
                         "of header", "Did not find LF at end of headers")):
        expected = f"{where}'s headers as lines 'Name: value' ending in CRLF, then an empty line"
    elif why.startswith("Expected boundary character"):
        expected = f"the line {_line(boundary)} (the boundary its Content-Type names) to begin {where}"
    else:
        return f"{what} is not well-formed multipart/form-data ({where}: {why[:200]})"
    return f"{what}: expected {expected}"


def unclosed(what: str, boundary: bytes, parts: int) -> str:
    """The refusal of a body that ended before its closing boundary line (`parts`: parts begun)."""
    return (f"{what}: expected the closing line {_line(boundary, close=True)} after part {max(parts, 1):,}; the body "
            "ended inside it")


def no_parts(what: str, boundary: bytes, skipped: int = 0) -> str:
    """The refusal of a body whose first boundary line is its closing one (RFC 2046: at least one part);
    `skipped`: bytes before that line, read as a preamble."""
    before = (f" (its {skipped:,} bytes before that line are a preamble: a boundary line begins a line)"
              if skipped else "")
    return (f"{what}: expected a part starting with the line {_line(boundary)} before the closing line "
            f"{_line(boundary, close=True)}; it holds no part{before}")
