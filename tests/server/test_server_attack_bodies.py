"""Attacks with one anonymous request body that used to stall the event loop for everyone.

A 12 MB JSON object with a million keys took seconds in `json.loads` and pydantic on the event
loop (`/healthz` waited 9-20 s); a 20 MB base64 image took 1-3 s in a regular-expression check
(the test sends 60 MB so that the old stall stands out on any machine).
Both run against the real uvicorn server while a second client polls `/healthz`: every health
check must come back well before the stall the attack caused (a generous bound: only a stall
of seconds exceeds it), and the hostile request gets a 4xx that names the limit.
"""

from __future__ import annotations

import base64
import json
import os
import threading

import httpx

from clipforge.server import ServerLimits, create_app

STALL_BOUND_S = 1.5  # a healthy loop answers /healthz in milliseconds; the stalls were 2-20 s here


def _hostile_while_probing(url: str, probe_cls, method: str, path: str, **kwargs) -> tuple[httpx.Response, list]:
    answer: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(timeout=300) as client:
            answer.append(client.request(method, f"{url}{path}", **kwargs))

    with probe_cls(url) as probe:
        while not probe.latencies:  # the probe is running before the attack starts
            threading.Event().wait(0.01)
        sender = threading.Thread(target=send)
        sender.start()
        sender.join(timeout=300)
    return answer[0], probe.latencies


def test_a_json_body_with_a_million_keys_does_not_stall_the_server(library, live_server, health_probe):
    limits = ServerLimits()
    body = ("{" + ",".join(f'"k{i}":0' for i in range(1_000_000)) + ',"text":"a cat"}').encode()
    assert 10_000_000 < len(body) < limits.max_body_bytes
    with live_server(create_app(library, ui=False, limits=limits), limits) as url:
        answer, latencies = _hostile_while_probing(url, health_probe, "POST", "/api/search", content=body,
                                                   headers={"content-type": "application/json"})
        assert max(latencies) < STALL_BOUND_S, f"/healthz waited {max(latencies):.1f} s during the attack"
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"] == "too_complex"
        assert f"{limits.max_json_items:,}" in answer.json()["detail"]
        deep = b'{"text": "x", "tags": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        refused = httpx.post(f"{url}/api/search", content=deep, headers={"content-type": "application/json"})
        assert refused.status_code == 413 and refused.json()["error"] == "too_complex"
        # a normal JSON search is still answered
        ok = httpx.post(f"{url}/api/search", json={"text": "a red picture", "top_k": 3, "tags": ["a", "b"]})
        assert ok.status_code == 200 and len(ok.json()["results"]) == 0  # no image carries these tags


def test_a_large_base64_image_does_not_stall_the_server(library, live_server, health_probe):
    # 60 MB instead of the default 20 MB so the regex's stall (0.8-3 s at 20 MB) cannot pass for a healthy loop
    limits = ServerLimits(max_upload_bytes=60 * 10**6)
    junk = base64.b64encode(os.urandom(limits.max_base64_chars // 4 * 3)).decode()
    assert len(junk) == limits.max_base64_chars
    body = json.dumps({"image": junk, "labels": ["cat", "dog"]})
    with live_server(create_app(library, ui=False, limits=limits), limits) as url:
        answer, latencies = _hostile_while_probing(url, health_probe, "POST", "/api/classify", content=body,
                                                   headers={"content-type": "application/json"})
        assert max(latencies) < STALL_BOUND_S, f"/healthz waited {max(latencies):.1f} s during the attack"
        assert answer.status_code == 415, answer.text  # valid base64 of random bytes: not an image


def test_base64_is_checked_in_linear_time_with_the_same_rule(make_client):
    limits = ServerLimits(max_upload_bytes=4000)
    client = make_client(limits=limits)
    good = base64.b64encode(os.urandom(3000)).decode()
    for bad in (good[:-4] + "AA!=", good[:-4] + "A===", good[:-1], "=AAA" + good[4:], good[:-4] + "AA=A"):
        refused = client.post("/api/classify", json={"image": bad, "labels": "cat"})
        assert refused.status_code == 422 and "standard base64" in refused.json()["detail"], bad[-8:]
    over = client.post("/api/classify", json={"image": good + "AAAA", "labels": "cat"})
    assert over.status_code == 422 and f"{limits.max_base64_chars:,}" in over.json()["detail"]
    assert client.post("/api/classify", json={"image": good, "labels": "cat"}).status_code == 415  # not an image


def test_a_form_field_given_a_json_object_or_list_is_refused(make_client, kit):
    """schemathesis' stateful phase sent `tags` as an object in a multipart search (its JSON text is all a form
    can carry) and the server read it as labels (ST201). The form's comma string is plain text now."""
    client = make_client()
    image = kit.encode(kit.picture((200, 20, 20), 3))
    for value in ('{"a": 1}', "{}", '["cat", "dog"]', "[]"):
        searched = client.post("/api/search", data={"text": "a red picture", "tags": value})
        assert searched.status_code == 422 and "plain text" in searched.json()["detail"], (value, searched.text)
        searched = client.post("/api/search", files={"image": ("a.png", image, "image/png")}, data={"tags": value})
        assert searched.status_code == 422, value
        classified = client.post("/api/classify", files={"image": ("a.png", image, "image/png")},
                                 data={"labels": value})
        assert classified.status_code == 422, value
    spec = client.get("/openapi.json").json()
    form = spec["paths"]["/api/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    tags = form["properties"]["tags"]
    assert {"pattern": r'^[^{}\[\]"]*$'} in tags["allOf"]
    assert client.post("/api/search", data={"text": "a red picture", "tags": "red, blue"}).status_code == 200
    assert client.post("/api/search", json={"text": "x", "tags": ['say "cheese"']}).status_code == 200
