"""How many bytes of request bodies one address, and the whole server, may have in flight at once.

A request's body is held from its first byte until its answer is sent: read whole (`body_parsing.parse_body`),
parsed, its base64 image decoded (three times the body in memory for a JSON image), or spooled to a temporary
file (a multipart part); the per-client caps of the model's queue (`fair.FairGate`, 8 requests) only counted a
request once its body had been read and parsed. One anonymous address sending 30 JSON searches of 20 MB at once
took a server from 520 MB to 2 GB (1.5 GB kept by malloc afterwards) and 8.6 s of CPU before 22 of them got
their 429, and delayed another client's `/healthz` by 4-13 s; the multipart form left 540 MB of temporary files.

Here the bytes of bodies in flight are counted before any of them is read (`middleware.BodyLimitMiddleware`):
the declared Content-Length, or the whole body limit for a chunked one, whose length is not known ahead. An
address may hold a quarter of `ServerLimits.max_receiving_bytes` and the server all of it; one more body is
answered at once, 429 for the address's share, 503 for the server's, both with `Retry-After: 1` (a place frees
when a request is answered), its bytes read and dropped first, as for a 413, so that ordinary clients read the
answer. An address that holds nothing may always send one body up to the limit.
"""

from __future__ import annotations

from clipforge.server.errors import RETRY_SOON_S
from clipforge.server.sending import ByteShares

__all__ = ["ReceivingBytes"]


class ReceivingBytes(ByteShares):
    """Bytes of request bodies being received or worked on, per client address (the module docstring)."""

    retry_after: float = RETRY_SOON_S

    def mine_words(self, mine: int) -> str:
        return (f"your address has {mine:,} bytes of requests still being read or answered (at most "
                f"{self.per_host:,} at once); wait for their answers")

    def everyone_words(self, everyone: int) -> str:
        return (f"this server is reading or answering {everyone:,} bytes of requests already (at most "
                f"{self.total:,} at once); try again shortly")
