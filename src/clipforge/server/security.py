"""The write token: `Authorization: Bearer T` or `X-Token: T`, compared in constant time.

Reading the library is open to whoever can reach the port (by default only this machine);
changing it needs the token when the server was started with `--token`. The comparison uses
`hmac.compare_digest` on bytes so the response time says nothing about how much of a guessed
token was right. Guessing is slowed: after `MAX_WRONG_TOKENS` wrong tokens from one address within
`WRONG_TOKEN_WINDOW_S`, that address's writes are refused (429) until the window has passed, without
comparing anything (the right token too: otherwise the lock would only confirm a guess); the 429's
`Retry-After` is the seconds until the oldest of those wrong tokens leaves the window. An address is what every
per-address cap counts (`fair.address_key`: an IPv6 address's /64): keyed on the address as sent, a client
given a /64 guessed without end, one address of it after another.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict, deque

from clipforge.server.errors import APIError, retry_after_seconds
from clipforge.server.fair import address_key

__all__ = ["MAX_WRONG_TOKENS", "WRONG_TOKEN_WINDOW_S", "TokenChecker", "token_from_headers"]

MAX_WRONG_TOKENS = 10
"""Wrong tokens one address may send within `WRONG_TOKEN_WINDOW_S` before its writes are refused (429)."""
WRONG_TOKEN_WINDOW_S = 60.0
_TRACKED_ADDRESSES = 10_000  # addresses whose recent wrong tokens are remembered (oldest forgotten first)


def token_from_headers(authorization: str | None, x_token: str | None) -> str | None:
    """The token a client sent, from either header (Bearer scheme is case-insensitive)."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_token:
        return x_token.strip()
    return None


class TokenChecker:
    """Checks a presented token against the configured one; no token configured = open."""

    def __init__(self, token: str | None) -> None:
        if token is not None and not token.strip():
            raise ValueError("the server token must not be empty (omit --token to run without one)")
        if token is not None:
            # HTTP carries header values as bytes that servers read as Latin-1, clients send as UTF-8 or Latin-1:
            # a token of other characters started fine and then matched no client's header (curl's UTF-8 bytes)
            odd = next((i for i, c in enumerate(token.strip(), 1) if not " " <= c <= "~"), None)
            if odd is not None:
                raise ValueError(f"the server token must be printable ASCII, as HTTP headers carry it: its character "
                                 f"{odd} is not (choose letters, digits and punctuation)")
        self._token = token.strip().encode() if token else None
        self._wrong: OrderedDict[str, deque[float]] = OrderedDict()  # address -> times of its recent wrong tokens
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def matches(self, presented: str | None) -> bool:
        if self._token is None:
            return True
        if not presented:
            return False
        return hmac.compare_digest(presented.strip().encode(), self._token)

    def verify(self, presented: str | None, client: str | None) -> bool:
        """`matches`, counted per address: False for a wrong token (counted), a 429 APIError while `client` has sent
        `MAX_WRONG_TOKENS` wrong ones within the window. A missing token is not a guess and is not counted."""
        if self._token is None:
            return True
        key = address_key(client)  # an IPv6 client's /64, as every per-address cap counts it
        now = time.monotonic()
        with self._lock:
            recent = self._wrong.get(key)
            while recent and now - recent[0] > WRONG_TOKEN_WINDOW_S:
                recent.popleft()
            if recent is not None and len(recent) >= MAX_WRONG_TOKENS:
                # the lock lifts when the oldest wrong token leaves the window: that wait, in whole seconds
                # rounded up, is both the detail's number and Retry-After (a rounded-down one came back too early)
                wait = retry_after_seconds(WRONG_TOKEN_WINDOW_S - (now - recent[0]))
                raise APIError(429, "too_many_requests", f"{MAX_WRONG_TOKENS} wrong tokens from your address in "
                               f"{WRONG_TOKEN_WINDOW_S:g} s: wait {wait} s before trying again", retry_after=wait)
        if not presented:
            return False
        if self.matches(presented):
            return True
        with self._lock:
            recent = self._wrong.pop(key, None) or deque()
            recent.append(now)
            self._wrong[key] = recent  # most recent last: the oldest addresses are forgotten first
            while len(self._wrong) > _TRACKED_ADDRESSES:
                self._wrong.popitem(last=False)
        return False

    def require(self, authorization: str | None, x_token: str | None, client: str | None = None) -> None:
        """Raise a 401 APIError unless the headers carry the right token (429 while `client` is guessing)."""
        if self._token is None:
            return
        presented = token_from_headers(authorization, x_token)
        if not self.verify(presented, client):
            if presented is None:
                raise APIError(401, "unauthorized", "this server needs a token for changes: send "
                               "'Authorization: Bearer <token>' or 'X-Token: <token>'",
                               headers={"WWW-Authenticate": "Bearer"})
            raise APIError(401, "unauthorized", "the token is wrong", headers={"WWW-Authenticate": "Bearer"})
