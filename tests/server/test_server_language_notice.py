"""A query in a language the model was not trained for is answered with a notice, on every front end.

`clipforge search 猫` on an English-only CLIP prints "notice: the query '猫' is written in zh but model ...
was trained for en only"; the server answered the same query with confident-looking scores and no word of
it (REST and web UI alike). Now `/api/search` and `/api/classify` carry `notice`, and the UI's status line
shows it; an English query and a Chinese model's Chinese query get none.
"""

from __future__ import annotations

import pytest


def test_rest_search_and_classify_say_when_the_query_language_is_unknown_to_the_model(make_client, photos):
    client = make_client()
    chinese = client.post("/api/search", json={"text": "一只猫", "top_k": 2}).json()
    assert chinese["results"] and "written in zh" in chinese["notice"] and "en only" in chinese["notice"]
    assert not chinese["notice"].startswith("notice:")  # a sentence for the page, not the CLI's line
    assert client.post("/api/search", json={"text": "a cat", "top_k": 2}).json()["notice"] is None
    image = photos[0].read_bytes()
    labels = client.post("/api/classify", files={"image": ("p.png", image, "image/png")},
                         data={"labels": "猫, 狗"}).json()
    assert [x["label"] for x in labels["labels"]] and "written in zh" in labels["notice"]
    english = client.post("/api/classify", files={"image": ("p.png", image, "image/png")},
                          data={"labels": "cat, dog"}).json()
    assert english["notice"] is None
    by_image = client.post("/api/search", files={"image": ("p.png", image, "image/png")}, data={"top_k": 1}).json()
    assert by_image["notice"] is None  # no text, nothing to say


def test_a_chinese_model_gets_no_notice_for_chinese(make_client, library, monkeypatch):
    monkeypatch.setattr(library.encoder, "languages", ("zh", "en"), raising=False)
    answer = make_client().post("/api/search", json={"text": "一只猫", "top_k": 1}).json()
    assert answer["notice"] is None


def test_the_web_ui_status_line_carries_the_notice(library, tmp_path):
    pytest.importorskip("gradio")
    import asyncio

    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    handlers = _Handlers(LibraryService(library), str(tmp_path))
    _, status = asyncio.run(handlers.search("一只<b>猫</b>", None, 3, ""))
    assert "**Note:** the query" in status and "written in zh" in status
    assert "<b>" not in status and r"\<b\>" in status  # the user's text is escaped (`ui_handlers.plain`)
    _, status = asyncio.run(handlers.search("a cat", None, 3, ""))
    assert "Note" not in status


def test_the_web_ui_classify_status_carries_the_notice(ui_classify):
    probabilities, status = ui_classify("猫, 狗")
    assert set(probabilities) == {"猫", "狗"} and "written in zh" in status
    probabilities, status = ui_classify("cat, dog")
    assert set(probabilities) == {"cat", "dog"} and "Note" not in status


def test_the_web_ui_says_why_nothing_matched_from_a_worker_thread(library, tmp_path):
    """An empty result's reason reads the store (counts by status, the tags' photos): a full scan of a large
    library, so it runs in the client's turn like the search, never on the event loop every client shares."""
    pytest.importorskip("gradio")
    import asyncio
    import threading

    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    threads = []
    counts = library.store.status_counts

    def spied_counts():
        threads.append(threading.current_thread())
        return counts()

    library.store.status_counts = spied_counts
    handlers = _Handlers(LibraryService(library), str(tmp_path))
    _, status = asyncio.run(handlers.search("a cat", None, 3, "no-such-tag"))
    assert status.startswith("No results: ") and "no-such-tag" in status
    assert threads and threading.main_thread() not in threads  # asyncio.run's loop runs on the main thread
    threads.clear()
    _, status = asyncio.run(handlers.search("a cat", None, 3, ""))
    assert not status.startswith("No results") and not threads  # found something: no reason was read


def test_rest_search_says_why_nothing_matched(make_client, photos):
    client = make_client()
    empty = client.post("/api/search", json={"text": "a cat", "top_k": 2, "tags": "no-such-tag"}).json()
    assert empty["results"] == [] and "no photo has tag 'no-such-tag'" in empty["reason"]
    found = client.post("/api/search", json={"text": "a cat", "top_k": 2}).json()
    assert found["results"] and found["reason"] is None


def test_a_query_longer_than_the_model_reads_is_said_to_be_cut(make_client, library, tmp_path):
    """The CLI's `search` says what a model's context cut off a query; the server searched the beginning of a long
    query and said nothing (REST and web UI alike)."""
    context = int(library.encoder.model.context_length)
    long = " ".join(["a small striped cat asleep on a red sofa"] * (context // 4 + 2))
    answer = make_client().post("/api/search", json={"text": long, "top_k": 2}).json()
    assert answer["results"] and f"reads {context} tokens of a text" in answer["notice"]
    assert "was cut off" in answer["notice"] and not answer["notice"].startswith("notice:")
    short = make_client().post("/api/search", json={"text": "a cat", "top_k": 2}).json()
    assert short["notice"] is None
    import asyncio

    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    pytest.importorskip("gradio")
    _, status = asyncio.run(_Handlers(LibraryService(library), str(tmp_path)).search(long, None, 3, ""))
    assert "**Note:**" in status and "was cut off" in status
