"""How many bytes of originals and thumbnails the answers still being sent may hold, per address and in all.

An original is read whole (`Library.image_bytes`) and sent a megabyte at a time, each piece once the
client has taken the last: a client that asks and then never reads keeps the whole file in the
server's memory until the request's time runs out. The reads gate (`fair`) takes turns over the
reading only, and no count of connections is capped (see `runner`), so one anonymous address opening
40 such requests for a 13 MB photo held 546 MB, and more connections held more, without bound.
Here the bytes of unfinished answers are counted: an address may hold `per_host`, the server `total`,
and an answer that would pass either is refused (429 / 503) before it starts. An address that holds
nothing may always fetch one file (a photo bigger than the share is still served, one at a time). Both
refusals say `Retry-After: 5` (`SENDING_RETRY_S`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from starlette.responses import Response, StreamingResponse

from clipforge.server.errors import APIError

__all__ = ["SENDING_RETRY_S", "ByteShares", "ReleasingResponse", "ReleasingStream", "SendingBytes"]

SENDING_RETRY_S = 5
"""`Retry-After` of the 429 (and the 503) for bytes being sent: they free as the clients read their answers, at
the clients' pace, which the server cannot know; a few seconds lets a reader take a megabyte piece or several."""


class ByteShares:
    """Bytes held by one kind of request's work per client address, against a share of each address (`per_host`)
    and of the server (`total`); changed on the event loop only (no lock). An address that holds nothing may
    always take one request of any size (a photo bigger than the share is still served, or sent, one at a time).
    Subclasses word the two refusals (`mine_words`, `everyone_words`: "..., at most N at once; <advice>")."""

    retry_after: float = SENDING_RETRY_S

    def __init__(self, total: int, per_host: int) -> None:
        self.total = total
        self.per_host = per_host
        self._held: Counter[str] = Counter()

    def mine_words(self, mine: int) -> str:
        raise NotImplementedError

    def everyone_words(self, everyone: int) -> str:
        raise NotImplementedError

    def held(self, host: str | None = None) -> int:
        return sum(self._held.values()) if host is None else self._held[host]

    def take(self, host: str, size: int, own: int = 0) -> None:
        """Count `size` more bytes for `host`, or APIError (429 for the address's share, 503 for the server's).
        `own`: what the same request holds already (a body counted as it arrives); a request holding all its
        address holds (the server holds) may grow to any size, as one request alone always may."""
        mine, everyone = self._held[host], self.held()
        if mine > own and mine + size > self.per_host:
            raise APIError(429, "too_many_requests", self.mine_words(mine), retry_after=self.retry_after)
        if everyone > own and everyone + size > self.total:
            raise APIError(503, "server_busy", self.everyone_words(everyone), retry_after=self.retry_after)
        self._held[host] += size

    def give(self, host: str, size: int) -> None:
        """Give back `size` bytes `take` counted for `host`."""
        self._held[host] -= size
        if self._held[host] <= 0:
            del self._held[host]

    def hold(self, host: str, size: int) -> Callable[[], None]:
        """`take` `size` bytes at once (an address, or a server, holding nothing may always take one request of
        any size); the function returned gives them back (once)."""
        self.take(host, size)
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self.give(host, size)

        return release


class SendingBytes(ByteShares):
    """Bytes held by answers being sent (originals and thumbnails: the module docstring)."""

    def mine_words(self, mine: int) -> str:
        return (f"your address is being sent {mine:,} bytes of images already (at most {self.per_host:,} "
                "at once); read those answers first")

    def everyone_words(self, everyone: int) -> str:
        return (f"this server is sending {everyone:,} bytes of images already (at most {self.total:,} at once); "
                "try again shortly")


class _Releasing:
    """Gives its bytes back when the answer is sent, or abandoned (a client gone, a request timed out)."""

    release: Callable[[], None] = staticmethod(lambda: None)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            self.release()


class ReleasingResponse(_Releasing, Response):
    """A Response whose `release` runs once it is sent: its body goes as one message and then an empty last
    one, which uvicorn takes only once its write buffer is under its low-water mark (it waits so before each
    message), so the bytes are counted until the client has taken them. Released as the body was handed over,
    an unread answer of up to a megabyte (every thumbnail, most originals) sat in its connection's buffer
    uncounted, one per connection, and connections are not capped."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_then_wait(message: Any) -> None:
            if (
                message["type"] == "http.response.body"
                and message.get("body")
                and not message.get("more_body")
            ):
                await send({**message, "more_body": True})
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await super().__call__(scope, receive, send_then_wait)


class ReleasingStream(_Releasing, StreamingResponse):
    """A StreamingResponse whose `release` runs once it is sent or abandoned."""
