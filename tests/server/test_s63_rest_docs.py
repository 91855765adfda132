"""Audit 63, finding 3: the statuses the docs give are the ones the server sends.

docs/security.md gave 400 for labels, label and text lengths and templates (the server answers 422), 400 for a
classify over `max_prompts` (413 `too_many_prompts`, as its own table said), and 400 for
`/api/images/../../etc/passwd` (a 404: no endpoint has that path); the README's list of error statuses left out
403, 408 and 429 and put a malformed body under 400. Each statement is read from the docs here and compared with
what the server answers; a path's status through a live server (review 63 revserver #2: `..%2F..%2Fetc%2Fpasswd`
was documented as a 400 and checked on an ASGI scope no server builds; uvicorn decodes it, and it is a 404).
"""

from __future__ import annotations

import base64
import re
import socket
from pathlib import Path

import pytest

from clipforge.server import ServerLimits, create_app

ROOT = Path(__file__).resolve().parents[2]
SECURITY = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
_STATUS = re.compile(r"\b[1-5]\d\d\b")


def _limits_row(name: str) -> set[int]:
    """The statuses the last cell of security.md's limits table row `name` gives (after its first ": ")."""
    (row,) = [line for line in SECURITY.splitlines() if line.startswith(f"| {name} |")]
    return {int(code) for code in _STATUS.findall(row.rsplit("|", 2)[-2].split(": ", 1)[1])}


@pytest.fixture()
def answers(make_client, kit):
    """{limits table row: the status the server answers when it is passed}."""
    client = make_client()
    image = base64.b64encode(kit.encode(kit.picture((200, 0, 0), seed=1))).decode()

    def classify(**fields):
        return client.post("/api/classify", json={"image": image, "labels": ["a", "b"], **fields}).status_code

    return {
        "`max_top_k`": client.post("/api/search", json={"text": "a", "top_k": 201}).status_code,
        "`max_page_size`": client.get("/api/images?limit=501").status_code,
        "`max_offset`": client.get("/api/images?offset=1000000001").status_code,
        "image id": client.get("/api/images/0").status_code,
        "`max_labels`": classify(labels=[f"l{i}" for i in range(101)]),
        "`max_label_chars`": classify(labels=["x" * 201]),
        "`max_labels_chars`": classify(labels="x" * 2001),
        "`max_text_chars`": client.post("/api/search", json={"text": "x" * 1001}).status_code,
        "template": classify(template="{:>1500000000}{}"),
        "`thumb_size` / `max_thumb_size`": client.get("/api/images/1/thumb?size=2000").status_code,
        "`max_json_items`": client.post("/api/search", json={"text": "a", "tags": ["t"] * 6000}).status_code,
        "`max_prompts`": classify(labels=list("abcdef"), template="imagenet"),
    }


def test_the_limits_table_gives_the_statuses_the_server_sends(answers):
    for row, status in answers.items():
        assert _limits_row(row) == {status}, (row, status)


def _status_on_the_wire(port: int, path: str) -> int:
    """The status a real server (uvicorn, as `serve` runs it) answers to `GET path` sent exactly as written: an HTTP
    client would resolve its `..` first, and uvicorn percent-decodes the path before any route sees it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


_PATH_STATEMENT = re.compile(r"`(/api/images/[^`]*)` (?:is )?an? (\d{3})")


def test_the_threat_models_statements_give_the_statuses_the_server_sends(library, live_server, make_client,
                                                                         answers):
    """Review 63 revserver #2: security.md called `/api/images/..%2F..%2Fetc%2Fpasswd` a 400, checked on a hand-made
    ASGI scope no server sends (its path undecoded); uvicorn decodes it to `/api/images/../../etc/passwd`, a 404.
    Every "`/api/images/...` is a NNN" of the threat model is sent here to a live server, as written."""
    stated = {path: int(status) for path, status in _PATH_STATEMENT.findall(SECURITY)}
    assert stated == {"/api/images/../../etc/passwd": 404, "/api/images/..%2F..%2Fetc%2Fpasswd": 404,
                      "/api/images/%2E%2E": 400}, stated
    limits = ServerLimits()
    with live_server(create_app(library, ui=False, limits=limits), limits) as url:
        port = int(url.rsplit(":", 1)[1])
        assert {path: _status_on_the_wire(port, path) for path in stated} == stated
    client = make_client()  # an HTTP client's way, where it keeps the path: the same statuses
    for path in ("/api/images/..%2F..%2Fetc%2Fpasswd", "/api/images/%2E%2E"):
        assert client.get(path).status_code == stated[path], path
    prompts = re.search(r"at most `max_prompts` prompts.*?refused \((\d{3})", SECURITY, re.S)
    assert prompts and int(prompts.group(1)) == answers["`max_prompts`"] == 413


def _rest_errors_sentence() -> str:
    start = README.index("`/openapi.json` is the exact contract")
    return README[start:README.index("`tests/server/test_server_contract.py`", start)]


def test_the_readme_names_every_error_status_the_spec_declares(make_client):
    """Every error status of any operation in /openapi.json is in the README's list, and malformed JSON is where
    the server puts it."""
    spec = make_client(token="tok").get("/openapi.json").json()
    declared = {int(code) for item in spec["paths"].values() for op in item.values() for code in op["responses"]
                if int(code) >= 400}
    sentence = _rest_errors_sentence()
    listed = {int(code) for code in re.findall(r"(?<![\d,.])([45]\d\d) ", sentence)}
    assert declared <= listed, sorted(declared - listed)
    bad_json = make_client().post("/api/search", content=b"{bad", headers={"content-type": "application/json"})
    assert bad_json.status_code == 422
    assert re.search(r"422 [^;]*not valid JSON", sentence), sentence
