"""A server out of file descriptors: one line a minute, not a traceback per failed accept.

asyncio's accept loop reports every EMFILE through the loop's exception handler, up to the listen
backlog (2048 for `serve`) times per readable event: ~3,800 tracebacks a second filled the log
(stop 53's soak: ~790 MB in 5 minutes). The real server (`build_server`, the one `serve` runs) is
started in a child process whose descriptor limit is low, and held connections exhaust it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import subprocess
import sys
import textwrap
import time

from clipforge.server.accept_errors import ACCEPT_OUT_OF_RESOURCE, AcceptErrorLog

_CHILD = textwrap.dedent("""
    import resource, sys
    from clipforge.server.limits import ServerLimits
    from clipforge.server.runner import bind_socket, build_server

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    sock = bind_socket("127.0.0.1", 0)
    server = build_server(app, ServerLimits(), log_level="warning")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, hard))
    print(sock.getsockname()[1], flush=True)
    server.run(sockets=[sock])
""")


def test_a_server_out_of_descriptors_logs_one_line_not_a_flood():
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    held: list[socket.socket] = []
    try:
        port = int(child.stdout.readline())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the server answers: uvicorn has started
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
                    probe.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if probe.recv(100).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                time.sleep(0.05)
        for _ in range(80):  # past the child's 48 descriptors; the rest wait in the listen queue
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(2.5)  # asyncio retries accepting each second: two more rounds of failures
    finally:
        for sock in held:
            sock.close()
        child.terminate()
        _, log = child.communicate(timeout=30)
    lines = [line for line in log.splitlines() if "cannot accept new connections" in line]
    assert "Traceback" not in log and ACCEPT_OUT_OF_RESOURCE not in log, log[:2000]
    assert len(lines) == 1, log[:2000]
    assert "Too many open files" in lines[0] and "`ulimit -n`, is 48" in lines[0]
    assert len(log) < 2000, log[:2000]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _accept_error(code: int = errno.EMFILE) -> dict:
    return {"message": ACCEPT_OUT_OF_RESOURCE, "exception": OSError(code, "x"), "socket": None}


def test_repeats_are_counted_into_one_line_a_minute_and_other_errors_pass_through(caplog):
    clock, passed = _Clock(), []
    handler = AcceptErrorLog(logging.getLogger("test.accept"), lambda loop, context: passed.append(context),
                             clock=clock)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="test.accept"):
            for _ in range(500):
                handler(loop, _accept_error())
            clock.now += 30
            handler(loop, _accept_error(errno.ENFILE))
            assert len(caplog.records) == 1  # the first only: the next 500 are within the minute
            clock.now += 31
            handler(loop, _accept_error())
            other = {"message": "Task exception was never retrieved", "exception": ValueError("boom")}
            handler(loop, other)
            refused_otherwise = {"message": ACCEPT_OUT_OF_RESOURCE, "exception": OSError(errno.EBADF, "x")}
            handler(loop, refused_otherwise)
    finally:
        loop.close()
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2, said
    assert said[0].startswith("cannot accept new connections: Too many open files (this process's descriptor")
    assert said[1] == "cannot accept new connections: Too many open files; 501 failed accepts in the last 61 s"
    assert passed == [other, refused_otherwise]  # not ours to count: asyncio's handler, as before


def test_a_gap_longer_than_the_interval_ends_an_episode_with_its_own_count(caplog):
    """Review 63 revserver #5: the failures after an episode's last line were summed into the next episode's first
    line, hours later ("5000 failed accepts in the last 10800 s"), without the first line's `ulimit -n` hint. A gap
    longer than `interval_s` ends an episode: its remaining count is said with the time to its last failure, then
    the new episode starts with the full first line."""
    clock = _Clock()
    handler = AcceptErrorLog(logging.getLogger("test.accept.gap"), clock=clock)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="test.accept.gap"):
            for _ in range(5000):  # 50 s of failures, 100 a second
                handler(loop, _accept_error())
                clock.now += 0.01
            clock.now = 100.0 + 3 * 3600  # three hours later, a new episode
            handler(loop, _accept_error(errno.ENFILE))
            clock.now += 30
            handler(loop, _accept_error(errno.ENFILE))  # within the new episode's minute: counted
            clock.now += 31
            handler(loop, _accept_error(errno.ENFILE))
            clock.now += 61  # a gap after a line that said every failure: nothing left to say
            handler(loop, _accept_error())
    finally:
        loop.close()
    said = [record.getMessage() for record in caplog.records]
    first = "this process's descriptor limit, `ulimit -n`, is "
    assert len(said) == 5, said
    assert said[0].startswith("cannot accept new connections: Too many open files (" + first), said[0]
    assert said[1] == ("cannot accept new connections: Too many open files; 4999 failed accepts in the 50 s "
                       "to 10750 s ago, then none until now")
    assert said[2].startswith("cannot accept new connections: Too many open files in system (" + first), said[2]
    assert said[3] == "cannot accept new connections: Too many open files in system; 2 failed accepts in the last 61 s"
    assert said[4].startswith("cannot accept new connections: Too many open files (" + first), said[4]


def test_the_end_of_an_episode_is_said_when_it_ends(caplog):
    """Review 63 revfix: an episode's end was said only when the next one began, hours later or never. The loop's
    timer (`check_end`, `QUIET_S` after an error) says it once accepting works again, with the failures unsaid."""
    from clipforge.server.accept_errors import QUIET_S

    clock = _Clock()
    handler = AcceptErrorLog(logging.getLogger("test.accept.end"), clock=clock)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="test.accept.end"):
            for _ in range(300):  # 3 s of failures
                handler(loop, _accept_error())
                clock.now += 0.01
            assert handler._watch is not None  # the check is on the loop's timer
            clock.now += QUIET_S / 2
            handler.check_end(loop)  # too soon after the last failure: looks again later
            assert len(caplog.records) == 1 and handler._watch is not None
            clock.now += QUIET_S
            handler.check_end(loop)
            handler.check_end(loop)  # said once
    finally:
        loop.close()
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2, said
    assert said[1] == "accepting new connections again (they failed for 3 s): 299 failed accepts since the last line"
    assert handler.said_at is None  # the next error starts a new episode with the full first line
