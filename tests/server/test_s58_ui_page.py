"""The web page as a user meets it: status lines shown as written, buttons that work, a restart that is no attack.

* Status lines were HTML-escaped and then drawn as Markdown: the no-tags hint read `--labels &quot;cat, dog&quot;`
  inside its code span, and a refused file named `![b](https://host/x).jpg` became an image the browser fetched from
  that host. Now every client-chosen or library text is Markdown-escaped (`ui_handlers.plain`).
* gradio's default gallery buttons: share failed without a Hugging Face Space, download saved 256-px thumbnails
  named `thumb`, `thumb-2`, ...; the footer's settings offered a language picker that left our text untranslated.
* After a restart, the image the page still showed (its path in the last run's upload folder) was refused with the
  403 meant for an attacker's path ("the server never opens a path sent by a client"); now a 410 says what happened.
"""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest
from fastapi.testclient import TestClient

from clipforge.server import create_app

gr = pytest.importorskip("gradio")


def _unescaped(markdown: str) -> str:
    """What CommonMark shows for backslash escapes of ASCII punctuation."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


@pytest.mark.parametrize("name", [
    "![b](https://198.51.100.7/x).jpg",
    "<img src=x onerror=alert(1)>.png",
    "[x](javascript:alert(1)).png",
    "1. `code` *em* _u_ ~~s~~ $x$ | a | & &amp; \\ .png",
    "www.evil.example.jpg",
    "mail@evil.example.jpg",
    "see https://evil.example/x now",
])
def test_a_status_line_shows_a_hostile_name_as_written(name):
    """Before: `html.escape` (entities shown as written in code spans; Markdown images, links and lists kept)."""
    from clipforge.server.ui_handlers import plain

    shown = plain(name)
    assert _unescaped(shown) == name
    assert not re.search(r"(?<!\\)[!\[\]<>`*_~$&|]", shown.replace("\\\\", ""))  # no mark left unescaped
    assert not re.match(r"\d+\.", shown)  # no ordered list
    assert not re.search(r"(?i)www\.|(?<!\\):(?=//)|(?<!\\)@", shown)  # no GFM autolink (review: www.x and a@b.c were links)


def test_the_tag_hint_shows_its_command_as_typed(library, tmp_path):
    """Before: `clipforge tag --labels &quot;cat, dog, car&quot;` inside a code span."""
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    handlers = _Handlers(LibraryService(library), str(tmp_path))
    _, status = asyncio.run(handlers.search("a red picture", None, 5, "no-such-tag"))
    assert "&quot;" not in status and "&#x27;" not in status
    assert 'clipforge tag --labels "cat, dog, car"' in _unescaped(status)


def _config(client: TestClient) -> dict:
    return client.get("/config").json()


def test_the_page_offers_no_button_that_cannot_work_here(library, tmp_path, monkeypatch):
    """Before: galleries and images had share and download buttons, the footer a settings page."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    with TestClient(create_app(library, ui=True)) as client:
        config = _config(client)
    shown = {c["props"].get("elem_id"): c["props"].get("buttons") for c in config["components"]
             if c.get("type") in ("gallery", "image")}
    assert shown == {"search-image": ["fullscreen"], "search-results": ["fullscreen"],
                     "classify-image": ["fullscreen"], "library-gallery": ["fullscreen"]}, shown
    assert config["footer_links"] == ["gradio"]


def test_an_image_from_before_a_restart_is_a_410_saying_so(library, tmp_path, monkeypatch, photos):
    """Before: 403 "files must be uploaded through this page first, in this browser; the server never opens a path
    sent by a client" for the image the page still showed."""
    this_run = tmp_path / "clipforge-ui-uploads-new1"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(this_run))
    earlier = tmp_path / "clipforge-ui-uploads-old1" / "f00d" / "red.png"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(photos[0].read_bytes())
    with TestClient(create_app(library, ui=True), raise_server_exceptions=False) as client:
        blocks = client.app.state.ui_blocks
        classify = next(i for i, fn in enumerate(blocks.fns.values()) if fn.name == "classify")

        def join(path: str):
            return client.post("/gradio_api/queue/join", json={
                "fn_index": classify, "session_hash": uuid.uuid4().hex, "event_data": None, "trigger_id": None,
                "data": [{"path": path, "orig_name": "red.png", "meta": {"_type": "gradio.FileData"}},
                         "cat, dog", "a photo of a {}."]})

        restarted = join(str(earlier))
        foreign = join(str(tmp_path / "elsewhere" / "red.png"))
        sibling_trick = join(str(this_run) + "/../clipforge-ui-uploads-old1/../../etc/passwd")
    assert restarted.status_code == 410, restarted.text
    assert restarted.json() == {"error": "gone", "detail": "red.png: the server restarted since this image was "
                                "uploaded, and uploads do not outlive it; upload it again"}
    assert foreign.status_code == 403 and "never opens a path" in foreign.json()["detail"]
    assert sibling_trick.status_code == 403
