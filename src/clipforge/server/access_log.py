"""What a client's request may put into the server's access log.

uvicorn writes one line per request holding the client's address, method and whole request
target. Everything in it is the client's choice, so before a line is written (a filter on the
`uvicorn.access` logger, installed by `runner.build_server`):

- credentials in the query (or `;` parameters) are masked: `?token=***` (`redact_query`);
- every character that is not printable is written as an escape (`\\x0d`, `\\x1b`, `\\u202e`), so a
  client cannot end a line and forge the next one, clear the terminal that tails the log, or
  reverse what follows;
- each field is cut to `MAX_FIELD_CHARS` characters with a marker saying how much was cut: a request
  line near h11's 16 KiB head limit made every logged line 15 kB long, as fast as a client could
  send requests, so one anonymous client filled the disk or drowned the lines that matter.

A request whose client closed its connection before its answer (an aborted upload, a client's timeout) is sent
nothing (`middleware.BodyLimitMiddleware`), and uvicorn writes a line only for an answer it sends: `log_client_gone`
writes the request's one line, status 499 as nginx names it (`... "POST /api/images HTTP/1.1" 499 Client Closed
Request`; `show_client_gone` gives uvicorn's formatter the name). Before, the app handed uvicorn a 400 for it,
dropped unlogged, so an aborted upload left no trace; a server that logs what it is handed logged a 400.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

__all__ = [
    "CLIENT_GONE_PHRASE",
    "CLIENT_GONE_STATUS",
    "MAX_FIELD_CHARS",
    "AccessLogFilter",
    "is_credential_name",
    "log_client_gone",
    "log_safe",
    "redact_query",
    "show_client_gone",
]

MAX_FIELD_CHARS = 256
CLIENT_GONE_STATUS = 499
"""The status an access-log line gives a request whose client left before its answer (nginx's; no HTTP status is
sent: there is nobody to send it to)."""
CLIENT_GONE_PHRASE = "Client Closed Request"
ACCESS_LOGGER = "uvicorn.access"

_CREDENTIAL_NAMES = frozenset(
    {
        "token",
        "key",
        "apikey",
        "api_key",
        "password",
        "passwd",
        "pwd",
        "pass",
        "secret",
        "auth",
        "authorization",
        "access_token",
        "x_token",
        "x_api_key",
        "credential",
        "credentials",
        "session",
        "sessionid",
        "sig",
        "signature",
        "jwt",
        "bearer",
    }
)
_CREDENTIAL_SUFFIXES = (
    "_token",
    "_key",
    "_secret",
    "_password",
    "_passwd",
    "_auth",
    "_credential",
    "_signature",
)
# `;` parameters are found whether uvicorn logs them as sent or quoted (`/x%3Btoken%3DT`: it quotes the path).
_QUERY = re.compile(r'(\?|;|%3[bB])([^\s"]*)')
_PARAM = re.compile(r"(^|[&;?])([^=&;?#]*)=([^&;?#]*)")
_SEPARATORS = re.compile(r"([&;])")


def is_credential_name(name: str) -> bool:
    """`token`, `api-key`, `Authorization`, `client_secret`, ... (case and `-`/`_` ignored); not `monkey`."""
    normal = name.strip().lower().replace("-", "_")
    return normal in _CREDENTIAL_NAMES or normal.endswith(_CREDENTIAL_SUFFIXES) or normal.startswith("auth_")


def _decoded(query: str) -> str:
    for _ in range(3):  # `%2574oken` is `%74oken` is `token`
        plain = unquote(query)
        if plain == query:
            break
        query = plain
    return query


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _printable(text: str) -> str:
    return text if text.isprintable() else "".join(c if c.isprintable() else _escape(c) for c in text)


def _masked_piece(piece: str) -> str:
    """One parameter as sent (split at the separators the client wrote), decoded, with everything after the
    first credential-like name masked. Decoding first and splitting after cut a secret at the `&`, `;` or `#`
    it held escaped: `?password=p%26ss` was logged `password=***&ss`."""
    plain = _decoded(piece)
    for match in _PARAM.finditer(plain):
        if is_credential_name(match.group(2)):
            return plain[: match.start(3)] + "***"
    return plain


def redact_query(text: str) -> str:
    """`/x?token=abc&a=1` -> `/x?token=***&a=1` (for logs). Each parameter (and `;` parameter) is
    percent-decoded first, so `?%74oken=` or `?tok%65n=` is masked too, and every credential-like
    name is (`is_credential_name`), its whole value as sent; what is not printable (what the decoding
    yields too) is escaped."""

    def mask(match: re.Match[str]) -> str:
        pieces = _SEPARATORS.split(match.group(2))
        return match.group(1) + _printable(
            "".join(p if _SEPARATORS.fullmatch(p) else _masked_piece(p) for p in pieces)
        )

    return _QUERY.sub(mask, text)


def log_safe(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """`text` (a client's field) as one printable piece of a log line of at most about `limit` characters."""
    text = _printable(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[+{len(text) - limit:,} characters]"


class AccessLogFilter(logging.Filter):
    """Masks credentials in, escapes and cuts every client-chosen field of uvicorn's access-log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(log_safe(redact_query(a)) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = log_safe(redact_query(record.msg), 4 * MAX_FIELD_CHARS)
        return True


def log_client_gone(scope: Mapping[str, Any]) -> None:
    """The access-log line of a request whose client closed its connection before its answer: uvicorn's own shape
    (`client - "METHOD path HTTP/v" status`) with `CLIENT_GONE_STATUS`, through the same filter as every line, and
    only where uvicorn would write one (a logger with handlers)."""
    access = logging.getLogger(ACCESS_LOGGER)
    if not access.hasHandlers():
        return
    client = scope.get("client")
    address = f"{client[0]}:{client[1]}" if client else ""
    target = quote(str(scope.get("path", "")))  # as uvicorn writes it (`uvicorn.protocols.utils`)
    query = bytes(scope.get("query_string", b""))
    if query:
        target += "?" + query.decode("latin-1")
    access.info('%s - "%s %s HTTP/%s" %d', address, scope.get("method", ""), target,
                scope.get("http_version", "1.1"), CLIENT_GONE_STATUS)


def show_client_gone(logger: logging.Logger) -> None:
    """Have each uvicorn access formatter of `logger`'s handlers write `499 Client Closed Request`, not a bare
    `499 ` (Python's `HTTPStatus` has no 499, so uvicorn finds no phrase for it)."""
    for handler in logger.handlers:
        formatter = handler.formatter
        plain = getattr(formatter, "get_status_code", None)
        if plain is None or getattr(plain, "names_client_gone", False):
            continue

        def status_code(code: int, plain: Any = plain) -> str:
            text = str(plain(code))
            if code != CLIENT_GONE_STATUS:
                return text
            return text.replace(f"{code} ", f"{code} {CLIENT_GONE_PHRASE}", 1)

        status_code.names_client_gone = True  # type: ignore[attr-defined]
        formatter.get_status_code = status_code  # type: ignore[union-attr]
