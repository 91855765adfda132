"""The web page links each photo it shows to its original (stop 49's note: web UI audit #3, left then).

The galleries hold 256-px thumbnails; gradio's download buttons (removed) saved those, and a gallery `select`
event would send a server path the upload guard refuses. The search status and the Library tab's summary now end
with one line of links, in the gallery's order, to `GET /api/images/{id}` (anonymous, as the REST API documents).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("gradio")

LINK = re.compile(r"\[((?:[^\]\\]|\\.)*)\]\((http://testserver/api/images/(\d+))\)")


class _Request:
    """What the handlers read of a gradio request: the page's own base URL and language."""

    def __init__(self, language: str = "en-US") -> None:
        self.headers = {"accept-language": language, "host": "testserver"}


def _handlers(library, tmp_path):
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    return _Handlers(LibraryService(library), str(tmp_path))


def test_every_result_links_to_its_original_bytes(library, tmp_path, make_client) -> None:
    handlers = _handlers(library, tmp_path)
    items, status = asyncio.run(handlers.search("a red photo", None, 5, "", _Request()))
    lines = status.split("\n\n")
    assert lines[-1].startswith("Originals (full size): ")
    links = LINK.findall(lines[-1])
    assert len(links) == len(items) == 5
    client = make_client()
    for (name, url, image_id), (thumb, caption) in zip(links, items, strict=True):
        assert thumb.startswith(url + "/thumb?")  # the same photo as the gallery item at that place
        record = library.store.image(int(image_id))
        assert name == Path(record.path).name and caption.endswith(name)
        answer = client.get(url.removeprefix("http://testserver"))
        assert answer.status_code == 200 and answer.content == Path(record.path).read_bytes()


def test_the_library_page_links_its_photos_in_chinese_too(library, tmp_path) -> None:
    items, summary = asyncio.run(_handlers(library, tmp_path).first_page(_Request("zh-CN")))
    last = summary.split("\n\n")[-1]
    assert last.startswith("原图（完整尺寸）：")
    assert [f"{url}/thumb" for _, url, _ in LINK.findall(last)] == [thumb.split("?")[0] for thumb, _ in items]


def test_a_hostile_name_is_text_not_a_link(library, tmp_path, photos) -> None:
    """A file named like Markdown links and images: one link per photo, to its integer id, nothing else."""
    hostile = tmp_path / "named"
    hostile.mkdir()
    for i, name in enumerate(["a](http:evil.example) [b.png", "![x](https:evil.example y).png",
                              "<img src=x onerror=alert(1)>.png", "www.evil.example.png"]):
        shutil.copy(photos[i], hostile / name)
    library.add(hostile, workers=0, progress=False)
    items, summary = asyncio.run(_handlers(library, tmp_path).first_page(_Request()))
    last = summary.split("\n\n")[-1]
    assert len(LINK.findall(last)) == len(items) == len(photos) + 4
    targets = re.findall(r"(?<!\\)\]\(([^)]*)\)", last)  # a "](" Markdown reads: not backslash-escaped
    assert len(targets) == len(items) and all(re.fullmatch(r"http://testserver/api/images/\d+", t) for t in targets)
    assert not re.search(r"(?<!\\)<img", last) and "\\<img src=x onerror=alert(1)\\>.png" in last


def test_a_bidi_control_in_a_name_reorders_nothing(library, tmp_path, photos) -> None:
    """Review: a name holding U+202E (right-to-left override) reversed every link after it in a real browser, the
    names and their order (`x\u202egnp.exe` read as `x.exe.png`). Bidi controls are shown as U+FFFD."""
    named = tmp_path / "named"
    named.mkdir()
    shutil.copy(photos[0], named / "invoice\u202egnp.exe.png")
    shutil.copy(photos[1], named / "b\u2067c.png")
    library.add(named, workers=0, progress=False)
    _, summary = asyncio.run(_handlers(library, tmp_path).first_page(_Request()))
    last = summary.split("\n\n")[-1]
    assert not re.search("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]", last)
    assert "[invoice\ufffdgnp.exe.png](" in last and "[b\ufffdc.png](" in last
