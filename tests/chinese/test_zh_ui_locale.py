"""The web UI for a Chinese browser and a Chinese model, without a browser (tests/chinese/test_chinese_browser.py
drives the real page).

- gradio's frontend picked Chinese labels only for a browser language of exactly zh-CN or zh-TW: the page now
  carries `ui_text.browser_locale_script`, which shows gradio any Chinese tag as one of those two by the rule
  the status lines use (`status_locale`).
- The Chinese example query "海滩上的一只狗" outgrew clipforge-tiny-zh's 16 tokens ("只狗" unread).
- The refusals only the page makes were English on a Chinese page, one naming "the Server token field".
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest

pytest.importorskip("gradio")

SCRIPT_TAGS = [
    "zh",
    "zh-CN",
    "zh-cn",
    "zh-TW",
    "zh-HK",
    "zh-MO",
    "zh-SG",
    "zh-MY",
    "zh-Hans",
    "zh-Hans-CN",
    "zh-Hans-HK",
    "zh-Hant",
    "zh-Hant-TW",
    "zh-Hant-CN",
    "ZH-hk",
    "zh-H\u212ant",  # a Kelvin sign: Python's case-insensitive match took it for k (zh-TW), JavaScript's not
    "en-US",
    "en",
    "zhx",
    "fr",
    "",
]


class _Request:
    """What the handlers read of a gradio request: the browser's Accept-Language, no client."""

    def __init__(self, accept_language: str) -> None:
        self.headers = {"accept-language": accept_language}


@pytest.fixture(scope="module")
def zh_service(tmp_path_factory):
    """A LibraryService over an empty library on clipforge-tiny-zh (the shipped Chinese model), token "s"."""
    from clipforge.library import Library
    from clipforge.server.service import LibraryService

    library = Library(tmp_path_factory.mktemp("zh-ui") / "lib", model="clipforge-tiny-zh")
    yield LibraryService(library, token="s")
    library.close()


def _page_app(body: bytes, content_type: str = "text/html; charset=utf-8"):
    """A bare ASGI app answering `body` to every request, and the request headers it saw."""
    seen = []

    async def app(scope, receive, send):
        seen.append(dict(scope["headers"]))
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app, seen


def test_the_page_carries_the_locale_script_before_gradio_code():
    """gradio reads `navigator.language` when its code starts, so the script is in the page's own head; the
    page is asked for uncompressed (a compressed page could not be edited), other answers are left as they are."""
    from starlette.testclient import TestClient

    from clipforge.server.ui import LocaleScriptMiddleware
    from clipforge.server.ui_text import browser_locale_script

    page = b'<html><head><script type="module" src="./assets/index.js"></script></head><body></body></html>'
    app, seen = _page_app(page)
    client = TestClient(LocaleScriptMiddleware(app, script=browser_locale_script()))
    answer = client.get("/", headers={"accept-encoding": "gzip, br"})
    script = browser_locale_script().encode()
    assert answer.content == page.replace(b"<head>", b"<head>" + script)
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert b"accept-encoding" not in seen[-1]
    assert client.get("/config", headers={"accept-encoding": "br"}).content == page  # not the page: untouched
    assert seen[-1][b"accept-encoding"] == b"br"
    app, _ = _page_app(b'{"a": "<head>"}', "application/json")
    assert (
        TestClient(LocaleScriptMiddleware(app, script="<script></script>")).get("/").content
        == b'{"a": "<head>"}'
    )


@pytest.mark.skipif(
    shutil.which("node") is None, reason="node is not installed (the browser test checks the same)"
)
def test_the_page_rule_is_the_status_lines_rule():
    """The script's rule, run by node over tags, gives what `status_locale` gives each tag: labels and status
    lines are one language (zh-HK Traditional, zh-SG Simplified, zh-Hans-HK Simplified, zh-cn Simplified)."""
    from clipforge.server.ui_text import browser_locale_rule, status_locale

    program = f"console.log(JSON.stringify({json.dumps(SCRIPT_TAGS)}.map({browser_locale_rule()})))"
    done = subprocess.run(["node", "-e", program], capture_output=True, text=True, timeout=30, check=True)
    expected = [status_locale(tag) for tag in SCRIPT_TAGS]
    assert json.loads(done.stdout) == expected
    assert expected[:8] == ["zh-CN", "zh-CN", "zh-CN", "zh-TW", "zh-TW", "zh-TW", "zh-CN", "zh-CN"]


def test_the_mounted_page_has_the_script_and_head_matches_get(zh_service, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from clipforge.server import create_app
    from clipforge.server.ui_text import browser_locale_script

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    with TestClient(create_app(zh_service.library, ui=True)) as client:
        page = client.get("/", headers={"accept-encoding": "gzip, br", "accept-language": "zh-HK"})
        head = client.head("/", headers={"accept-encoding": "gzip, br"})
    text = page.text
    assert page.status_code == 200 and text.count(browser_locale_script()) == 1
    assert text.index(browser_locale_script()) < text.index('<script type="module"')  # before gradio's code
    assert head.headers["content-length"] == page.headers["content-length"] == str(len(page.content))


def test_the_chinese_example_query_fits_the_shipped_chinese_model(zh_service):
    """The served model says nothing about its own example: no cut (was: only '海滩上的一' searched), no language."""
    from clipforge.server.ui import model_examples
    from clipforge.text.context_cut import unread_part
    from clipforge.text.families import tokenizer_of

    examples = model_examples(zh_service)
    assert zh_service.search_notice(examples["search"]) is None
    assert examples["search"] == "海边的狗"
    tokenizer = tokenizer_of(zh_service.library.encoder.model)
    assert tokenizer.context_length == 16 and unread_part(tokenizer, examples["search"]) == ""
    labels, templates = zh_service.classify_plan(examples["labels"], examples["template"])
    assert len(labels) == 10 and zh_service.language_notice(", ".join(labels)) is None


def test_the_page_own_refusals_speak_the_browser_language(zh_service, tmp_path):
    """Nothing typed, no image, no files, no token: the page's own words, in its language and naming its fields."""
    from clipforge.server.ui import _Handlers

    handlers = _Handlers(zh_service, str(tmp_path))
    zh, tw, en = _Request("zh-CN,zh;q=0.9"), _Request("zh-HK"), _Request("en-US")
    _, status = asyncio.run(handlers.search("  ", None, 3, "", zh))
    assert status == "⚠️ **400 empty query**: 请输入要找的内容，或选择一张示例图片"
    _, status = asyncio.run(handlers.classify(None, "猫", "{}", tw))
    assert status == "⚠️ **400 no image**: 請先上傳要分類的圖片"
    status, *_ = asyncio.run(handlers.add(None, "", 0, zh))
    assert status == "⚠️ **400 no files**: 请先选择要添加的图片"
    status, *_ = asyncio.run(handlers.add([{"path": "x"}], "", 0, zh))
    assert status == "⚠️ **401 unauthorized**: 这台服务器需要令牌才能添加图片：请在“服务器令牌”一栏中输入"
    status, *_ = asyncio.run(handlers.add([{"path": "x"}], "wrong", 0, tw))
    assert status == "⚠️ **401 unauthorized**: 伺服器權杖不正確"
    status, *_ = asyncio.run(handlers.add([{"path": "x"}], "", 0, en))
    assert status == (
        "⚠️ **401 unauthorized**: this server needs its token to add images: type it in the Server token field"
    )
