"""The write token: `Authorization: Bearer T` or `X-Token: T`, compared in constant time.

Reading the library is open to whoever can reach the port (by default only this machine);
changing it needs the token when the server was started with `--token`. The comparison uses
`hmac.compare_digest` on bytes so the response time says nothing about how much of a guessed
token was right.
"""

from __future__ import annotations

import hmac

from clipforge.server.errors import APIError

__all__ = ["TokenChecker", "token_from_headers"]


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
        self._token = token.strip().encode() if token else None

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def matches(self, presented: str | None) -> bool:
        if self._token is None:
            return True
        if not presented:
            return False
        return hmac.compare_digest(presented.strip().encode(), self._token)

    def require(self, authorization: str | None, x_token: str | None) -> None:
        """Raise a 401 APIError unless the headers carry the right token."""
        if self._token is None:
            return
        presented = token_from_headers(authorization, x_token)
        if presented is None:
            raise APIError(401, "unauthorized", "this server needs a token for changes: send "
                           "'Authorization: Bearer <token>' or 'X-Token: <token>'",
                           headers={"WWW-Authenticate": "Bearer"})
        if not self.matches(presented):
            raise APIError(401, "unauthorized", "the token is wrong", headers={"WWW-Authenticate": "Bearer"})
