"""Model work (search, classify, add) takes turns fairly between clients, and stops when abandoned.

One CPU model serves everyone, so a request's wait is the work queued before it. With a plain
lock (or gradio's first-come queue), one client that sends 30 classify events makes everyone
else wait for all 30. `FairGate` grants its slots round-robin: first across client hosts, then
across the sessions of one host (browser tabs share 127.0.0.1 on a laptop), so another
client's request runs after at most one request of each client already waiting. A client
holding `per_client` requests (running or waiting) gets 429 for more; a host, `per_host`. The 429 says
`Retry-After: 1` (`errors.RETRY_SOON_S`): a place frees when one of the client's own requests ends.

The work runs in a thread. When its request is answered without it (the time limit) or the
client disconnects, the thread's stop flag is set: class-embedding builds check it between
chunks of prompts (`clipforge.zeroshot.embeddings.stop_when`), so an abandoned classify stops
within a fraction of a second of CPU instead of computing for minutes. The slot is released
only when the thread has actually finished, so abandoned work never runs beside the next.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio.to_thread

from clipforge.server.errors import RETRY_SOON_S, APIError

__all__ = ["ClientGone", "FairGate", "address_key", "client_key"]

T = TypeVar("T")


def address_key(host: str | None) -> str:
    """The address every per-address cap counts: an IPv4 address as it is, an IPv6 address as its /64 network.

    One IPv6 host is usually given a whole /64 (2^64 addresses) and may send from any of them: counted one
    by one, each would be a new client past every per-address cap. An IPv4-mapped IPv6 address is its IPv4."""
    text = str(host or "unknown")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def client_key(host: str | None, session: str | None = None) -> tuple[str, str]:
    """(address, session): who a request belongs to for fairness (REST requests have no session)."""
    return (address_key(host), str(session or "")[:128])


class _Waiter:
    __slots__ = ("client", "future")

    def __init__(self, client: tuple[str, str], future: asyncio.Future[None]) -> None:
        self.client = client
        self.future = future


class FairGate:
    """`await gate.run(client, fn, *args)`: fn(*args) in a thread when it is this client's turn."""

    def __init__(self, slots: int = 1, per_client: int = 4, per_host: int = 64,
                 what: str = "searches or classifications") -> None:
        self.what = what  # the requests it holds, as its 429 names them
        self.slots = int(slots)
        self.per_client = int(per_client)
        self.per_host = int(per_host)
        self._mutex = threading.Lock()
        self._free = self.slots
        # host -> session -> waiters; both levels rotate (OrderedDict.move_to_end) for round-robin
        self._queues: OrderedDict[str, OrderedDict[str, deque[_Waiter]]] = OrderedDict()
        self._held: dict[tuple[str, str], int] = {}
        self._held_by_host: dict[str, int] = {}

    # -- bookkeeping (under the mutex) ----------------------------------------------------
    def _admit(self, client: tuple[str, str]) -> None:
        host = client[0]
        # a place frees when one of the client's own requests ends, not at a time known ahead: Retry-After is
        # the short constant of every such cap (`errors.RETRY_SOON_S`)
        if self._held.get(client, 0) >= self.per_client:
            raise APIError(429, "too_many_requests", f"you already have {self.per_client} {self.what} "
                                                     f"running or waiting; wait for their answers",
                           retry_after=RETRY_SOON_S)
        if self._held_by_host.get(host, 0) >= self.per_host:
            raise APIError(429, "too_many_requests", f"{self.per_host} requests from your address are running or "
                                                     f"waiting; try again shortly", retry_after=RETRY_SOON_S)
        self._held[client] = self._held.get(client, 0) + 1
        self._held_by_host[host] = self._held_by_host.get(host, 0) + 1

    def _forget(self, client: tuple[str, str]) -> None:
        for table, key in ((self._held, client), (self._held_by_host, client[0])):
            table[key] -= 1
            if not table[key]:
                del table[key]

    def _next(self) -> _Waiter | None:
        while self._queues:
            host, sessions = next(iter(self._queues.items()))
            session, waiters = next(iter(sessions.items()))
            waiter = waiters.popleft()
            if waiters:
                sessions.move_to_end(session)
            else:
                del sessions[session]
            if sessions:
                self._queues.move_to_end(host)
            else:
                del self._queues[host]
            if not waiter.future.done():
                return waiter
        return None

    def _dispatch(self) -> None:
        while self._free > 0:
            waiter = self._next()
            if waiter is None:
                return
            self._free -= 1
            loop = waiter.future.get_loop()
            loop.call_soon_threadsafe(_grant, waiter.future)

    def _release(self, client: tuple[str, str]) -> None:
        with self._mutex:
            self._free += 1
            self._forget(client)
            self._dispatch()

    def _withdraw(self, waiter: _Waiter) -> bool:
        """Remove a waiter that was not granted; False when it was granted meanwhile (caller releases)."""
        with self._mutex:
            sessions = self._queues.get(waiter.client[0], {})
            waiters = sessions.get(waiter.client[1])
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del sessions[waiter.client[1]]
                    if not sessions:
                        del self._queues[waiter.client[0]]
                self._forget(waiter.client)
                return True
            return False

    def waiting(self) -> int:
        with self._mutex:
            return sum(len(w) for sessions in self._queues.values() for w in sessions.values())

    # -- the public call ------------------------------------------------------------------------
    async def run(self, client: tuple[str, str], fn: Callable[..., T], *args: Any,
                  left: Callable[[], Awaitable[Any]] | None = None) -> T:
        """fn(*args) in a worker thread once this client's turn comes (429 when it holds too many).

        `left`: an awaitable that completes when the client disconnects (the ASGI `receive` once the
        body has been read: it then only ever yields `http.disconnect`).
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(client, loop.create_future())
        with self._mutex:
            self._admit(client)
            self._queues.setdefault(client[0], OrderedDict()).setdefault(client[1], deque()).append(waiter)
            self._dispatch()
        gone = asyncio.ensure_future(left()) if left is not None else None
        try:
            try:
                await _wait_or_leave(waiter.future, gone)
            except BaseException:
                if not self._withdraw(waiter):  # granted just now: give the slot back
                    self._release(client)
                raise
            stop = threading.Event()
            # anyio's worker threads (as for every other sync call of the app), in a task of its own that
            # outlives this request's cancellation; abandon_on_cancel only matters when the loop shuts down.
            work = asyncio.ensure_future(anyio.to_thread.run_sync(_stoppable, stop, fn, args, abandon_on_cancel=True))
            work.add_done_callback(lambda done: (done.cancelled() or done.exception(), self._release(client)))
            try:
                await _wait_or_leave(work, gone)
            except BaseException:
                stop.set()  # the thread stops at its next check; the slot is freed when it has
                raise
            return work.result()
        finally:
            if gone is not None:
                gone.cancel()


def _grant(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ClientGone(APIError):
    """The client closed its connection before its answer was ready (nobody reads this answer)."""

    def __init__(self) -> None:
        super().__init__(499, "client_closed_request", "the client closed the connection before the answer")


async def _wait_or_leave(future: asyncio.Future[Any], gone: asyncio.Future[Any] | None) -> None:
    """Wait for `future`; ClientGone when `gone` first reports the client's disconnection."""
    if gone is None or gone.done():
        await asyncio.wait({future})
        return
    done, _ = await asyncio.wait({future, gone}, return_when=asyncio.FIRST_COMPLETED)
    if future in done:
        return
    message = None if gone.cancelled() or gone.exception() else gone.result()
    if isinstance(message, dict) and message.get("type") == "http.disconnect":
        raise ClientGone
    await asyncio.wait({future})


def _stoppable(stop: threading.Event, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    from clipforge.zeroshot.embeddings import stop_when

    with stop_when(stop.is_set):
        return fn(*args)
