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
"""

from __future__ import annotations

from python_multipart.multipart import parse_options_header

__all__ = ["DelimiterCount"]


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
