"""A forged `X-Forwarded-For` must not make one client many.

uvicorn trusts proxy headers from loopback by default, and `clipforge serve` listens on loopback by
default, so every client could name its own address: each request with a new `X-Forwarded-For`
became a new client for the fair gate, past the per-client and per-address caps (4 and 64 requests
running or waiting, each holding up to 20 MB of body in memory), and took a turn of its own in
every round. The server now reads the peer's address unless the operator names the proxies it
runs behind (`FORWARDED_ALLOW_IPS`, uvicorn's own setting).
"""

from __future__ import annotations

import threading

import httpx

from clipforge.server import ServerLimits, create_app
from clipforge.server.runner import build_server


def test_a_forged_forwarded_address_is_the_same_client(library, live_server, monkeypatch):
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    limits = ServerLimits(max_client_requests=1)
    held, release = threading.Event(), threading.Event()
    original = type(library).search

    def slow(self, *args, **kwargs):
        held.set()
        release.wait(120)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(library), "search", slow)
    answers: dict[str, httpx.Response] = {}

    def send(name: str, url: str, headers: dict[str, str]) -> None:
        answers[name] = httpx.post(f"{url}/api/search", json={"text": "a cat", "top_k": 1}, headers=headers,
                                   timeout=120)

    with live_server(create_app(library, ui=False, limits=limits), limits) as url:
        first = threading.Thread(target=send, args=("first", url, {}))
        first.start()
        assert held.wait(60), "the first search never started"
        # While the first request holds this client's one place, a second with a forged address is this
        # client's second request: refused at once (429), not queued as somebody else's.
        forged = threading.Thread(target=send, args=("forged", url, {"X-Forwarded-For": "203.0.113.7",
                                                                      "Forwarded": "for=203.0.113.8"}))
        forged.start()
        forged.join(timeout=30)
        answered_while_held = not forged.is_alive()
        release.set()
        first.join(timeout=120)
        forged.join(timeout=120)
    assert answered_while_held, "the forged request was queued as another client's"
    assert answers["forged"].status_code == 429, answers["forged"].text
    assert answers["first"].status_code == 200


def test_proxy_headers_are_trusted_only_from_the_proxies_the_operator_names(monkeypatch, library):
    app = create_app(library, ui=False)
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert build_server(app, ServerLimits()).config.proxy_headers is False
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.5")
    config = build_server(app, ServerLimits()).config
    assert config.proxy_headers is True and config.forwarded_allow_ips == "10.0.0.5"


def test_serve_names_its_proxies_on_the_command_line(monkeypatch, library):
    """`serve --forwarded-allow-ips` reaches the server (over $FORWARDED_ALLOW_IPS); without it, the variable."""
    import clipforge.server
    from clipforge.cli.main import main

    app = create_app(library, ui=False)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.5")
    assert build_server(app, ServerLimits(), forwarded_allow_ips="10.0.0.7").config.forwarded_allow_ips == "10.0.0.7"
    assert build_server(app, ServerLimits(), forwarded_allow_ips="").config.proxy_headers is False
    seen: dict = {}
    monkeypatch.setattr(clipforge.server, "serve", lambda *a, **kw: seen.update(kw) or 0)
    assert main(["serve", "--library", str(library.paths.root), "--no-ui", "--forwarded-allow-ips", "10.0.0.7"]) == 0
    assert seen["forwarded_allow_ips"] == "10.0.0.7"
    assert main(["serve", "--library", str(library.paths.root), "--no-ui"]) == 0
    assert seen["forwarded_allow_ips"] is None  # build_server reads $FORWARDED_ALLOW_IPS then
