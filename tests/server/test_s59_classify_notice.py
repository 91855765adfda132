"""REST and web classify say what the CLI says about labels that cannot be what was meant (audit 59, the Chinese
student's finding 7): "猫 狗 鸟" (spaces, not commas) was one label at 100% with `"notice": null`, while
`clipforge classify` printed the notice (`zeroshot.label_notices`)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi")


def _classify(client, photo, labels):
    response = client.post("/api/classify", files={"image": ("x.png", photo.read_bytes(), "image/png")},
                           data={"labels": labels, "template": "a photo of a {}."})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_rest_api_says_spaced_chinese_words_and_one_label(make_client, photos) -> None:
    client = make_client()
    spaced = _classify(client, photos[0], "猫 狗 鸟")
    assert [item["label"] for item in spaced["labels"]] == ["猫 狗 鸟"]
    assert spaced["notice"].startswith(
        "one label ('猫 狗 鸟'): a softmax over one label is always 100%; labels are separated by commas "
        '(",", "，" or "、"), not spaces: "猫,狗,鸟" gives 3'), spaced["notice"]  # no CLI flag here (review)
    mixed = _classify(client, photos[0], "red, 绿色 蓝色")
    assert mixed["notice"].startswith("label '绿色 蓝色' has spaces between Chinese words; labels are separated"), mixed
    assert '"red,绿色,蓝色" gives 3' in mixed["notice"]  # the labels' own order, not the ranking's (review)
    assert _classify(client, photos[0], "red")["notice"].startswith("one label ('red'): a softmax over one label")
    assert _classify(client, photos[0], "red, green")["notice"] is None


def test_the_web_page_says_it_too(library, tmp_path) -> None:
    pytest.importorskip("gradio")
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    class Request:
        headers = {"accept-language": "zh-CN"}

    photo = tmp_path / "gradio" / "q.png"
    photo.parent.mkdir()
    photo.write_bytes(_png())
    handlers = _Handlers(LibraryService(library), str(photo.parent))
    probabilities, status = asyncio.run(handlers.classify({"path": str(photo), "meta": {"_type": "gradio.FileData"}},
                                                          "猫 狗 鸟", "a photo of a {}.", Request()))
    assert list(probabilities) == ["猫 狗 鸟"]
    assert "labels are separated by commas" in status and 'not spaces: "猫,狗,鸟" gives 3' in status
    assert "--labels" not in status


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()
