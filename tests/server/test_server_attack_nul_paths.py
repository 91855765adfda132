"""A NUL in a path a client names (`/gradio_api/file=...%00.png`, a UI event's `FileData`) is a 403, not a 500.

The guard asked `os.path.realpath` whether such a path lay in the upload folder (to tell a deleted upload from a
stranger's path), and realpath raised `ValueError: embedded null byte`: each anonymous request was a 500 and a
traceback of ~40 lines in the server log. `upload_paths.inside` now refuses a path holding a NUL unresolved.
"""

from __future__ import annotations

import logging
import uuid

from clipforge.server import create_app


def test_a_nul_in_a_named_path_is_refused_without_a_traceback(ui_client, photos, caplog):
    caplog.set_level(logging.INFO)
    path = ui_client.post("/gradio_api/upload",
                          files=[("files", ("p.png", photos[0].read_bytes(), "image/png"))]).json()[0]
    for target in (f"{path}%00.png", f"{path}%00", "/etc/passwd%00", f"{path.rsplit('/', 1)[0]}/%00/x.png"):
        answer = ui_client.get(f"/gradio_api/file={target}")
        assert answer.status_code == 403 and answer.json()["error"] == "forbidden", (target, answer.text)
    blocks = ui_client.app.state.ui_blocks
    fn_index = next(i for i, fn in blocks.fns.items() if fn.name == "classify")
    event = {"fn_index": fn_index, "data": [{"path": f"{path}\0.png", "meta": {"_type": "gradio.FileData"}},
                                            "cat, dog", ""],
             "session_hash": uuid.uuid4().hex, "event_data": None, "trigger_id": None}
    joined = ui_client.post("/gradio_api/queue/join", json=event)
    assert joined.status_code == 403 and joined.json()["error"] == "forbidden", joined.text
    assert "Traceback" not in caplog.text and "embedded null byte" not in caplog.text
    # the upload itself is still served to its browser
    assert ui_client.get(f"/gradio_api/file={path}").content == photos[0].read_bytes()


def test_a_heartbeat_for_a_session_id_with_a_control_character_is_a_404(library, live_server, tmp_path, monkeypatch):
    """gradio puts the session id of a heartbeat into a URL when the stream ends; a NUL or DEL in it raised there:
    two tracebacks (18 kB of log) for each anonymous request that opened such a stream and closed it."""
    import socket

    from clipforge.server import ServerLimits

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits()
    with live_server(create_app(library, ui=True, limits=limits), limits) as url:
        host, port = url.removeprefix("http://").split(":")
        for session, status in (("%00", 404), ("a%7fb", 404), ("a%0d%0ab", 404), ("x" * 129, 404), ("k3j9x0q2ab", 200),
                                ("0b1c6a52-3d0e-4e43-9b5e-3f9d8c2a7e11", 200)):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(f"GET /gradio_api/heartbeat/{session} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                line = b""
                while not line.endswith(b"\r\n"):
                    line += sock.recv(1)
            assert int(line.split()[1]) == status, (session, line)
