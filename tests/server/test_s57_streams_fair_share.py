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


def _ends(sock: socket.socket) -> bool:
    """Whether the stream's answer ends (chunked encoding's last chunk) before the socket's timeout."""
    data = b""
    sock.settimeout(20)
    try:
        while b"0\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
    except TimeoutError:
        return False
    return True


def test_a_newcomer_takes_the_place_of_the_biggest_holders_oldest_stream(library, live_server, tmp_path,
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
            assert _ends(crowd[0][0])  # the oldest stream of the first biggest holder, ended as a finished stream
            assert app.state.ui_streams.count() == 12
            second, status = _heartbeat(port, "127.0.0.1")  # 1 held here, 4 by the others: another place is made
            assert status == 200 and _ends(crowd[4][0])
            crowd_again, status = _heartbeat(port, "127.0.0.2")  # 3 held there, 4 by .3 and .4: no two more
            assert status == 429
            for sock in (victim, second, crowd_again):
                sock.close()
        finally:
            for sock, _ in crowd:
                sock.close()
