"""The UI's page (`GET /`) and gradio's config (`GET /config`): built once per distinct request, not per request.

gradio builds both answers anew for every request: a deep copy of the whole Blocks config (~4,000 objects), a walk
of it to put the request's root URL into every file URL, and for the page its template: ~2.5 ms (`/config`) and
~3.7 ms (`/`) of Python in the thread pool, holding the GIL. 32 connections of one address asking for them in a
loop took a core, and another client's `/healthz` went from 1.8 ms to 150-330 ms (its search from 52 to 350-570 ms),
where the same flood of `/healthz` cost it nothing; from 128 connections, 0.66-1.9 s (search 1-2.9 s). An answer
kept here costs the server 0.28 ms of CPU, less than `/healthz` or a 404, and a flood of it slows others no more
than a flood of 404s does (what is left is volume: `docs/security.md`, "Not covered"). The decisions this module
owns:

* Which requests: a GET (a HEAD arrives here as one: `head`) of the route paths `/`, `/config` and `/config/`.
* What an answer depends on, its key: everything gradio reads of the request for these routes (`routes.main`,
  `routes.get_config`, `route_utils.get_root_url`): scheme, server address, root path, path and the raw query
  string, and every occurrence of `Host`, `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Gradio-Server` and
  `Origin` (read by the CORS layer below). Nothing else changes them: the config holds every language's
  translations and the page's script picks one in the browser (so `Accept-Language` is no part of the key), neither
  answer is compressed (`ui.LocaleScriptMiddleware` asks for the page uncompressed; `/config` has no compressible
  suffix), and gradio's login, the only thing that makes them personal (a cookie's user name), is off: with it on
  (`shared` false) nothing is kept.
* What the answers say of it: each (kept or built) carries `Vary` naming the request headers of the key, so a
  shared HTTP cache in front of the server never gives one host's page (its root URL) to a request for another.
  uvicorn's reading of forwarded headers is untouched: `X-Forwarded-Proto` (the scheme) counts only from the
  proxies `--forwarded-allow-ips` names, but gradio reads `X-Forwarded-Host` and `X-Forwarded-Proto` itself.
* What is kept: a whole 200 answer without `Set-Cookie` or `Content-Encoding`, whose `Vary` names only headers of
  the key, up to `MAX_ANSWER_BYTES`; at most `MAX_ANSWERS` (`MAX_KEPT_BYTES`), the least recently used dropped
  first; all of them dropped when gradio's Blocks config is replaced, and an answer whose build began before the
  replacement is not kept.
* What a request the cache cannot answer costs: requests for the same key wait for the one build under way; builds
  run `BUILDS_AT_ONCE` at a time server-wide, in order of arrival, the answer buffered (a client that reads slowly
  holds no turn); an address has at most `BUILDS_PER_ADDRESS` running or waiting and `per_minute` a minute (the
  page loads `ServerLimits.ui_new_sessions_per_minute` allows it), then 429, whose `Retry-After` is 1 s for the
  places (a build takes milliseconds) and the seconds left of the address's minute for the builds a minute. A new
  host name, path or query string is a new key, so these bounds, not the cache, are what an address varying them
  meets.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from starlette.routing import get_route_path

from clipforge.server.errors import RETRY_SOON_S, retry_after_seconds
from clipforge.server.middleware import ASGIApp, Message, Receive, Scope, Send, client_host, send_json

__all__ = ["BUILDS_AT_ONCE", "BUILDS_PER_ADDRESS", "KEY_HEADERS", "MAX_ANSWERS", "MAX_ANSWER_BYTES", "MAX_KEPT_BYTES", "BuildTurns",
           "PageCache", "UIPageCacheMiddleware", "request_key"]

CACHED_ROUTES = frozenset({"/", "/config", "/config/"})
KEY_HEADERS = ("Host", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Gradio-Server", "Origin")
"""The request headers an answer depends on: part of its key, and named by its `Vary`."""
_KEY_HEADERS = frozenset(name.lower().encode("latin-1") for name in KEY_HEADERS)
MAX_ANSWERS = 64
"""Answers kept (one per host name, path and query string asked for; the page and its config are ~70 kB each)."""
MAX_ANSWER_BYTES = 2 * 2**20
"""Largest answer kept."""
MAX_KEPT_BYTES = 16 * 2**20
"""Bytes of all the answers kept together."""
BUILDS_AT_ONCE = 1
"""Default (`ServerLimits.ui_page_builds`): answers gradio builds at once, server-wide: each holds a thread and
the GIL for its few milliseconds."""
BUILDS_PER_ADDRESS = 2
"""Default (`ServerLimits.ui_page_builds_per_host`): builds one address may have running or waiting; one more is
refused (429), not queued."""
_WINDOW_S = 60.0
_MAX_ADDRESSES = 10_000  # addresses whose minute is remembered before the expired ones are forgotten


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def request_key(scope: Scope) -> Hashable:
    """What gradio reads of a request to build its page or config (module docstring): equal keys, equal answers."""
    headers = tuple((bytes(k).lower(), bytes(v)) for k, v in scope.get("headers", ()) if bytes(k).lower() in _KEY_HEADERS)
    server = scope.get("server")
    return (scope.get("scheme", "http"), tuple(server) if server else None, scope.get("root_path", ""), scope["path"],
            bytes(scope.get("query_string", b"")), headers)


class BuildTurns:
    """Builds take turns: `at_once` server-wide in order of arrival; an address holds at most `per_address` places
    (running or waiting) and starts at most `per_minute` builds a minute."""

    def __init__(self, at_once: int, per_address: int, per_minute: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.at_once, self.per_address, self.per_minute = int(at_once), int(per_address), int(per_minute)
        self._clock = clock
        self._lock = threading.Lock()  # one event loop in a server; a test client may run one per request
        self._free = int(at_once)
        self._queue: deque[asyncio.Future[None]] = deque()
        self._granted: set[asyncio.Future[None]] = set()  # given the turn, not yet resumed: theirs to pass on
        self._held: dict[str, int] = {}
        self._minute: dict[str, tuple[float, int]] = {}  # address -> (its window's start, builds started in it)
        self._prune_at = _MAX_ADDRESSES

    def admit(self, address: str) -> tuple[str, int] | None:
        """Hold a place for `address` (None; `leave` gives it back), or the 429's detail saying why not and its
        `Retry-After` in seconds: a place running or waiting frees when a build of the address ends (a few
        milliseconds: `errors.RETRY_SOON_S`); the builds of a minute, when the address's minute has passed."""
        with self._lock:
            if self._held.get(address, 0) >= self.per_address:
                builds = f"{self.per_address} build{'s' if self.per_address != 1 else ''}"
                return (f"{builds} of the web UI's page from your address {'are' if self.per_address != 1 else 'is'} "
                        "running or waiting; try again shortly", RETRY_SOON_S)
            now = self._clock()
            start, count = self._minute.get(address, (now, 0))
            if now - start >= _WINDOW_S:
                start, count = now, 0
            if count >= self.per_minute:
                return (f"the web UI's page was built {self.per_minute} times for your address in the last minute "
                        f"(each new host name, path or query string is built once); wait a minute",
                        retry_after_seconds(start + _WINDOW_S - now))
            if len(self._minute) >= self._prune_at:  # only addresses that built in the last minute stay
                self._minute = {a: w for a, w in self._minute.items() if now - w[0] < _WINDOW_S}
                self._prune_at = max(_MAX_ADDRESSES, 2 * len(self._minute))  # amortised: never a walk per build
            self._minute[address] = (start, count + 1)
            self._held[address] = self._held.get(address, 0) + 1
            return None

    def leave(self, address: str) -> None:
        with self._lock:
            self._held[address] -= 1
            if not self._held[address]:
                del self._held[address]

    async def acquire(self) -> None:
        """Wait for a build's turn (`release` gives it back)."""
        with self._lock:
            if self._free > 0 and not self._queue:
                self._free -= 1
                return
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queue.append(future)
        try:
            await future
        except BaseException:
            with self._lock:
                if future in self._queue:
                    self._queue.remove(future)
                elif future in self._granted:  # granted as it was cancelled: pass the turn on
                    self._granted.discard(future)
                    self._pass_on()
                # else: cancelled before its turn came, and `_pass_on` skipped it: it holds nothing to give back
            raise
        with self._lock:
            self._granted.discard(future)

    def release(self) -> None:
        with self._lock:
            self._pass_on()

    def waiting(self) -> int:
        with self._lock:
            return sum(not f.done() for f in self._queue)

    def _pass_on(self) -> None:
        while self._queue:
            future = self._queue.popleft()
            if not future.done():  # a cancelled one is skipped: its own `except` must not pass a turn on
                self._granted.add(future)
                future.get_loop().call_soon_threadsafe(_grant, future)
                return
        self._free += 1


def _grant(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Buffered:
    """An answer the app sent, held until it is complete (so a build's turn never waits on the client)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def send(self, message: Message) -> None:
        copy = dict(message)
        if "headers" in copy:
            copy["headers"] = [(bytes(k), bytes(v)) for k, v in copy["headers"]]
        self.messages.append(copy)

    def answer(self) -> _Answer | None:
        """The answer when it is one whole 200 without a cookie, small enough to keep; else None."""
        messages = [m for m in self.messages if m["type"] != "http.response.debug"]  # a test client's template info
        if not messages or messages[0]["type"] != "http.response.start":
            return None
        start, rest = messages[0], messages[1:]
        if start.get("status") != 200 or not _shared_headers(start.get("headers", ())):
            return None
        if not rest or any(m["type"] != "http.response.body" for m in rest) or rest[-1].get("more_body", False):
            return None
        body = b"".join(bytes(m.get("body", b"")) for m in rest)
        if len(body) > MAX_ANSWER_BYTES:
            return None
        return _Answer(200, tuple(start.get("headers", ())), body)

    async def replay(self, send: Send) -> None:
        for message in self.messages:
            await send(_varying(message))


def _shared_headers(headers: Any) -> bool:
    """Whether an answer with `headers` is the same for every request of its key: no cookie, no encoding chosen
    for this client, and a `Vary` naming only headers in the key."""
    for name, value in headers:
        name = bytes(name).lower()
        if name in (b"set-cookie", b"content-encoding"):
            return False
        if name == b"vary":
            varies = {v.strip().lower() for v in bytes(value).split(b",") if v.strip()}
            if not varies <= _KEY_HEADERS:
                return False
    return True


def _varying(message: Message) -> Message:
    """`message`, an answer's start with one `Vary` naming `KEY_HEADERS` (and what the app's `Vary` named)."""
    if message["type"] != "http.response.start":
        return message
    headers, named = [], []
    for name, value in message.get("headers", ()):
        if bytes(name).lower() == b"vary":
            named += [v.strip() for v in bytes(value).decode("latin-1").split(",") if v.strip()]
        else:
            headers.append((name, value))
    seen = {v.lower() for v in named}
    named += [h for h in KEY_HEADERS if h.lower() not in seen]
    return {**message, "headers": [*headers, (b"vary", ", ".join(named).encode("latin-1"))]}


async def _send_answer(send: Send, answer: _Answer) -> None:
    # fresh lists: a layer outside may add its headers to the message it is handed
    await send(_varying({"type": "http.response.start", "status": answer.status, "headers": list(answer.headers)}))
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})


class PageCache:
    """The answers kept and the builds' turns (module docstring); `serve` answers one request of `CACHED_ROUTES`."""

    def __init__(self, blocks: Any, per_minute: int, shared: Callable[[], bool] = lambda: True,
                 at_once: int = BUILDS_AT_ONCE, per_address: int = BUILDS_PER_ADDRESS) -> None:
        self.blocks = blocks  # gradio's Blocks: a new `config` object drops every answer kept
        self.shared = shared  # false when gradio's login is on: answers may name a user, none is kept
        self.turns = BuildTurns(at_once, per_address, per_minute)  # `ServerLimits.ui_page_builds*` in a server
        self.answers: OrderedDict[Hashable, _Answer] = OrderedDict()
        self._bytes = 0
        self._source = getattr(blocks, "config", None)
        self._lock = threading.Lock()
        self._building: dict[Hashable, asyncio.Future[None]] = {}

    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """The kept answer for this request, or `app`'s, built in turn."""
        keep = self.shared()
        key = request_key(scope) if keep else None
        answer = self._get(key) if keep else None
        if answer is None and keep:
            pending = self._building.get(key)
            if pending is not None and pending.get_loop() is asyncio.get_running_loop():
                await asyncio.wait({pending})  # the build under way for this key (never cancelled from here)
                answer = self._get(key)
        if answer is not None:
            await _send_answer(send, answer)
            return
        await self._build(app, scope, receive, send, key)

    async def _build(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, key: Hashable | None) -> None:
        address = client_host(scope)
        refusal = self.turns.admit(address)
        if refusal is not None:
            detail, retry_after = refusal
            await send_json(send, 429, "too_many_requests", detail, retry_after)
            return
        future: asyncio.Future[None] | None = None
        if key is not None and key not in self._building:
            future = self._building[key] = asyncio.get_running_loop().create_future()
        buffered, answer = _Buffered(), None
        try:
            await self.turns.acquire()
            try:
                answer = self._get(key) if key is not None else None  # built while this one waited
                if answer is None:
                    source = getattr(self.blocks, "config", None)  # what gradio builds this answer from
                    await app(scope, receive, buffered.send)
                    if key is not None:
                        self._put(key, buffered.answer(), source)
            finally:
                self.turns.release()
        finally:
            self.turns.leave(address)
            if future is not None:
                del self._building[key]
                future.set_result(None)
        if answer is not None:
            await _send_answer(send, answer)
        else:
            await buffered.replay(send)

    def _current(self) -> Any:
        """gradio's config now, every answer kept dropped if it was replaced since the last look (hold `_lock`)."""
        config = getattr(self.blocks, "config", None)
        if config is not self._source:
            self.answers.clear()
            self._bytes, self._source = 0, config
        return config

    def _get(self, key: Hashable) -> _Answer | None:
        with self._lock:
            self._current()
            answer = self.answers.get(key)
            if answer is not None:
                self.answers.move_to_end(key)
            return answer

    def _put(self, key: Hashable, answer: _Answer | None, source: Any) -> None:
        """Keep `answer`, built from the config `source`, unless that config has been replaced meanwhile (its
        answer would otherwise outlive the drop of every answer of the old config)."""
        if answer is None:
            return
        with self._lock:
            if key in self.answers or self._current() is not source:
                return
            self.answers[key] = answer
            self._bytes += len(answer.body)
            while len(self.answers) > MAX_ANSWERS or self._bytes > MAX_KEPT_BYTES:
                _, dropped = self.answers.popitem(last=False)
                self._bytes -= len(dropped.body)


class UIPageCacheMiddleware:
    """`GET /` and `GET /config` answered through `cache` (`PageCache`); every other request passes untouched."""

    def __init__(self, app: ASGIApp, cache: PageCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or get_route_path(scope) not in CACHED_ROUTES:
            await self.app(scope, receive, send)
            return
        await self.cache.serve(self.app, scope, receive, send)
