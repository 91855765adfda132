"""The web UI speaks Chinese to a Chinese browser, and starts a Chinese model with Chinese examples.

Every label, button, tab and heading of the UI was English whatever the browser's language, and the
Classify tab offered "cat, dog, ..." to a Chinese-CLIP model (whose English scores are noise). Now the
fixed text is a gradio `I18n` key with English, Simplified and Traditional Chinese in the package data
file `server/ui_text.json`; the status lines the server writes follow the request's Accept-Language;
and the example values follow the served model's first language.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest

pytest.importorskip("gradio")

CHROMIUM = Path("/usr/bin/chromium")
# Props a person reads on the page (gradio translates these when they hold a marker).
SHOWN = ("label", "info", "placeholder", "description", "title")
SHOWN_VALUES = ("markdown", "button", "html")


def _blocks(library, tmp_path, monkeypatch=None, languages=None):
    """The UI's Blocks over `library`; `languages`: the model's, for this test only (the encoder is shared)."""
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import build_ui

    if languages is not None:
        monkeypatch.setattr(library.encoder, "languages", languages, raising=False)
    return build_ui(LibraryService(library), str(tmp_path))


def _markers(text: str) -> list[str]:
    """The translation keys in one prop as gradio's frontend finds them (`__i18n__{json}`)."""
    keys = []
    while "__i18n__" in text:
        start = text.index("__i18n__") + len("__i18n__")
        end = text.index("}", start) + 1
        keys.append(json.loads(text[start:end])["key"])
        text = text[end:]
    return keys


def _shown_text(config: dict) -> list[tuple[str, str, str]]:
    """(component type, prop, text) for every piece of fixed text the Blocks config shows."""
    out = []
    for component in config["components"]:
        props = component.get("props", {})
        names = SHOWN + (("value",) if component["type"] in SHOWN_VALUES else ())
        out += [(component["type"], name, str(props[name])) for name in names if props.get(name)]
    return out


def test_every_fixed_text_of_the_ui_is_a_translated_key(library, tmp_path):
    """Fails when a label, button or heading is added as a plain string, or its key lacks a translation."""
    config = _blocks(library, tmp_path).get_config_file()
    shown = _shown_text(config)
    assert len(shown) >= 25  # tabs, labels, buttons, accordions, the heading
    used = set()
    for kind, prop, text in shown:
        keys = _markers(text)
        # the search placeholder is the model's example query (checked below), not fixed text
        if not keys and prop == "placeholder" and text == "a dog on the beach":
            continue
        assert len(keys) == 1, (
            f"{kind}.{prop} = {text!r}: fixed text needs one ui_text key (gradio translates one)"
        )
        assert text.startswith("__i18n__"), f"{kind}.{prop} = {text!r}: the key must come first"
        used.update(keys)
    from clipforge.server.ui_text import ui_translations

    translations = config["i18n_translations"]
    assert translations == json.loads(json.dumps(ui_translations()))
    english = translations["en"]
    for locale in ("zh-CN", "zh-TW", "zh"):
        assert set(translations[locale]) == set(english), locale
        assert all(translations[locale][k] != english[k] for k in used), locale  # really translated
    assert used <= set(english)
    # the Chinese model's twin (below); the offline banner, built in ui.py (test_s60_ui_words)
    assert set(english) - used == {"tags_placeholder_zh_model", "offline_model_notice"}


def test_the_blocks_config_carries_chinese_for_a_zh_browser(library, tmp_path):
    """What a zh-CN browser receives: the keys on the page and their Chinese in the config's translations."""
    config = _blocks(library, tmp_path).get_config_file()
    zh, tw = config["i18n_translations"]["zh-CN"], config["i18n_translations"]["zh-TW"]
    by_key = {key: (kind, prop) for kind, prop, text in _shown_text(config) for key in _markers(text)}
    assert (
        by_key["tab_search"] == ("tabitem", "label")
        and zh["tab_search"] == "搜索"
        and tw["tab_search"] == "搜尋"
    )
    assert by_key["classify_button"] == ("button", "value") and zh["classify_button"] == "分类"
    assert by_key["labels_label"] == ("textbox", "label") and zh["labels_label"] == "标签（用逗号分隔）"
    heading = next(text for kind, _, text in _shown_text(config) if kind == "markdown" and "header" in text)
    assert heading.endswith(" **test-vit-tiny** · REST API: [/docs](/docs)")  # the model's name, untranslated
    assert zh["header"].startswith("## clipforge — 搜索和分类你的照片")


def test_the_mounted_app_serves_the_translations(ui_client):
    config = ui_client.get("/config").json()
    assert config["i18n_translations"]["zh-CN"]["search_button"] == "搜索"
    assert config["i18n_translations"]["en"]["search_button"] == "Search"


def test_a_chinese_model_starts_with_chinese_examples(library, tmp_path, monkeypatch):
    config = _blocks(library, tmp_path, monkeypatch, ("zh", "en")).get_config_file()
    values = {c["props"].get("elem_id"): c["props"] for c in config["components"] if c["type"] == "textbox"}
    assert values["labels"]["value"] == "猫, 狗, 鸟, 汽车, 飞机, 船, 马, 卡车, 青蛙, 鹿"
    assert values["template"]["value"] == "一张{}的照片"
    assert values["search-text"]["placeholder"] == "海边的狗"
    placeholders = [_markers(str(c["props"].get("placeholder"))) for c in config["components"]]
    assert ["tags_placeholder_zh_model"] in placeholders and ["tags_placeholder"] not in placeholders
    # the English model keeps English examples (multilingual models too: they read English)
    for languages in (("en",), ("multilingual",)):
        config = _blocks(library, tmp_path, monkeypatch, languages).get_config_file()
        values = {
            c["props"].get("elem_id"): c["props"] for c in config["components"] if c["type"] == "textbox"
        }
        assert (
            values["labels"]["value"].startswith("cat, dog")
            and values["template"]["value"] == "a photo of a {}."
        )


def test_the_chinese_defaults_classify_without_a_language_notice(library, tmp_path, photos, monkeypatch):
    """The Chinese defaults are labels and a template the service takes as they are (no notice, ten labels)."""
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers, model_examples

    monkeypatch.setattr(library.encoder, "languages", ("zh",), raising=False)
    service = LibraryService(library)
    examples = model_examples(service)
    labels, templates = service.classify_plan(examples["labels"], examples["template"])
    assert len(labels) == 10 and templates == ["一张{}的照片"]
    upload = tmp_path / "up" / "p.png"
    upload.parent.mkdir()
    upload.write_bytes(photos[0].read_bytes())
    image = {"path": str(upload), "orig_name": "p.png", "meta": {"_type": "gradio.FileData"}}
    probabilities, status = asyncio.run(
        _Handlers(service, str(tmp_path)).classify(image, examples["labels"], examples["template"])
    )
    assert set(probabilities) == set(labels) and "Note" not in status


class _Request:
    """What the handlers read of a gradio request: headers (the browser's Accept-Language) and no client."""

    def __init__(self, accept_language: str) -> None:
        self.headers = {"accept-language": accept_language}


@pytest.mark.parametrize(
    ("header", "locale"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hans-CN", "zh-CN"),
        ("zh-TW,zh;q=0.9", "zh-TW"),
        ("zh-HK", "zh-TW"),
        ("zh-Hant-HK", "zh-TW"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("en;q=0.5,zh;q=0.9", "zh-CN"),
        ("", "en"),
        ("fr-FR", "en"),
        ("zhx", "en"),
        ("zh-Hans-HK", "zh-CN"),  # Simplified script named outright, in Hong Kong: was Traditional
        ("zh-Hans-TW,en;q=0.5", "zh-CN"),
        ("zh-CN;q=0,en;q=0", "en"),  # q=0 refuses a language (RFC 9110): was Chinese
    ],
)
def test_status_lines_follow_the_accept_language(header, locale):
    from clipforge.server.ui_text import status_locale

    assert status_locale(header) == locale


def test_the_server_writes_status_lines_in_the_browser_language(library, tmp_path):
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    handlers = _Handlers(LibraryService(library), str(tmp_path))
    zh = _Request("zh-CN,zh;q=0.9")
    _, status = asyncio.run(handlers.search("a cat", None, 3, "", zh))
    first, originals = status.split("\n\n")
    assert re.fullmatch(r"3 个结果，用时 \d+ 毫秒，模型 test-vit-tiny（分数 = 与查询的余弦相似度）。", first), status
    assert originals.startswith("原图（完整尺寸）：[") and originals.count("](http://") == 3
    _, status = asyncio.run(handlers.search("一只猫", None, 3, "", zh))
    assert "**注意：** 查询“一只猫”是 zh 文字" in status  # the language notice in the page's language (s60)
    _, status = asyncio.run(handlers.search("a cat", None, 3, "no-such-tag", _Request("zh-TW")))
    assert status.startswith("沒有結果：") and "no-such-tag" in status and status.endswith("。")
    _, status = asyncio.run(handlers.search("a cat", None, 3, "", _Request("en-US")))
    assert status.startswith("3 results in ")
    _, status = asyncio.run(handlers.search("a cat", None, 1, "", _Request("en-US")))
    assert status.startswith("1 result in "), status  # was "1 results"
    items, summary = asyncio.run(handlers.first_page(zh))
    assert summary.split("\n\n")[0] == "图库中有 **8 张图片**（0 个文件无法读取）· 显示 1-8"
    _, summary = asyncio.run(handlers.first_page(None))
    assert summary.split("\n\n")[0] == "**8 images** in the library (0 files could not be read) · showing 1-8"


def test_a_broken_translations_file_is_one_clear_error():
    from clipforge.server.ui_text import FILE, TextFileError, _check

    data = json.loads((Path(__file__).parents[2] / "src/clipforge/server" / FILE).read_text(encoding="utf-8"))
    del data["ui"]["zh-TW"]["search_button"]
    with pytest.raises(
        TextFileError,
        match=r"ui_text.json: ui.zh-TW must hold the keys of ui.en; "
        r"missing \['search_button'\], unknown \[\]",
    ):
        _check(data)
    data = json.loads((Path(__file__).parents[2] / "src/clipforge/server" / FILE).read_text(encoding="utf-8"))
    data["status"]["zh-CN"]["none"] = "没有结果。"  # a translation that drops the reason
    with pytest.raises(
        TextFileError,
        match=r"status.zh-CN.none must use the fields \['reason'\] of status.en.none; "
        r"it uses \[\]",
    ):
        _check(data)


def test_a_batch_that_stops_says_so_in_the_browser_language():
    """The "not tried" lines of a batch the library refused, in Chinese (a field named like an argument of
    `status_text` once broke this line)."""
    from clipforge.server.ui_text import status_text

    assert (
        status_text("zh-CN", "not_tried", file="a.png", code="read_only_library")
        == "a.png：未尝试（read_only_library）"
    )
    assert status_text("en", "not_tried", file="a.png", code="x") == "a.png: not tried (x)"
    assert status_text("fr", "none", reason="r") == "No results: r."  # a locale without lines: English


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium")
def test_a_zh_cn_browser_shows_the_ui_in_chinese(library, live_server, tmp_path, monkeypatch):
    """The real frontend: gradio translates the keys for a browser whose language is zh-CN."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    from clipforge.server import ServerLimits, create_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits()
    with (
        live_server(create_app(library, ui=True, limits=limits), limits) as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(locale="zh-CN")
            page.goto(f"{url}/", wait_until="load", timeout=60_000)
            page.wait_for_selector("#search-button", timeout=60_000)
            page.wait_for_function(
                "document.querySelector('#search-button').innerText.trim() === '搜索'", timeout=20_000
            )
            body = page.locator("body").inner_text()
            assert "搜索和分类你的照片" in body and "模型： **" not in body and "test-vit-tiny" in body
            assert page.get_by_role("tab", name="分类").count() == 1
            assert page.get_by_role("tab", name="图库").count() == 1
            assert "描述你要找的照片" in body and "__i18n__" not in body
            assert "Describe the photo" not in body and "Classify" not in body
        finally:
            browser.close()
    assert os.environ["GRADIO_TEMP_DIR"].startswith(str(tmp_path))
