"""Chinese through the REST API: UTF-8 JSON, multipart and url-encoded forms, query strings."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

pytest.importorskip("fastapi")

CIFAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10_jpeg"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A server over a library of 3 CIFAR-10 pictures per class (or coloured squares without the data),
    built with the shipped bilingual model."""
    from fastapi.testclient import TestClient

    from clipforge.library import Library
    from clipforge.server import create_app

    folder = tmp_path_factory.mktemp("photos")
    archive = CIFAR / "test_jpeg.zip"
    if archive.is_file():
        with zipfile.ZipFile(archive) as z:
            for name in ("airplane", "cat", "dog", "ship", "truck", "horse"):
                for i in range(3):
                    (folder / f"{name}_{i}.jpg").write_bytes(z.read(f"test/{name}/{i:04d}.jpg"))
    else:
        for i, colour in enumerate([(200, 20, 20), (20, 200, 20), (20, 20, 200)]):
            Image.new("RGB", (32, 32), colour).save(folder / f"square_{i}.png")
    library = Library(tmp_path_factory.mktemp("lib") / "lib", "clipforge-tiny-zh")
    library.add(folder, workers=0, progress=False)
    with TestClient(create_app(library, ui=False)) as test_client:
        test_client.has_cifar = archive.is_file()
        yield test_client
    library.close()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (240, 200, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def test_search_json_utf8(client) -> None:
    body = json.dumps({"text": "一只猫", "top_k": 3}, ensure_ascii=False).encode("utf-8")
    response = client.post("/api/search", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["text"] == "一只猫" and out["model"] == "clipforge-tiny-zh" and len(out["results"]) == 3
    assert "一只猫".encode() in response.content  # UTF-8 on the wire, not only \\u escapes
    if client.has_cifar:
        assert out["results"][0]["filename"].startswith("cat_"), out["results"]


def test_search_json_escaped_and_form_encodings_agree(client) -> None:
    escaped = client.post("/api/search", content=json.dumps({"text": "海边的日落", "top_k": 2}),
                          headers={"content-type": "application/json"}).json()
    form = client.post("/api/search", content=f"text={quote('海边的日落')}&top_k=2",
                       headers={"content-type": "application/x-www-form-urlencoded"})
    multipart = client.post("/api/search", data={"text": "海边的日落", "top_k": "2"}, files={"unused": ("x", b"")})
    assert form.status_code == 200, form.text
    assert form.json()["text"] == escaped["text"] == "海边的日落"
    assert [r["id"] for r in form.json()["results"]] == [r["id"] for r in escaped["results"]]
    assert multipart.status_code in (200, 422), multipart.text  # an unknown part may be refused, never garbled
    if multipart.status_code == 200:
        assert multipart.json()["text"] == "海边的日落"


def test_classify_multipart_with_chinese_labels_and_file_name(client) -> None:
    response = client.post("/api/classify", data={"labels": "猫,狗,卡车"},
                           files={"image": ("黄色的方块.png", _png(), "image/png")})
    assert response.status_code == 200, response.text
    out = response.json()
    assert sorted(x["label"] for x in out["labels"]) == ["卡车", "狗", "猫"]
    assert out["templates"] in (["一张{}的照片"], "zh-simple") or "一张" in json.dumps(out, ensure_ascii=False)
    assert abs(sum(x["probability"] for x in out["labels"]) - 1) < 1e-4


def test_upload_with_a_chinese_file_name_and_list_by_query_string(client) -> None:
    response = client.post("/api/images", files={"file": ("猫的照片.png", _png(), "image/png")})
    assert response.status_code in (200, 201), response.text
    listed = client.get("/api/images?limit=50&offset=0")
    assert listed.status_code == 200
    bad = client.get("/api/images?limit=" + quote("五十"))  # Chinese in a query string: a clear 422, not a crash
    assert bad.status_code == 422 and "limit" in bad.text
