"""A crowd of addresses holding idle heartbeat streams cannot lock other browsers out of the web UI.

`/gradio_api/heartbeat/<any session>` stays open for as long as its client likes. An address could hold
`ui_streams_per_host` of them (32) and the server `ui_streams` (2,000): 63 addresses (an IPv6 customer's /56 holds
256 of the /64s counted as addresses) filled the server, and from then on every other browser's heartbeat and
`queue/data` got 429 - its searches never returned - for as long as the sockets were kept. Now a full server closes
the oldest stream of the address holding the most for a newcomer holding two fewer."""

from __future__ import annotations

import socket
import uuid

from clipforge.server import ServerLimits, create_app


def _heartbeat(port: int, source: str) -> tuple[socket.socket, int]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    sock.sendall(f"GET /gradio_api/heartbeat/{uuid.uuid4().hex[:11]} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    line = b""
    while not line.endswith(b"\r\n"):
        line += sock.recv(1)
    return sock, int(line.split()[1])


def _ends(sock: socket.socket, seconds: float = 20.0) -> bool:
    """Whether the stream's answer ends (chunked encoding's last chunk) within `seconds` (a heartbeat stream sends
    `data: ALIVE` every 15 s: a timeout per read alone never ends)."""
    import time

    data, end = b"", time.monotonic() + seconds
    while b"0\r\n\r\n" not in data:
        left = end - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return False
        if not chunk:
            return False
        data += chunk
    return True


def test_a_newcomer_takes_the_place_of_a_stream_of_the_biggest_holder(library, live_server, tmp_path,
                                                                           monkeypatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits(ui_streams_per_host=4, ui_streams=12)
    app = create_app(library, ui=True, limits=limits)
    with live_server(app, limits) as url:
        port = int(url.rsplit(":", 1)[1])
        crowd = [_heartbeat(port, f"127.0.0.{2 + i // 4}") for i in range(12)]  # 3 addresses x 4: the server full
        try:
            assert [status for _, status in crowd] == [200] * 12
            victim, status = _heartbeat(port, "127.0.0.1")
            assert status == 200  # was 429 "this server has 12 open streams already"
            assert _ends(crowd[8][0])  # the oldest stream of the newest of the equal holders, ended as finished
            assert app.state.ui_streams.count() == 12
            second, status = _heartbeat(port, "127.0.0.1")  # a tab's second stream: from .3 (4, newer than .2)
            assert status == 200 and _ends(crowd[4][0])
            crowd_again, status = _heartbeat(port, "127.0.0.4")  # 3 held there, 4 at most elsewhere: no place
            assert status == 429
            for sock in (victim, second, crowd_again):
                sock.close()
        finally:
            for sock, _ in crowd:
                sock.close()


# -- the rule, on the middleware alone (a review found the first version's holes) ------------------------------------

def _scenario(opened: list[tuple[str, str]], total: int, per_host: int = 8, status: int = 200):
    """Open `opened` (address, path) streams one after another on a middleware over an app that answers `status`
    and then holds the stream until its client leaves; (starts as (address, status), the addresses whose streams
    were ended to make room, streams held at the end by address)."""
    import asyncio

    from clipforge.server.ui_streams import OpenStreams, StreamLimitMiddleware
    from tests.server.test_server_attack_streams import _hold_stream

    async def stream_app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": []})
        if status == 200:
            await receive()

    async def run():
        streams = OpenStreams(per_host=per_host, total=total)
        limit = StreamLimitMiddleware(stream_app, streams)
        sent: list = []
        release = asyncio.Event()

        tasks = []
        for host, path in opened:
            tasks.append(asyncio.create_task(_hold_stream(limit, host, path, sent, release)))
            for _ in range(20):
                await asyncio.sleep(0)
        held = {host: len(s) for host, s in streams._open.items()}
        release.set()
        await asyncio.gather(*tasks)
        starts = [(host, m["status"]) for host, m in sent if m["type"] == "http.response.start"]
        ended = [host for host, m in sent if m["type"] == "http.response.body" and not m.get("body")
                 and not m.get("more_body")]
        return starts, ended, held

    return asyncio.run(run())


HB = "/gradio_api/heartbeat/x"
QD = "/gradio_api/queue/data?session_hash=x"


def test_an_even_crowd_of_three_streams_an_address_gives_a_newcomer_a_tabs_two() -> None:
    """An even crowd of 3 streams an address fills the server: a newcomer's heartbeat and its `queue/data` (a tab's
    two) are both answered. (A crowd of 2 an address from thousands of IPv4 addresses is volume: docs/security.md.)"""
    crowd = [(f"198.51.100.{a}", HB) for a in range(4) for _ in range(3)]  # 12 = the server's total
    starts, ended, held = _scenario([*crowd, ("203.0.113.9", HB), ("203.0.113.9", QD)], total=12)
    assert starts[-2:] == [("203.0.113.9", 200), ("203.0.113.9", 200)]
    assert held["203.0.113.9"] == 2 and sum(held.values()) == 12 and len(ended) == 2


def test_among_equal_holders_the_newest_gives_its_place() -> None:
    """A tab that was there before the crowd lost its stream first (`max` picked the oldest of equal holders)."""
    opened = [("192.0.2.1", HB), ("192.0.2.1", QD)] + [(f"198.51.100.{a}", HB) for a in range(3) for _ in range(2)]
    starts, ended, held = _scenario([*opened, ("203.0.113.9", HB)], total=8)
    assert starts[-1] == ("203.0.113.9", 200) and held["192.0.2.1"] == 2  # the tab keeps both
    assert held["198.51.100.2"] == 1  # the newest holder gave one


def test_a_stream_the_app_refuses_makes_no_room() -> None:
    """A `queue/data` for a session gradio does not hold (404) closed a live stream of another address: the place
    is made only once the newcomer's stream is answered 200."""
    from clipforge.server.ui_streams import OpenStreams

    streams = OpenStreams(per_host=8, total=2)
    first, second = streams.opened("198.51.100.1"), streams.opened("198.51.100.1")
    newcomer = streams.admit("203.0.113.9")
    assert not isinstance(newcomer, str) and newcomer.room
    streams.closed(newcomer)  # answered 404: given back without `make_room`
    assert not first.evicted.is_set() and not second.evicted.is_set() and streams.count() == 2


def test_an_ipv6_customers_addresses_are_one_holder_for_the_servers_share() -> None:
    """2 streams from each of 6 /64s of one /48 fill the server: a newcomer (IPv4, or another /48) takes a place
    from that /48 (12 streams), where each /64 alone held no more than a tab."""
    from clipforge.server.ui_streams import holder_of

    assert holder_of("2001:db8:1:ff00::/64") == "2001:db8:1::/48" == holder_of("2001:db8:1:7::/64")
    assert holder_of("198.51.100.7") == "198.51.100.7"
    crowd = [(f"2001:db8:1:{n:x}::1", HB) for n in range(6) for _ in range(2)]
    starts, ended, held = _scenario([*crowd, ("203.0.113.9", HB), ("203.0.113.9", QD)], total=12)
    assert starts[-2:] == [("203.0.113.9", 200), ("203.0.113.9", 200)] and len(ended) == 2
