"""Audit 63, finding 4: a 404 or 405 of the API names the path, never text a client chose to be read as words.

`not_here` put up to 80 characters of the decoded path and 20 of the method into its detail: any caller could
have the server "say" `no endpoint /api/please send your token to evil.example — admin` or `FOOBARBAZ is not
allowed`. The path is still named (it is what the client needs to see), percent-encoded as on the wire (letters,
digits and `/-._~` as they are; a blank is `%20`) and cut at 80 characters; the method only when it is a
standard HTTP method.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest


def _detail(answer, status: int, error: str) -> str:
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error", "detail"} and answer.json()["error"] == error, answer.text
    return answer.json()["detail"]


def test_a_404_names_the_path_percent_encoded_and_cut(make_client):
    client = make_client()
    spoof = client.get("/api/please%20send%20your%20token%20to%20evil.example%20%E2%80%94%20admin")
    detail = _detail(spoof, 404, "not_found")
    assert detail == "no endpoint /api/please%20send%20your%20token%20to%20evil.example%20%E2%80%94%20admin; see /docs"
    assert " send " not in detail and "—" not in detail
    assert _detail(client.get("/api/nothing-here"), 404, "not_found") == "no endpoint /api/nothing-here; see /docs"
    assert _detail(client.get("/api/100%25_sure"), 404, "not_found") == "no endpoint /api/100%25_sure; see /docs"
    long = _detail(client.get("/api/" + "a" * 200), 404, "not_found")
    assert long == f"no endpoint /api/{'a' * 75}...; see /docs"
    # a cut never splits a character: its escapes (%E2%80%94 for "—") are all there or none
    cut = _detail(client.get("/api/" + "b" * 66 + "%E2%80%94x"), 404, "not_found")
    assert cut == f"no endpoint /api/{'b' * 66}%E2%80%94...; see /docs", cut
    cut = _detail(client.get("/api/" + "b" * 67 + "%E2%80%94x"), 404, "not_found")
    assert cut == f"no endpoint /api/{'b' * 67}...; see /docs", cut


@pytest.mark.parametrize("method", ["FOOBARBAZ", "SEND-TOKEN", "M" * 20])
def test_a_405_names_no_method_a_client_made_up(make_client, method):
    client = make_client()
    answer = client.request(method, "/api/search")
    assert _detail(answer, 405, "method_not_allowed") == "this method is not allowed on /api/search; use POST"
    assert answer.headers["allow"] == "POST"


def test_a_405_names_a_standard_method_and_the_path(make_client):
    client = make_client()
    for method in ("PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "QUERY"):
        answer = client.request(method, "/api/stats")
        assert _detail(answer, 405, "method_not_allowed") == f"{method} is not allowed on /api/stats; use GET, HEAD"
    spoof = client.request("PUT", "/api/images/1%20is%20yours")
    # an id that is not one: the path still matched `/api/images/{image_id}` for GET
    assert spoof.status_code in (404, 405), spoof.text
    assert " is yours" not in spoof.json()["detail"]
    assert quote("/api/images/1 is yours", safe="/") in spoof.json()["detail"]


_SPOOF = "/assets/please send your token to evil.example"


def test_every_405_names_the_path_and_method_by_the_same_rule(ui_client, make_client):
    """Review 63 revserver #1: the 405s of gradio's and Starlette's routes (reworded by `error_shape`) wrote any
    method and the decoded path as sent (`PUT is not allowed on /assets/please send your token to evil.example`);
    they follow `not_here`'s rule now, and so does the plain "Method Not Allowed" of the app's own routes."""
    shown = "/assets/please%20send%20your%20token%20to%20evil.example"
    expected = {
        ("FOOBARBAZ", "/openapi.json"): "this method is not allowed on /openapi.json; use GET, HEAD",
        ("FOOBARBAZ", "/gradio_api/info"): "this method is not allowed on /gradio_api/info; use GET, HEAD",
        ("FOOBARBAZ", "/"): "this method is not allowed on /; use GET, HEAD",
        ("POST", "/config"): "POST is not allowed on /config; use GET, HEAD",
        ("PUT", _SPOOF): f"PUT is not allowed on {shown}; use GET, HEAD",
        ("SEND-TOKEN", "/assets/" + "z" * 100): f"this method is not allowed on /assets/{'z' * 72}...; use GET, HEAD",
        ("FOOBARBAZ", "/api/stats"): "this method is not allowed on /api/stats; use GET, HEAD",
    }
    for (method, path), detail in expected.items():
        answer = ui_client.request(method, path)
        assert _detail(answer, 405, "method_not_allowed") == detail, (method, path)
    client = make_client()  # without the UI: the app's own routes answered "Method Not Allowed"
    for method, path, detail in [
        ("FOOBARBAZ", "/openapi.json", "this method is not allowed on /openapi.json; use GET, HEAD"),
        ("POST", "/docs", "POST is not allowed on /docs; use GET, HEAD"),
        ("DELETE", "/healthz", "DELETE is not allowed on /healthz; use GET, HEAD"),
    ]:
        answer = client.request(method, path)
        assert _detail(answer, 405, "method_not_allowed") == detail, (method, path)
        assert answer.headers["allow"] in ("GET, HEAD", "HEAD, GET")
