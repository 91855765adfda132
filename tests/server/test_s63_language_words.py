"""REST /api/classify names its labels "the labels", as the CLI does (audit 63 i18n #8), and a Chinese page words
only the Chinese sentence: its translated sentence advises a Chinese model, which Korean text must not be told."""

from __future__ import annotations

import asyncio


class _Request:
    def __init__(self, accept_language: str) -> None:
        self.headers = {"accept-language": accept_language}
        self.client = None


def test_rest_classify_calls_its_labels_labels(make_client, photos) -> None:
    image = photos[0].read_bytes()
    client = make_client()
    answer = client.post("/api/classify", files={"image": ("p.png", image, "image/png")},
                         data={"labels": "猫，狗、鸟"}).json()
    assert answer["notice"] == (
        "the labels '猫, 狗, 鸟' are written in zh but model test-vit-tiny was trained for en only; its scores "
        "for them are not meaningful (use a zh model, e.g. clipforge-tiny-zh offline or cn-ViT-B-16)")
    answer = client.post("/api/classify", files={"image": ("p.png", image, "image/png")},
                         data={"labels": "고양이, 개"}).json()
    assert answer["notice"].startswith("the labels '고양이, 개' are written in Hangul script")


def test_korean_on_a_chinese_page_keeps_the_english_advice(library, tmp_path) -> None:
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    handlers = _Handlers(LibraryService(library), str(tmp_path))
    _, status = asyncio.run(handlers.search("고양이", None, 3, "", _Request("zh-CN")))
    assert status.split("\n\n")[1] == (
        "**注意：** the query '고양이' is written in Hangul script but model test-vit-tiny was trained for en only; its "
        "scores for this query are not meaningful (use a multilingual model, e.g. ViT-B-16-SigLIP-i18n-256:webli)")
