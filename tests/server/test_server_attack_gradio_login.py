"""gradio's `/login` route, outside `/gradio_api/` (a review's finding, reproduced first).

gradio adds `/login` and `/logout` for `launch(auth=...)`; this UI has no gradio login (the token guards its
writes), yet `POST /login` parsed any anonymous `application/x-www-form-urlencoded` body with python-multipart,
a byte at a time: 19 MB of `&` cost 4.1 s of CPU a request on a real server (the REST routes split forms with
`parse_qsl` since an earlier review). Both routes now answer 404 before any byte of the body is read.
"""

from __future__ import annotations

import pytest

from tests.server import test_server_attack_gradio as gradio_attack

ui_env = gradio_attack.ui_env  # the UI app over a library, its upload folder in tmp_path


@pytest.fixture()
def form_parses(monkeypatch):
    """How many form bodies python-multipart's query-string parser was handed (Starlette's form parser uses it)."""
    import python_multipart

    calls = []
    original = python_multipart.QuerystringParser.write

    def write(self, data):
        calls.append(len(data))
        return original(self, data)

    monkeypatch.setattr(python_multipart.QuerystringParser, "write", write)
    return calls


def test_gradios_login_routes_parse_no_form(ui_env, form_parses):
    make, _, _, _ = ui_env
    client = make()
    body = b"&" * 200_000
    for path in ("/login", "/login/"):
        answer = client.post(path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])
        assert answer.json()["error"] == "not_found"
        answer = client.post(path, data={"username": "a", "password": "b"})
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])
    assert form_parses == []
    assert client.get("/logout", follow_redirects=False).status_code == 404
    # the page itself and its config are still served
    assert client.get("/").status_code == 200
    assert client.get("/config").status_code == 200
