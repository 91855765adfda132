"""Attacks with one anonymous request body that used to stall the event loop for everyone.

A 12 MB JSON object with a million keys took seconds in `json.loads` and pydantic on the event
loop (`/healthz` waited 9-20 s); a 20 MB base64 image took 1-3 s in a regular-expression check
(the test sends 60 MB, three times the default limit).
Both run against the real uvicorn server, and each test checks an order of events instead of a
wall-clock bound (which a loaded 2-core CI machine could break): the JSON parse of a body is held
inside its own call until a `/healthz` sent from there has been answered, which can only happen when
the parse runs off the event loop (on the loop, that request waits until the parse gives up, and
the test fails); an over-complex body is refused before any parse starts; and no regular expression
ever reads the big base64 string. The hostile request gets a 4xx that names the limit.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import httpx
import pytest

from clipforge.server import ServerLimits, bodies, body_parsing, create_app

# How long a held parse waits for its /healthz answer before it records "not answered" (only a broken
# server waits this long: a free event loop answers at once, one running the parse never does).
HELD_WAIT_S = 30


class ParseProbe:
    """Wraps `body_parsing._parse_json`: records the size of each body parsed, the thread it ran in, and whether a
    `/healthz` sent from inside the parse call was answered before the parse went on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, url_box: list[str]) -> None:
        self.parsed: list[int] = []
        self.answered_while_held: list[bool] = []
        self.on_loop_thread: list[bool] = []
        original = body_parsing._parse_json

        def held(raw: bytes, model: Any, kind: Any) -> Any:
            import asyncio

            try:
                asyncio.get_running_loop()
                self.on_loop_thread.append(True)
            except RuntimeError:  # no event loop runs in this thread
                self.on_loop_thread.append(False)
            try:
                answer = httpx.get(f"{url_box[0]}/healthz", timeout=HELD_WAIT_S)
                self.answered_while_held.append(answer.status_code == 200)
            except httpx.TimeoutException:
                self.answered_while_held.append(False)
            self.parsed.append(len(raw))
            return original(raw, model, kind)

        monkeypatch.setattr(body_parsing, "_parse_json", held)


class RegexSpy:
    """Stands in for `re` inside `bodies`: records the length of every string a pattern is run over."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import re

        self.lengths: list[int] = []
        real = re

        class Proxy:
            def __getattr__(_, name: str) -> Any:
                return getattr(real, name)

            def search(_, pattern: Any, string: str, *args: Any) -> Any:
                self.lengths.append(len(string))
                return real.search(pattern, string, *args)

            def match(_, pattern: Any, string: str, *args: Any) -> Any:
                self.lengths.append(len(string))
                return real.match(pattern, string, *args)

            def fullmatch(_, pattern: Any, string: str, *args: Any) -> Any:
                self.lengths.append(len(string))
                return real.fullmatch(pattern, string, *args)

        monkeypatch.setattr(bodies, "re", Proxy())


def test_a_json_body_with_a_million_keys_is_refused_before_parsing(library, live_server, monkeypatch):
    limits = ServerLimits()
    url: list[str] = []
    probe = ParseProbe(monkeypatch, url)
    body = ("{" + ",".join(f'"k{i}":0' for i in range(1_000_000)) + ',"text":"a cat"}').encode()
    assert 10_000_000 < len(body) < limits.max_body_bytes
    with live_server(create_app(library, ui=False, limits=limits), limits) as base:
        url.append(base)
        answer = httpx.post(
            f"{base}/api/search", content=body, headers={"content-type": "application/json"}, timeout=300
        )
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"] == "too_complex"
        assert f"{limits.max_json_items:,}" in answer.json()["detail"]
        assert probe.parsed == []  # refused on a count of bytes: json.loads never saw it
        deep = b'{"text": "x", "tags": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        refused = httpx.post(f"{base}/api/search", content=deep, headers={"content-type": "application/json"})
        assert refused.status_code == 413 and refused.json()["error"] == "too_complex"
        assert probe.parsed == []
        # a body under the limit is parsed off the event loop: a /healthz sent from inside its parse is answered
        ok = httpx.post(
            f"{base}/api/search", json={"text": "a red picture", "top_k": 3, "tags": ["a", "b"]}, timeout=300
        )
        assert ok.status_code == 200 and len(ok.json()["results"]) == 0  # no image carries these tags
    assert probe.answered_while_held == [True], (
        "the event loop could not answer /healthz while a body was parsed"
    )
    assert len(probe.parsed) == 1 and probe.on_loop_thread == [False]


def test_a_large_base64_image_is_checked_off_the_event_loop_without_a_regex(
    library, live_server, monkeypatch
):
    # 60 MB instead of the default 20 MB: three times what a default server accepts
    limits = ServerLimits(max_upload_bytes=60 * 10**6)
    junk = base64.b64encode(os.urandom(limits.max_base64_chars // 4 * 3)).decode()
    assert len(junk) == limits.max_base64_chars
    body = json.dumps({"image": junk, "labels": ["cat", "dog"]})
    url: list[str] = []
    probe, regex = ParseProbe(monkeypatch, url), RegexSpy(monkeypatch)
    with live_server(create_app(library, ui=False, limits=limits), limits) as base:
        url.append(base)
        answer = httpx.post(
            f"{base}/api/classify", content=body, headers={"content-type": "application/json"}, timeout=300
        )
        assert answer.status_code == 415, answer.text  # valid base64 of random bytes: not an image
        assert httpx.get(f"{base}/healthz").status_code == 200
    assert probe.answered_while_held == [True], (
        "the event loop could not answer /healthz while a body was parsed"
    )
    assert probe.parsed == [len(body)] and probe.on_loop_thread == [False]
    assert regex.lengths and max(regex.lengths) < 10_000, "a regular expression read the base64 string"


def test_base64_is_checked_in_linear_time_with_the_same_rule(make_client):
    limits = ServerLimits(max_upload_bytes=4000)
    client = make_client(limits=limits)
    good = base64.b64encode(os.urandom(3000)).decode()
    for bad in (good[:-4] + "AA!=", good[:-4] + "A===", good[:-1], "=AAA" + good[4:], good[:-4] + "AA=A"):
        refused = client.post("/api/classify", json={"image": bad, "labels": "cat"})
        assert refused.status_code == 422 and "standard base64" in refused.json()["detail"], bad[-8:]
    over = client.post("/api/classify", json={"image": good + "AAAA", "labels": "cat"})
    assert over.status_code == 422 and f"{limits.max_base64_chars:,}" in over.json()["detail"]
    assert (
        client.post("/api/classify", json={"image": good, "labels": "cat"}).status_code == 415
    )  # not an image


def test_a_form_field_given_a_json_object_or_list_is_refused(make_client, kit):
    """schemathesis' stateful phase sent `tags` as an object in a multipart search (its JSON text is all a form
    can carry) and the server read it as labels (ST201). The form's comma string is plain text now."""
    client = make_client()
    image = kit.encode(kit.picture((200, 20, 20), 3))
    for value in ('{"a": 1}', "{}", '["cat", "dog"]', "[]"):
        searched = client.post("/api/search", data={"text": "a red picture", "tags": value})
        assert searched.status_code == 422 and "plain text" in searched.json()["detail"], (
            value,
            searched.text,
        )
        searched = client.post(
            "/api/search", files={"image": ("a.png", image, "image/png")}, data={"tags": value}
        )
        assert searched.status_code == 422, value
        classified = client.post(
            "/api/classify", files={"image": ("a.png", image, "image/png")}, data={"labels": value}
        )
        assert classified.status_code == 422, value
    spec = client.get("/openapi.json").json()
    form = spec["paths"]["/api/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    tags = form["properties"]["tags"]
    assert {"pattern": r'^[^{}\[\]"]*$'} in tags["allOf"]
    assert client.post("/api/search", data={"text": "a red picture", "tags": "red, blue"}).status_code == 200
    assert client.post("/api/search", json={"text": "x", "tags": ['say "cheese"']}).status_code == 200


def test_json_the_parser_cannot_take_is_explained_in_the_apis_words(make_client):
    """A deep nest answered "maximum recursion depth exceeded while decoding a JSON array from a unicode string",
    a 5,000-digit number "... use sys.set_int_max_str_digits() to increase the limit": the server's interpreter
    and its settings, told to an anonymous client."""
    client = make_client()
    headers = {"content-type": "application/json"}
    deep = client.post("/api/search", content="[" * 2000 + "]" * 2000, headers=headers)
    assert deep.json() == {
        "error": "invalid_request",
        "detail": "body: not valid JSON (arrays or objects nested too deeply)",
    }, deep.text
    digits = client.post(
        "/api/search", content=b'{"text": "x", "top_k": ' + b"9" * 5000 + b"}", headers=headers
    )
    assert digits.json() == {
        "error": "invalid_request",
        "detail": "body: not valid JSON (a number with more than 4,300 digits)",
    }, digits.text
    assert (
        client.post("/api/search", content=b'{"text": ', headers=headers)
        .json()["detail"]
        .startswith("body: not valid JSON (Expecting value: line 1 column 10")
    )
