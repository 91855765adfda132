"""A class on the LAN, in Chinese, with phones (audit60 classroom, findings 3, 4 and 6).

3. A phone's HEIC photo was "not an image in an accepted format" (415) on every image route, while the CLI
   named it and what reads it (`pip install pillow-heif`); now the `ftyp` brand names the format and the remedy
   (still 415 `not_an_image`, still never decoded), and the web page says it in the browser's language.
4. A zh-CN page showed in English the query-language warning, the offline model's banner, and the page's 429/507.
5. (6 of the audit) `serve --host 0.0.0.0` printed only http://127.0.0.1:PORT/, which no student can open: now a
   second line names the machine's LAN addresses (local lookups only).
"""

from __future__ import annotations

import asyncio
import json

import pytest

HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(range(256)) * 40
AVIF = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(256)
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(256)


class _Request:
    """What the handlers read of a gradio request: the browser's Accept-Language, no client."""

    def __init__(self, accept_language: str) -> None:
        self.headers = {"accept-language": accept_language}
        self.client = None


def _no_heif_reader():
    from clipforge.server.uploads import ACCEPTED_FORMATS

    if "HEIF" in ACCEPTED_FORMATS:
        pytest.skip("pillow-heif is installed here: HEIC photos are read")


# -- 3: HEIC named -------------------------------------------------------------------------------------------
def test_the_ftyp_brand_names_the_phone_format():
    from clipforge.server.uploads import iso_photo_format

    assert iso_photo_format(HEIC) == "HEIF"
    assert iso_photo_format(AVIF) == "AVIF"  # libavif's compatible mif1 does not make it HEIF
    assert iso_photo_format(MP4) is None and iso_photo_format(b"\x89PNG\r\n\x1a\n" + bytes(20)) is None
    assert iso_photo_format(HEIC[:12]) is None


@pytest.mark.parametrize(("route", "field", "data", "what"), [
    ("/api/classify", "image", {"labels": "dog, cat"}, "image"),
    ("/api/search", "image", {"top_k": 1}, "query image"),
])
def test_rest_names_a_heic_photo_and_what_reads_it(make_client, route, field, data, what):
    _no_heif_reader()
    answer = make_client().post(route, files={field: ("IMG_0042.HEIC", HEIC, "image/heic")}, data=data)
    assert answer.status_code == 415 and answer.json() == {
        "error": "not_an_image",
        "detail": f"{what} is a HEIC/HEIF photo (a phone camera's format), which this server cannot read: "
                  "`pip install pillow-heif` lets clipforge read them (the server's operator installs it and "
                  "restarts the server); send it as a JPEG or PNG instead",
    }


def test_a_video_in_the_same_box_format_is_still_not_an_image(make_client):
    answer = make_client().post("/api/classify", files={"image": ("clip.mp4", MP4, "video/mp4")},
                                data={"labels": "dog, cat"})
    assert answer.status_code == 415 and answer.json()["detail"].startswith("image is not an image in an accepted")


def _upload(tmp_path, name: str, data: bytes) -> dict:
    folder = tmp_path / "up" / "f00d"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return {"path": str(folder / name), "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def test_the_zh_page_says_a_heic_photo_cannot_be_read_in_chinese(library, tmp_path):
    _no_heif_reader()
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    handlers = _Handlers(LibraryService(library, token="class-secret"), str(tmp_path / "up"))
    heic = _upload(tmp_path, "IMG_0042.HEIC", HEIC)
    _, status = asyncio.run(handlers.classify(heic, "狗, 猫", "", _Request("zh-CN,zh;q=0.9")))
    assert status == ("⚠️ **415**: 图片是 HEIC/HEIF 格式的照片（手机相机的格式），这台服务器无法读取；请把它转换成 JPEG 或 "
                      "PNG 后再上传，或请服务器管理员运行 `pip install pillow-heif` 并重新启动服务器")
    _, status = asyncio.run(handlers.search("", heic, 3, "", _Request("zh-TW")))
    assert status.startswith("⚠️ **415**: 查詢圖片是 HEIC/HEIF 格式的相片") and "pip install pillow-heif" in status
    _, status = asyncio.run(handlers.classify(heic, "dog, cat", "", _Request("en-US")))
    assert status == ("⚠️ **415**: image is a HEIC/HEIF photo (a phone camera's format), which this server cannot "
                      "read; send it as a JPEG or PNG instead, or ask the server's operator to run `pip install "
                      "pillow-heif` and restart the server")
    status, *_ = asyncio.run(handlers.add([heic], "class-secret", 0, _Request("zh-CN")))
    assert status.split("\n") == [
        "已添加 0 张图片；0 张已在图库中；1 张被拒绝。",
        r"- IMG\_0042.HEIC是 HEIC/HEIF 格式的照片（手机相机的格式），这台服务器无法读取；请把它转换成 JPEG 或 PNG 后再上传，"
        "或请服务器管理员运行 `pip install pillow-heif` 并重新启动服务器",
    ]


# -- 4: the notices a Chinese class needs ------------------------------------------------------------------
def test_the_query_language_warning_is_chinese_on_a_chinese_page(library, tmp_path):
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    handlers = _Handlers(LibraryService(library), str(tmp_path))
    _, status = asyncio.run(handlers.search("一只*狗*", None, 3, "", _Request("zh-CN")))
    assert status.split("\n\n")[1] == (
        r"**注意：** 查询“一只\*狗\*”是 zh 文字，但模型 test-vit-tiny 只为 en 训练过；它对这个查询给出的分数没有意义"
        "（请使用 zh 模型，例如离线的 clipforge-tiny-zh 或 cn-ViT-B-16）"
    )
    _, status = asyncio.run(handlers.search("一只狗", None, 3, "", _Request("en")))
    assert status.split("\n\n")[1] == (  # English pages keep the API's (the CLI's) sentence
        "**Note:** the query '一只狗' is written in zh but model test-vit-tiny was trained for en only; its scores "
        "for this query are not meaningful (use a zh model, e.g. clipforge-tiny-zh offline or cn-ViT-B-16)"
    )


def test_the_labels_language_warning_is_chinese_on_a_chinese_page(library, tmp_path, photos):
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    handlers = _Handlers(LibraryService(library), str(tmp_path / "up"))
    image = _upload(tmp_path, "p.png", photos[0].read_bytes())
    _, status = asyncio.run(handlers.classify(image, "狗, 猫", "", _Request("zh-TW")))
    assert status == ("**注意：** 標籤「狗, 猫」是 zh 文字，但模型 test-vit-tiny 只為 en 訓練過；這些機率沒有意義（請使用 zh "
                      "模型，例如離線的 clipforge-tiny-zh 或 cn-ViT-B-16）")


def test_the_offline_models_banner_is_a_translated_key(library, tmp_path):
    from clipforge.server.service import OFFLINE_MODEL, LibraryService, model_notice
    from clipforge.server.ui import build_ui
    from clipforge.server.ui_text import ui_translations

    service = LibraryService(library)
    service.notice = model_notice(OFFLINE_MODEL)
    config = build_ui(service, str(tmp_path)).get_config_file()
    banner = next(c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "model-notice")
    assert banner.startswith("__i18n__") and json.loads(banner[len("__i18n__"):])["key"] == "offline_model_notice"
    words = ui_translations()
    assert words["en"]["offline_model_notice"] == f"**Note:** {model_notice(OFFLINE_MODEL)}"  # the same words
    assert words["zh-CN"]["offline_model_notice"].startswith("**注意：** 服务器正在使用离线模型 clipforge-tiny")
    assert "--model ViT-B/32" in words["zh-TW"]["offline_model_notice"]


def test_the_pages_507_is_chinese_for_a_chinese_browser_and_rest_stays_english(library, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from clipforge.server import create_app
    from clipforge.server.limits import ServerLimits

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    with TestClient(create_app(library, ui=True, limits=ServerLimits(ui_cache_bytes=1000))) as client:
        files = {"files": ("a.jpg", b"x" * 5000, "image/jpeg")}
        zh = client.post("/gradio_api/upload", files=files, headers={"accept-language": "zh-CN,zh;q=0.9"})
        assert zh.status_code == 507 and zh.json() == {"error": "insufficient_storage",
                                                       "detail": "本页面的上传空间已满，目前无法为此上传腾出空间；请稍后再试"}
        assert zh.headers["content-length"] == str(len(zh.content))
        en = client.post("/gradio_api/upload", files=files, headers={"accept-language": "en-US"})
        assert en.status_code == 507 and en.json()["detail"].startswith("the upload space of this page (1,000 bytes")
        rest = client.post("/api/search", json={"text": "a cat", "top_k": 0}, headers={"accept-language": "zh-CN"})
        assert rest.status_code in (400, 422) and rest.json()["detail"].isascii()  # the REST API stays English


def test_the_pages_429_is_chinese_and_keeps_its_retry_after():
    from clipforge.server.ui_text import RefusalWords

    detail = "your address has 16 UI events waiting or unread already; wait for them or reload the pages"

    async def refusing(scope, receive, send):
        body = json.dumps({"error": "too_many_requests", "detail": detail}).encode()
        await send({"type": "http.response.start", "status": 429,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body[:10], "more_body": True})
        await send({"type": "http.response.body", "body": body[10:], "more_body": False})

    def call(path: str, language: str) -> tuple[dict, dict]:
        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"accept-language", language.encode())]}
        asyncio.run(RefusalWords(refusing)(scope, None, send))
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        assert dict(sent[0]["headers"])[b"content-length"] == str(len(body)).encode()
        return dict(sent[0]["headers"]), json.loads(body)

    headers, answer = call("/gradio_api/queue/join", "zh-CN")
    assert headers[b"retry-after"] == b"1" and answer == {
        "error": "too_many_requests",
        "detail": "你的网络地址同时发出的请求超过了本页面允许的数量；请等待已发出的请求完成，关闭一些标签页或重新加载页面，然后再试",
    }
    assert call("/gradio_api/queue/join", "en-US")[1]["detail"] == detail
    assert call("/api/search", "zh-CN")[1]["detail"] == detail  # the REST API's words stay English


# -- 6: the LAN address ----------------------------------------------------------------------------------
def test_the_lan_addresses_are_this_machines_non_loopback_ipv4(monkeypatch):
    import ipaddress
    import socket

    from clipforge.server import lan
    from clipforge.server.lan import lan_addresses

    for address in lan_addresses():  # this machine's, whatever they are
        ip = ipaddress.IPv4Address(address)
        assert not ip.is_loopback and not ip.is_link_local and not ip.is_unspecified

    class _Probe:  # the route lookup: the default route's source address
        def __init__(self, *args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def connect(self, address):
            pass

        def getsockname(self):
            return ("192.0.2.7", 5353)

    names = ["127.0.1.1", "169.254.3.4", "0.0.0.0", "192.0.2.7", "10.1.2.3"]  # what /etc/hosts may give
    monkeypatch.setattr(lan.socket, "socket", _Probe)
    monkeypatch.setattr(lan.socket, "getaddrinfo", lambda *a, **k: [(socket.AF_INET, 0, 0, "", (n, 0)) for n in names])
    assert lan_addresses() == ["192.0.2.7", "10.1.2.3"]  # the route's first, once; loopback, link-local, 0.0.0.0 out


@pytest.mark.parametrize(("host", "addresses", "second"), [
    ("0.0.0.0", ["192.0.2.2", "10.1.2.3"],
     "other machines on this network (phones, classmates) open http://192.0.2.2:{port}/ or http://10.1.2.3:{port}/"),
    ("0.0.0.0", [], "other machines: open this machine's network address with port {port} (none was found here)"),
    ("127.0.0.1", ["192.0.2.2"], None),
])
def test_serve_on_every_interface_prints_the_address_students_open(
    host, addresses, second, library, tmp_path, monkeypatch, capsys
):
    import uvicorn

    from clipforge.server import runner

    monkeypatch.setattr("clipforge.server.lan.lan_addresses", lambda: list(addresses))
    ports = []

    def fake_run(self, sockets=None):
        for sock in sockets or []:
            ports.append(sock.getsockname()[1])
            sock.close()

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    library.close()
    assert runner.serve(str(tmp_path / "lib"), host=host, port=0, model="test-vit-tiny", ui=False) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert lines[0] == (f"clipforge serving library {tmp_path / 'lib'} with model test-vit-tiny at "
                        f"http://127.0.0.1:{ports[0]}/ (REST API docs: http://127.0.0.1:{ports[0]}/docs)")
    assert lines[1:] == ([second.format(port=ports[0])] if second else [])
