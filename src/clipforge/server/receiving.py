"""How many bytes of request bodies one address, and the whole server, may have in flight at once.

A request's body is held from its first byte until its answer is sent: read whole (`body_parsing.parse_body`),
parsed, its base64 image decoded (three times the body in memory for a JSON image), or spooled to a temporary
file (a multipart part); the per-client caps of the model's queue (`fair.FairGate`, 8 requests) only counted a
request once its body had been read and parsed. One anonymous address sending 30 JSON searches of 20 MB at once
took a server from 520 MB to 2 GB (1.5 GB kept by malloc afterwards) and 8.6 s of CPU before 22 of them got
their 429, and delayed another client's `/healthz` by 4-13 s; the multipart form left 540 MB of temporary files.

Here the bytes of bodies in flight are counted as they arrive (`middleware.BodyLimitMiddleware`), from their
first byte until their answer is sent (or they are dropped: an answer before them, a refusal): an address may hold
a quarter of `ServerLimits.max_receiving_bytes` and the server all of it, and a body that would pass either is
answered 429 (the address's share) or 503 (the server's), both with `Retry-After: 1`, the rest of its bytes read
and dropped (within `request_timeout_s`), so that ordinary clients read the answer. A request holding all that its
address (the server) holds may grow to any size: one body alone is never refused by a share. The first version
counted declared lengths before any byte came: 16 connections of 4 addresses declaring 20 MB and sending a byte
every few seconds held the server's whole share, and every request with a body got 503 for as long as they
trickled (a review); counted as they arrive, holding the share costs the bandwidth and the memory it measures.
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
