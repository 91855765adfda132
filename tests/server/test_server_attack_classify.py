"""Attacks on the cost of one anonymous classify, and on the order in which clients are served.

100 labels x the 80 `imagenet` templates = 8,000 prompts cost ~6 minutes of CPU with ViT-B/32,
held the encoder so the next user's 2-label request got 503, and went on computing after its
own 503. Now a request over `max_prompts` is refused before any work, work stops between chunks
once its request has been answered, and model work takes turns round-robin between clients.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from clipforge.server import ServerLimits


def _count_prompts(monkeypatch, library, hold: threading.Event | None = None) -> list[int]:
    """Record the size of every text batch the library's model encodes (each held until `hold` is set)."""
    model = library.encoder.model
    original = model.encode_text
    seen: list[int] = []

    def counting(tokens, *args, **kwargs):
        seen.append(int(tokens.shape[0]))
        if hold is not None:
            hold.wait(60)
        return original(tokens, *args, **kwargs)

    monkeypatch.setattr(model, "encode_text", counting)
    return seen


def test_a_classify_over_the_prompt_budget_is_refused_before_any_work(make_client, monkeypatch, library, kit):
    client = make_client()
    seen = _count_prompts(monkeypatch, library)
    image = kit.encode(kit.picture((200, 20, 20), 3))
    labels = ",".join(f"thing{i}" for i in range(100))
    answer = client.post("/api/classify", files={"image": ("a.png", image, "image/png")},
                         data={"labels": labels, "template": "imagenet"})
    assert answer.status_code == 413, answer.text  # a limit, not a malformed request (400 before stop 49)
    assert answer.json()["error"] == "too_many_prompts"
    assert "100 labels x 80 templates = 8,000 prompts" in answer.json()["detail"]
    assert f"{ServerLimits().max_prompts:,}" in answer.json()["detail"]
    assert seen == []  # refused before the model saw a single prompt
    ok = client.post("/api/classify", files={"image": ("a.png", image, "image/png")},
                     data={"labels": "red, blue, green, black, white", "template": "imagenet"})  # 400 prompts
    assert ok.status_code == 200 and sum(seen) == 400


def test_an_answered_classify_stops_computing(make_client, monkeypatch, library, kit, live_server):
    """Against the real server (TestClient ends its event loop with each request, which hid whether the
    work went on). The work is held in its text encoding until the client has its 503: an order of
    events, so a loaded machine cannot finish the 400 prompts before the time limit answers."""
    import httpx

    from clipforge.server import create_app

    limits = ServerLimits(request_timeout_s=0.4)
    answered = threading.Event()
    seen = _count_prompts(monkeypatch, library, hold=answered)
    image = kit.encode(kit.picture((20, 20, 200), 4))
    app = create_app(library, ui=False, limits=limits)
    gate = app.state.service.gate
    with live_server(app, limits) as url:
        answer = httpx.post(f"{url}/api/classify", files={"image": ("a.png", image, "image/png")},
                            data={"labels": "sky, sea, ice, ink, night", "template": "imagenet"}, timeout=60)
        answered.set()
        assert answer.status_code == 503, answer.text
        deadline = time.monotonic() + 60
        while gate._free < gate.slots and time.monotonic() < deadline:  # the worker thread has finished
            time.sleep(0.05)
    assert gate._free == gate.slots
    assert sum(seen) < 400, f"all {sum(seen)} prompts were encoded after the request was answered"
    # The next request (with the same labels) starts from scratch and is served normally.
    monkeypatch.undo()
    quick = make_client().post("/api/classify", files={"image": ("a.png", image, "image/png")},
                               data={"labels": "sky, sea", "template": "a photo of {}."})
    assert quick.status_code == 200


def test_model_work_takes_turns_between_clients():
    """30 requests of client A queued before one of client B: B's runs second, not 31st."""
    from clipforge.server.errors import APIError
    from clipforge.server.fair import FairGate, client_key

    order: list[str] = []

    def job(name: str) -> str:
        time.sleep(0.005)
        order.append(name)
        return name

    async def scenario() -> None:
        gate = FairGate(slots=1, per_client=30)
        a, a2, b = client_key("127.0.0.1", "tab-a"), client_key("127.0.0.1", "tab-a2"), client_key("10.0.0.9")
        tasks = [asyncio.ensure_future(gate.run(a, job, f"a{i}")) for i in range(30)]
        await asyncio.sleep(0)
        tasks.append(asyncio.ensure_future(gate.run(b, job, "b")))
        tasks.append(asyncio.ensure_future(gate.run(a2, job, "other-tab")))
        with pytest.raises(APIError) as refused:
            await gate.run(a, job, "a-too-many")
        assert refused.value.status == 429
        await asyncio.gather(*tasks)
        assert gate.waiting() == 0 and gate._free == 1

    asyncio.run(scenario())
    assert order[0] == "a0" and order.index("b") <= 2 and order.index("other-tab") <= 3, order[:5]
    assert len(order) == 32


def test_a_waiting_request_that_is_abandoned_leaves_the_queue():
    from clipforge.server.fair import FairGate, client_key

    ran: list[str] = []
    release = threading.Event()

    async def scenario() -> None:
        gate = FairGate(slots=1)
        first = asyncio.ensure_future(gate.run(client_key("a"), lambda: (release.wait(5), ran.append("first"))))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(gate.run(client_key("b"), lambda: ran.append("second")))
        await asyncio.sleep(0.05)
        second.cancel()  # e.g. its time limit answered 503
        await asyncio.sleep(0.05)
        assert gate.waiting() == 0
        release.set()
        await first
        await asyncio.sleep(0.05)
        assert gate._free == 1

    asyncio.run(scenario())
    assert ran == ["first"]


def test_the_class_embedding_cache_is_bounded_lru(make_client, monkeypatch, library, kit):
    """Every new label set wrote a file into the library's cache, without bound; now the least recently
    used files go once the folder passes its byte budget."""
    client = make_client()
    image = kit.encode(kit.picture((20, 200, 20), 5))
    cache = library.paths.cache_dir

    def classify(labels: str) -> None:
        answer = client.post("/api/classify", files={"image": ("a.png", image, "image/png")}, data={"labels": labels})
        assert answer.status_code == 200, answer.text

    classify("cat, dog")
    first = list(cache.glob("*.safetensors"))
    assert len(first) == 1
    budget = first[0].stat().st_size * 3 + 10
    monkeypatch.setenv("CLIPFORGE_CLASS_CACHE_BYTES", str(budget))
    classify("bee, ant")
    second = set(cache.glob("*.safetensors")) - set(first)
    classify("sun, moon")
    classify("cat, dog")  # read back from the cache: now the most recently used
    classify("red, blue")  # over the budget: the least recently used ("bee, ant") goes
    files = set(cache.glob("*.safetensors"))
    assert first[0] in files and not second & files and len(files) == 3
    for i in range(8):
        classify(f"thing{i}, other{i}")
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 3 and sum(f.stat().st_size for f in files) <= budget
