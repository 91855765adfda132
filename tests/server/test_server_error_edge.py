"""The server's one error edge (issue 20.9): every `clipforge.errors.UserError`, from any layer and of any
subclass, reaches a REST client as `{"error", "detail"}` with a 4xx and the web page as its one status
line, with one log line and no traceback; anything else is a bug: 500 with a generic message for the
client (nothing of its internals) and the full traceback in the server log.

The errors are raised deep in the tasks the server calls (the library's tag filter, its upload path,
its classifier), not by the server's own checks, against the real uvicorn server so that what
uvicorn itself would log is seen too.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from clipforge.errors import UserError
from clipforge.library.query import QueryError
from clipforge.server import create_app
from clipforge.server.errors import INTERNAL_DETAIL


class ModelSpaceError(UserError, LookupError):
    """A family member the server has never heard of, and not a ValueError: no list by type can know it."""


def _break_deep(library, monkeypatch, *, bug: bool = False) -> None:
    """Tag filter, classifier and upload fail inside the library, as a user's mistake (or as a bug)."""
    def bad_filter(*args, **kwargs):
        raise QueryError("tag filter 'sunset': no photo was tagged with it (tags: cat, dog)")

    def bad_space(*args, **kwargs):
        if bug:
            raise RuntimeError("secret internal state /very/private/path")
        raise ModelSpaceError("library lib has no model space 'ViT-H-14' (spaces: test-vit-tiny)")

    monkeypatch.setattr(library.store, "image_ids_with_tags", bad_filter)
    monkeypatch.setattr(type(library), "classify_image", bad_space)
    library.max_pixels = 100  # the library's own limit is stricter than the server's: its decoder refuses


def _no_traceback(caplog, capfd) -> None:
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info], caplog.text[-2000:]


def test_a_user_error_deep_in_a_task_is_json_for_the_client_and_one_log_line(library, live_server, kit, monkeypatch,
                                                                                caplog, capfd):
    caplog.set_level(logging.INFO)
    _break_deep(library, monkeypatch)
    app = create_app(library, ui=False)
    image = kit.encode(kit.picture((200, 30, 30), seed=7))
    with live_server(app, app.state.service.limits) as url:
        searched = httpx.post(f"{url}/api/search", json={"text": "a cat", "tags": ["sunset"]}, timeout=60)
        classified = httpx.post(f"{url}/api/classify", files={"image": ("a.png", image)}, data={"labels": "cat"},
                                timeout=60)
        added = httpx.post(f"{url}/api/images", files={"file": ("a.png", image)}, timeout=60)
    assert searched.status_code == 400, searched.text
    assert searched.json() == {"error": "query_error",
                               "detail": "tag filter 'sunset': no photo was tagged with it (tags: cat, dog)"}
    assert classified.status_code == 400, classified.text
    assert classified.json() == {"error": "model_space_error",
                                 "detail": "library lib has no model space 'ViT-H-14' (spaces: test-vit-tiny)"}
    assert added.status_code == 422, added.text  # as for an upload the server's own check cannot decode
    assert added.json()["error"] == "image_load_error" and "too many pixels" in added.json()["detail"]
    assert set(added.json()) == {"error", "detail"}
    _no_traceback(caplog, capfd)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("clipforge.server")]
    for code in ("query_error", "model_space_error", "image_load_error"):
        assert sum(code in line for line in lines) == 1, lines


def test_a_bug_deep_in_a_task_is_a_generic_500_and_a_logged_traceback(library, live_server, kit, monkeypatch,
                                                                       caplog, capfd):
    _break_deep(library, monkeypatch, bug=True)
    app = create_app(library, ui=False)
    image = kit.encode(kit.picture((200, 30, 30), seed=7))
    with live_server(app, app.state.service.limits) as url:
        classified = httpx.post(f"{url}/api/classify", files={"image": ("a.png", image)}, data={"labels": "cat"},
                                timeout=60)
    assert classified.status_code == 500
    assert classified.json() == {"error": "internal_error", "detail": INTERNAL_DETAIL}
    assert "RuntimeError" not in classified.text and "private" not in classified.text
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "bad_space" in caplog.text and "/very/private/path" in caplog.text  # the whole traceback


def _ui(library, tmp_path):
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    upload_dir = tmp_path / "gradio-uploads"
    upload_dir.mkdir(mode=0o700)
    return _Handlers(LibraryService(library), str(upload_dir)), upload_dir


def _uploaded(upload_dir, kit, name: str = "a.png") -> dict:
    folder = upload_dir / ("1" * 64)
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(kit.encode(kit.picture((30, 30, 200), seed=8)))
    return {"path": str(path), "orig_name": name}


def test_the_ui_shows_a_deep_user_error_on_its_status_line_and_keeps_its_state(library, tmp_path, kit, monkeypatch,
                                                                               caplog, capfd):
    import gradio as gr

    caplog.set_level(logging.INFO)
    _break_deep(library, monkeypatch)
    handlers, upload_dir = _ui(library, tmp_path)
    results, status = asyncio.run(handlers.search("a cat", None, 3, "sunset"))
    assert results == gr.skip() and status.startswith("⚠️ **400 query error**") and "tag filter 'sunset'" in status
    probabilities, status = asyncio.run(handlers.classify(_uploaded(upload_dir, kit), "cat", "a photo of a {}."))
    assert probabilities == gr.skip() and status.startswith("⚠️ **400 model space error**") and "ViT-H-14" in status
    status, gallery, summary, files = asyncio.run(handlers.add([_uploaded(upload_dir, kit, "b.png")], "", 0))
    assert status.startswith("Added 0 image(s); 0 already in the library; 1 refused.") and "too many pixels" in status
    _no_traceback(caplog, capfd)


def test_the_ui_shows_a_bug_as_a_generic_status_line_and_logs_its_traceback(library, tmp_path, kit, monkeypatch,
                                                                            caplog):
    import gradio as gr

    _break_deep(library, monkeypatch, bug=True)
    handlers, upload_dir = _ui(library, tmp_path)
    probabilities, status = asyncio.run(handlers.classify(_uploaded(upload_dir, kit), "cat", "a photo of a {}."))
    assert probabilities == gr.skip() and status.startswith("⚠️ **500 internal error**"), status
    assert INTERNAL_DETAIL in status and "private" not in status and "RuntimeError" not in status
    assert [r for r in caplog.records if r.exc_info] and "/very/private/path" in caplog.text


@pytest.mark.parametrize("status", [400, 404, 422, 503, 507])
def test_a_family_member_may_name_its_own_status(status):
    from clipforge.server.errors import api_error

    class StoreBusyError(UserError, RuntimeError):
        http_status = status

    error = api_error(StoreBusyError("the store is busy;\n try again"), "test")
    assert (error.status, error.code, error.detail) == (status, "store_busy_error", "the store is busy; try again")


def test_a_user_error_that_names_a_server_path_shows_only_the_file_name(make_client, library, monkeypatch):
    """A UserError names its file for a person at the terminal; a client of the server sees the file's name,
    never the folders above it (the API publishes no absolute server path)."""
    from clipforge.library.schema import SchemaError

    where = f"{library.paths.root}/library.sqlite3"

    def damaged(*args, **kwargs):
        raise SchemaError(f"library {where} is damaged (see http://example.org/a/b and ./rel/x.txt)")

    monkeypatch.setattr(type(library), "classify_image", damaged)
    client = make_client()
    png = client.post("/api/classify", json={"image": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAA"
                                                      "MBAQDJ/pLvAAAAAElFTkSuQmCC", "labels": ["cat"]})
    assert png.status_code == 400, png.text
    assert png.json() == {"error": "schema_error", "detail": "library library.sqlite3 is damaged (see "
                                                             "http://example.org/a/b and ./rel/x.txt)"}


def test_a_ui_batch_stops_at_the_first_refusal_of_the_library_itself(library, tmp_path, kit, monkeypatch):
    """An "Add" of many files to a read-only library (or a full disk) read, decoded and hashed each of up to 1,000
    files only to refuse each the same way: the batch stops at the first such refusal and counts the rest."""
    from clipforge.server.errors import APIError

    handlers, upload_dir = _ui(library, tmp_path)
    calls = []

    def refuse(image, filename=None):
        calls.append(filename)
        raise APIError(403, "read_only_library", "this server's library is read-only (its folder or disk cannot be "
                                                 "written): the image was not added")

    monkeypatch.setattr(handlers.service, "add", refuse)
    files = [_uploaded(upload_dir, kit, f"f{i}.png") for i in range(5)]
    status, _, _, _ = asyncio.run(handlers.add(files, "", 0))
    assert calls == ["f0.png"]
    assert status.startswith("Added 0 image(s); 0 already in the library; 5 refused.")
    assert "library is read-only" in status and status.count(r": not tried (read\_only\_library)") == 4
    assert r"f4.png: not tried (read\_only\_library)" in status  # Markdown-escaped (`ui_handlers.plain`)


def test_a_ui_batch_stops_at_a_store_that_is_not_answering(library, tmp_path, kit, monkeypatch, caplog):
    """A Milvus store lost during an "Add" of many files: each file was read, hashed and embedded, then waited
    on the dead store (20 files: 20 store calls, 10 s), since the store's error became a UserError (503): a
    refusal of the server's own (any 5xx) stops the batch as the library's own refusals do, logged once."""
    from clipforge.library.milvus_engine import StoreConnectionError

    handlers, upload_dir = _ui(library, tmp_path)
    calls = []

    def lost(image, filename=None):
        calls.append(filename)
        raise StoreConnectionError("Milvus store milvus://10.1.2.3:19530/photos failed (connection refused)")

    monkeypatch.setattr(handlers.service, "add", lost)
    files = [_uploaded(upload_dir, kit, f"f{i}.png") for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="clipforge.server.errors"):
        status, _, _, _ = asyncio.run(handlers.add(files, "", 0))
    assert calls == ["f0.png"]
    assert status.startswith("Added 0 image(s); 0 already in the library; 5 refused.")
    assert "Milvus store is not answering" in status and "10.1.2.3" not in status
    assert status.count(r": not tried (store\_connection\_error)") == 4
    assert "10.1.2.3:19530" in caplog.text  # the operator's log line names the store
