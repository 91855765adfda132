"""Originals, thumbnails, listings and stats take turns per client: one client's many connections cannot fill
the thread pool.

`GET /api/images/{id}` and `/thumb` ran as plain sync routes, each in the thread pool as soon as it
arrived (a thumbnail miss decodes the original; an original is read whole). One client opening a dozen
connections had a dozen reads running side by side and another user's thumbnail waited behind them.
Now they take turns in `service.reads` (two at a time, round-robin between clients).
"""

from __future__ import annotations

import threading

import httpx
import pytest

from clipforge.server import ServerLimits, create_app


def test_one_clients_thumbnail_flood_runs_in_turn_two_at_a_time(library, live_server, monkeypatch, held_calls):
    limits = ServerLimits(max_client_requests=8)
    app = create_app(library, ui=False, limits=limits)
    service = app.state.service
    thumbnail = held_calls(service.thumbnail)
    monkeypatch.setattr(service, "thumbnail", thumbnail)
    image_id = library.list_images(limit=1)[0].id
    answers: list[int] = []

    def fetch() -> None:
        answers.append(httpx.get(f"{url}/api/images/{image_id}/thumb", params={"size": 64}, timeout=120).status_code)

    with live_server(app, limits) as url:
        senders = [threading.Thread(target=fetch) for _ in range(12)]
        for sender in senders:
            sender.start()
        thumbnail.wait_placed(service.reads, 12)  # every request is reading or waiting: an order, not a time
        thumbnail.release.set()
        for sender in senders:
            sender.join(timeout=120)
    assert answers == [200] * 12, answers
    assert thumbnail.peak <= service.reads.slots, f"{thumbnail.peak} reads of one client ran at once"


def test_reads_past_the_cap_are_refused_with_a_429_that_names_them(library, live_server, monkeypatch):
    limits = ServerLimits(max_client_requests=1)  # reads: 4 per client
    app = create_app(library, ui=False, limits=limits)
    service = app.state.service
    release = threading.Event()
    real = service.image_bytes
    monkeypatch.setattr(service, "image_bytes", lambda *args: (release.wait(60), real(*args))[1])
    image_id = library.list_images(limit=1)[0].id
    answers: list[httpx.Response] = []

    def fetch() -> None:
        answers.append(httpx.get(f"{url}/api/images/{image_id}", timeout=120))

    with live_server(app, limits) as url:
        senders = [threading.Thread(target=fetch) for _ in range(4)]
        for sender in senders:
            sender.start()
        for _ in range(6000):
            if service.reads.waiting() + (service.reads.slots - service.reads._free) >= 4:
                break
            threading.Event().wait(0.01)
        refused = httpx.get(f"{url}/api/images/{image_id}", timeout=120)
        release.set()
        for sender in senders:
            sender.join(timeout=120)
    assert refused.status_code == 429 and "image downloads" in refused.json()["detail"], refused.text
    assert [a.status_code for a in answers] == [200] * 4


@pytest.mark.parametrize("route", ["/api/images?offset=0&limit=500", "/api/stats"])
def test_one_clients_listing_or_stats_flood_runs_in_turn_two_at_a_time(library, live_server, monkeypatch, held_calls,
                                                                        route):
    """`GET /api/images` (SQLite skips `offset` rows one by one and reads every image's tags) and `GET /api/stats`
    (counts over the library's tables) ran as plain sync routes, each in the thread pool as soon as it arrived:
    one anonymous client's dozen connections with deep offsets had a dozen scans running side by side. Now
    they take turns in `service.pages` with the UI's library pages (two at a time, round-robin between clients)."""
    limits = ServerLimits(max_client_requests=12)
    app = create_app(library, ui=False, limits=limits)
    service = app.state.service
    name = "list_images" if route.startswith("/api/images") else "stats"
    held = held_calls(getattr(service, name))
    monkeypatch.setattr(service, name, held)
    answers: list[int] = []

    def fetch() -> None:
        answers.append(httpx.get(f"{url}{route}", timeout=120).status_code)

    with live_server(app, limits) as url:
        senders = [threading.Thread(target=fetch) for _ in range(12)]
        for sender in senders:
            sender.start()
        held.wait_placed(service.pages, 12)
        held.release.set()
        for sender in senders:
            sender.join(timeout=120)
    assert answers == [200] * 12, answers
    assert held.peak <= service.pages.slots, f"{held.peak} {name} calls of one client ran at once"


def test_listings_past_the_cap_are_refused_with_a_429_that_names_them(library, live_server, monkeypatch, held_calls):
    limits = ServerLimits(max_client_requests=1)  # pages: 1 per client
    app = create_app(library, ui=False, limits=limits)
    service = app.state.service
    held = held_calls(service.list_images)
    monkeypatch.setattr(service, "list_images", held)
    answers: list[httpx.Response] = []

    def fetch() -> None:
        answers.append(httpx.get(f"{url}/api/images", timeout=120))

    with live_server(app, limits) as url:
        sender = threading.Thread(target=fetch)
        sender.start()
        held.wait_placed(service.pages, 1)
        refused = httpx.get(f"{url}/api/stats", timeout=120)
        held.release.set()
        sender.join(timeout=120)
    assert refused.status_code == 429 and "library listings" in refused.json()["detail"], refused.text
    assert [a.status_code for a in answers] == [200] and answers[0].json()["images"]
