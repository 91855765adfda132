"""Requests a browser was made to send: a foreign name in `Host` (DNS rebinding), a write from another site.

A server on 127.0.0.1 is reachable by every web page its user opens, through the user's browser:

- **Cross-site writes.** A form post or a `fetch` with no custom header is a "simple request": the browser
  sends it to any origin without asking first, and only hides the answer. Without a token, any page could
  add photos to the library (`POST /api/images`) or queue work. A request that is not a plain read (any
  method but GET, HEAD, OPTIONS) and that a browser marks as coming from another site (`Sec-Fetch-Site`
  `cross-site` or `same-site`; from browsers without it, an `Origin` whose host and port are not the
  `Host` it was sent to, or `null`) is refused with 403; clients that are not browsers send neither
  header and are not affected.
- **DNS rebinding.** A page at `attacker.example` can point its own name at 127.0.0.1 and then read this
  server as its own origin: the browser's same-origin rule no longer protects anything, but the request
  still says `Host: attacker.example`. A request whose `Host` is a dotted name this server was not told
  to answer to is refused with 400. Addresses (`127.0.0.1`, `[::1]`, a LAN address), `localhost` and
  single-label names (`myhost`: resolved by this network, not by whoever runs a web page) are always
  answered, and so are this machine's own host name and its mDNS name (`myhost.local`); other names are
  added with `--allowed-host NAME` (a reverse proxy's public name, a LAN DNS name), or `--allowed-host '*'`
  to answer any.

Every answer also says it may not be framed by another page (`X-Frame-Options`, CSP `frame-ancestors`):
clicks on an invisible framed UI would otherwise be the attacker's.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from clipforge.server.middleware import ASGIApp, Message, Receive, Scope, Send, send_json

__all__ = ["BrowserOriginMiddleware", "HostNames", "split_host"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_FRAMING = [(b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'")]


def split_host(value: str) -> tuple[str, int | None]:
    """`Host`'s (name, port): ``"Example.COM:7860"`` -> ("example.com", 7860), ``"[::1]"`` -> ("::1", None);
    a default port (80, 443) reads as None, as an origin's does. A port that is not a number reads as -1."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port_text = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    port = (int(port_text) if port_text.isdigit() else -1) if port_text else None
    return name.rstrip("."), (None if port in (80, 443) else port)


def _origin(value: str) -> tuple[str, int | None] | None:
    """An `Origin` header's (host, port) as `split_host` gives them; None for `null` or nonsense."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.scheme not in _DEFAULT_PORTS:
        return None
    return parts.hostname.rstrip("."), (None if port in (None, _DEFAULT_PORTS[parts.scheme], 80, 443) else port)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostNames:
    """The names this server answers to (see the module docstring): addresses, localhost, single-label
    names, this machine's host name, and `allowed` ("*" = any)."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        names = {name.strip().lower().rstrip(".") for name in allowed if name.strip()}
        self.any = "*" in names
        self.listed = names - {"*"}
        own = socket.gethostname().lower().rstrip(".")
        self._own = {own, f"{own.split('.')[0]}.local"}  # its name, and as mDNS spells it on the LAN

    def answers(self, name: str) -> bool:
        return (self.any or not name or _is_address(name) or "." not in name or name == "localhost"
                or name.endswith(".localhost") or name in self.listed or name in self._own)


class BrowserOriginMiddleware:
    """400 for a `Host` this server does not answer to, 403 for a cross-site write, no framing (module doc)."""

    def __init__(self, app: ASGIApp, names: HostNames) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", ())}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, code, detail = refusal
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await send_json(send, status, code, detail)
            return

        async def framed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {key.lower() for key, _ in message.get("headers", ())}
                extra = [(key, value) for key, value in _FRAMING if key not in present]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, framed_send if scope["type"] == "http" else send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, str] | None:
        host_header = headers.get("host")
        host = split_host(host_header) if host_header is not None else None
        if host is not None and not self.names.answers(host[0]):
            shown = host_header[:100]  # type: ignore[index]
            return (400, "host_not_allowed",
                    f"this server does not answer to the name {shown!r} (a web page that points its own name at this "
                    f"server's address could read it): open it by its address or localhost, or start it with "
                    f"--allowed-host {host[0][:100]}")
        if scope["type"] == "http" and scope.get("method", "GET").upper() in SAFE_METHODS:
            return None
        site = headers.get("sec-fetch-site", "").strip().lower()
        origin_header = headers.get("origin")
        if site in ("cross-site", "same-site"):
            return self._cross_site(origin_header or f"a {site} page")
        if site in ("same-origin", "none"):  # the browser's own word (a proxy may have rewritten `Host`)
            return None
        if origin_header is None:
            return None  # not sent by a browser's page (curl, scripts, the API clients)
        origin = _origin(origin_header)
        if origin is not None and (origin == host or (origin[0] in self.names.listed or self.names.any)):
            return None
        return self._cross_site(origin_header)

    @staticmethod
    def _cross_site(origin: str) -> tuple[int, str, str]:
        return (403, "cross_site_request",
                f"a page of another site ({origin[:100]}) may not send this request: only this server's own pages "
                "and clients that are not browsers may change or query it")
