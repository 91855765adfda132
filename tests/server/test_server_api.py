"""REST API through FastAPI's TestClient: search, classify, images by id, upload, paging, stats."""

from __future__ import annotations

import base64
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image


def test_healthz_and_stats(make_client, library, photos):
    client = make_client()
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "model": "test-vit-tiny", "write_token_required": False,
                             "model_notice": health.json()["model_notice"]}
    assert "random weights" in health.json()["model_notice"]
    stats = client.get("/api/stats")
    assert stats.status_code == 200
    body = stats.json()
    assert body["images"]["ok"] == len(photos)
    assert body["model"]["name"] == "test-vit-tiny" and body["model"]["embed_dim"] == 32
    assert body["server"]["limits"]["max_upload_bytes"] == 20_000_000
    # No absolute server paths leak through the API.
    assert str(library.paths.root) not in stats.text and str(photos[0].parent) not in stats.text


def test_search_by_text_matches_library(make_client, library, photos):
    client = make_client()
    response = client.post("/api/search", data={"text": "a red square", "top_k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "a red square" and body["image"] is False and body["top_k"] == 5
    expected = library.search(text="a red square", top_k=5)
    assert [r["id"] for r in body["results"]] == [h.id for h in expected]
    assert [r["score"] for r in body["results"]] == pytest.approx([h.score for h in expected], abs=1e-5)
    # Scores are cosine similarities of the stored vectors with the text vector.
    query = library.encoder.encode_texts(["a red square"])[0]
    for result in body["results"]:
        stored = library.store.vectors_for_shas(library.encoder.fingerprint,
                                                [library.get_image(result["id"]).sha256])
        assert result["score"] == pytest.approx(float(next(iter(stored.values())) @ query), abs=1e-4)
        assert result["url"] == f"/api/images/{result['id']}"
        assert result["thumb_url"] == f"/api/images/{result['id']}/thumb"
        assert "/" not in result["filename"]


def test_search_by_image_finds_that_image(make_client, library, photos):
    client = make_client()
    target = photos[3]
    response = client.post("/api/search", files={"image": ("query.bin", target.read_bytes(), "application/x-foo")},
                           data={"top_k": 3})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 3
    assert results[0]["filename"] == target.name and results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)


def test_search_by_text_and_image_sums_both(make_client, library, photos):
    client = make_client()
    data = photos[0].read_bytes()
    response = client.post("/api/search", files={"image": ("q.png", data, "image/png")},
                           data={"text": "something blue", "top_k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] is True and body["text"] == "something blue"
    encoder = library.encoder
    vector = encoder.encode_texts(["something blue"])[0] + encoder.encode_images([Image.open(io.BytesIO(data))])[0]
    vector /= np.linalg.norm(vector)
    expected = library.search_vector(vector, top_k=4)
    assert [r["id"] for r in body["results"]] == [h.id for h in expected]


def test_search_validation(make_client):
    client = make_client()
    # No text and no image: the spec's anyOf, checked by the server.
    for response in (client.post("/api/search", data={"top_k": 3}), client.post("/api/search", json={}),
                     client.post("/api/search", files={"top_k": (None, "3")})):
        assert response.status_code == 422, response.text
        assert response.json() == {"error": "invalid_request", "detail": "request: give a text, an image, or both"}
    no_body = client.post("/api/search")
    assert no_body.status_code == 415 and no_body.json()["error"] == "unsupported_media_type"
    empty = client.post("/api/search", json={"text": ""})
    assert empty.status_code == 422 and "text: String should have at least 1 character" in empty.json()["detail"]
    blank = client.post("/api/search", json={"text": "   ", "top_k": 2})  # as the CLI: blanks are no query
    assert blank.status_code == 422 and blank.json()["detail"].startswith("text: only blanks")
    too_many = client.post("/api/search", data={"text": "cat", "top_k": 100000})
    assert too_many.status_code == 422 and too_many.json()["error"] == "invalid_request"
    assert too_many.json()["detail"] == "top_k: Input should be less than or equal to 200"
    long_text = client.post("/api/search", json={"text": "x" * 5000})
    assert long_text.status_code == 422 and long_text.json()["detail"] == \
        "text: String should have at most 1000 characters"
    unknown = client.post("/api/search", json={"text": "cat", "url": "http://example.com/x.jpg"})
    assert unknown.status_code == 422 and unknown.json()["detail"].startswith(
        "url: not a field of this request; its fields are text, image, top_k")
    # a field called `query` (the CLI's word) was reported as "request: Extra inputs are not permitted"
    query = client.post("/api/search", json={"query": "fish"})
    assert query.status_code == 422
    assert query.json()["detail"].startswith("query: not a field of this request; its fields are text, ")
    not_json = client.post("/api/search", content=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422 and not_json.json()["detail"].startswith("body: not valid JSON")
    wrong_type = client.post("/api/search", content=b"text=cat", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and wrong_type.json()["error"] == "unsupported_media_type"


def test_search_with_tag_filter(make_client, library, photos):
    library.classify("warm, cold", templates=["a {} picture"], progress=False)
    top_tags = {r.id: library.tags(r.id)[0][0] for r in library.list_images()}
    label = next(iter(top_tags.values()))  # a label that is some image's top tag
    tagged = {i for i, tag in top_tags.items() if tag == label}
    client = make_client()
    response = client.post("/api/search", data={"text": "a photo", "top_k": 50, "tags": label})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert {r["id"] for r in results} == tagged
    assert all(r["tags"][0]["label"] == label for r in results)


def test_classify_gives_probabilities(make_client, library, photos):
    client = make_client()
    data = photos[1].read_bytes()
    response = client.post("/api/classify", files={"image": ("x", data, "image/jpeg")},
                           data={"labels": "red, green ,blue,red", "template": "a photo of something {}."})
    assert response.status_code == 200, response.text
    body = response.json()
    labels = [item["label"] for item in body["labels"]]
    probabilities = [item["probability"] for item in body["labels"]]
    assert sorted(labels) == ["blue", "green", "red"]  # trimmed and de-duplicated
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert probabilities == sorted(probabilities, reverse=True)
    assert body["templates"] == ["a photo of something {}."]
    expected = library.classify_image(Image.open(io.BytesIO(data)), ["red", "green", "blue"],
                                      ["a photo of something {}."])
    assert labels == [label for label, _ in expected]
    assert probabilities == pytest.approx([p for _, p in expected], abs=1e-5)
    named = client.post("/api/classify", files={"image": ("x", data, "image/jpeg")},
                        data={"labels": "red, green", "template": "imagenet7"})
    assert named.status_code == 200 and named.json()["templates"] == "imagenet7"


@pytest.mark.parametrize(("labels", "template", "detail"), [
    ("", "a photo of a {}.", "labels: give at least one label"),
    (" , ,", "a photo of a {}.", "labels: give at least one label"),
    ("cat", "/etc/passwd", "template: must contain '{}' exactly once"),           # never read as a template file
    ("cat", "templates.json", "template: must contain '{}' exactly once"),
    ("cat", "a {} and a {}", "template: must contain '{}' exactly once"),
    ("cat", "{:>1500000000}{}", "template: must contain '{}' exactly once"),     # a format spec: 1.5 GB, refused
    ("cat", "{0.__class__}", "template: must contain '{}' exactly once"),
    (",".join(f"l{i}" for i in range(101)), "a {}", "labels: at most 100 comma-separated items are allowed"),
])
def test_classify_rejects_bad_labels_and_templates(make_client, photos, labels, template, detail):
    client = make_client()
    response = client.post("/api/classify", files={"image": ("x.png", photos[0].read_bytes(), "image/png")},
                           data={"labels": labels, "template": template})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request" and response.json()["detail"].startswith(detail)
    as_json = client.post("/api/classify", json={"image": base64.b64encode(photos[0].read_bytes()).decode(),
                                                 "labels": labels, "template": template})
    # In JSON, labels may also be a list, so the message names both readings; the reason is the same.
    assert as_json.status_code == 422 and detail.split(": ", 1)[1] in as_json.json()["detail"], as_json.text


def test_classify_service_refuses_hostile_templates_the_same_way(library):
    """The UI goes through LibraryService, which uses the same template check as the API."""
    from clipforge.server.errors import api_error
    from clipforge.server.service import LibraryService
    from clipforge.zeroshot.prompts import TemplateError

    service = LibraryService(library)
    for template in ("{:>1500000000}{}", "{!r}", "{0}", "{} {}", "no braces"):
        with pytest.raises(TemplateError) as info:
            service.clean_template(template)
        error = api_error(info.value, "test")  # what the API and the UI make of it
        assert error.status == 400 and error.code == "template_error"
        assert repr(template) in error.detail
    assert service.clean_template(" a {{b}} {} ") == ["a {{b}} {}"] and service.clean_template("imagenet7") == "imagenet7"


def test_image_and_thumbnail_by_id(make_client, library, photos):
    client = make_client()
    record = next(r for r in library.list_images() if r.path == str(photos[1]))  # a JPEG
    original = client.get(f"/api/images/{record.id}")
    assert original.status_code == 200
    assert original.content == photos[1].read_bytes()
    assert original.headers["content-type"] == "image/jpeg"
    assert original.headers["x-content-type-options"] == "nosniff"
    thumb = client.get(f"/api/images/{record.id}/thumb", params={"size": 20})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert image.format == "JPEG" and max(image.size) == 20
    default = client.get(f"/api/images/{record.id}/thumb")
    with Image.open(io.BytesIO(default.content)) as image:
        assert image.size == (64, 48)  # never enlarged beyond the original
    missing = client.get("/api/images/999999")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert client.get("/api/images/999999/thumb").status_code == 404
    bad_size = client.get(f"/api/images/{record.id}/thumb", params={"size": 5000})
    assert bad_size.status_code == 422 and bad_size.json()["error"] == "invalid_request"
    for raw in ("0", "-3", "abc", "9223372036854775808", "1.5"):  # ids are 1 .. 2**63-1; anything else is a 400
        for path in (f"/api/images/{raw}", f"/api/images/{raw}/thumb"):
            bad_id = client.get(path)
            assert bad_id.status_code == 400 and bad_id.json()["error"] == "invalid_id", (path, bad_id.text)
    assert client.get("/api/images/9223372036854775807").status_code == 404


def test_list_images_in_pages(make_client, library, photos):
    client = make_client()
    seen, offset, pages = [], 0, 0
    while offset is not None:
        page = client.get("/api/images", params={"limit": 3, "offset": offset})
        assert page.status_code == 200
        body = page.json()
        assert len(body["images"]) <= 3
        seen += [image["id"] for image in body["images"]]
        offset, pages = body["next_offset"], pages + 1
    assert pages == 3  # 8 images in pages of 3
    assert sorted(seen) == sorted(r.id for r in library.list_images()) and len(seen) == len(photos)
    first = client.get("/api/images", params={"limit": 1}).json()["images"][0]
    record = library.get_image(first["id"])
    assert first["filename"] == os.path.basename(record.path)
    assert first["sha256"] == record.sha256 and first["width"] == 64 and first["height"] == 48
    assert client.get("/api/images", params={"limit": 0}).status_code == 422


@pytest.mark.parametrize(("params", "detail"), [
    ({"offset": 10**23}, "offset: Input should be less than or equal to 1000000000"),   # was a 500 OverflowError
    ({"offset": 2**63}, "offset: Input should be less than or equal to 1000000000"),
    ({"offset": -1}, "offset: Input should be greater than or equal to 0"),
    ({"limit": 501}, "limit: Input should be less than or equal to 500"),
    ({"limit": "1e3"}, "limit: Input should be a valid integer, unable to parse string as an integer"),
])
def test_every_number_is_bounded(make_client, params, detail):
    client = make_client()
    response = client.get("/api/images", params=params)
    assert response.status_code == 422 and response.json() == {"error": "invalid_request", "detail": detail}
    last = client.get("/api/images", params={"offset": 1_000_000_000})
    assert last.status_code == 200 and last.json()["images"] == [] and last.json()["next_offset"] is None
    for top_k in (0, -5, 201, 10**30):
        search = client.post("/api/search", json={"text": "cat", "top_k": top_k})
        assert search.status_code == 422 and search.json()["detail"].startswith("top_k: Input should be"), top_k
    thumb = client.get("/api/images/1/thumb", params={"size": 10**20})
    assert thumb.status_code == 422 and thumb.json()["detail"] == "size: Input should be less than or equal to 1024"


def test_upload_adds_a_searchable_image(make_client, library, photos, kit):
    client = make_client(token="s3cret")
    data = kit.encode(kit.picture((90, 200, 200), seed=99), "WEBP")
    headers = {"Authorization": "Bearer s3cret"}
    # The name and the content type lie; the bytes decide (a WebP stored as .webp).
    created = client.post("/api/images", files={"file": ("notes.txt", data, "text/plain")}, headers=headers)
    assert created.status_code == 201, created.text
    image = created.json()["image"]
    assert created.json()["created"] is True and image["filename"].endswith(".webp")
    assert client.get(f"/api/images/{image['id']}").content == data
    found = client.post("/api/search", files={"image": ("q", data, "image/webp")}, data={"top_k": 1})
    assert found.json()["results"][0]["id"] == image["id"]
    again = client.post("/api/images", files={"file": ("other.webp", data, "image/webp")}, headers=headers)
    assert again.status_code == 200 and again.json() == {"created": False, "image": image}
    # Bytes already indexed from the photo folder are not stored a second time either.
    existing = client.post("/api/images", files={"file": ("copy.png", photos[0].read_bytes())}, headers=headers)
    assert existing.status_code == 200 and existing.json()["created"] is False
    assert existing.json()["image"]["filename"] == photos[0].name
    assert library.stats()["images"]["ok"] == 9


def test_openapi_lists_every_endpoint(make_client):
    client = make_client()
    spec = client.get("/openapi.json").json()
    paths = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert {("/api/search", "post"), ("/api/classify", "post"), ("/api/images", "get"), ("/api/images", "post"),
            ("/api/images/{image_id}", "get"), ("/api/images/{image_id}/thumb", "get"), ("/api/stats", "get"),
            ("/healthz", "get")} <= paths
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    # The docs page must work offline: every script and stylesheet it names is served by us.
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', docs.text)
    assert assets and all(a.startswith("/") for a in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert json.loads(client.get("/api/nothing-here").text) == {"error": "not_found",
                                                                "detail": "no endpoint /api/nothing-here; see /docs"}


def test_concurrent_searches_and_uploads(make_client, library, kit):
    """Reads and writes from many threads at once: every request succeeds, every upload is findable."""
    from concurrent.futures import ThreadPoolExecutor

    client = make_client()
    uploads = [kit.encode(kit.picture((40 * i, 255 - 40 * i, 90), seed=200 + i)) for i in range(4)]

    def upload(data):
        return client.post("/api/images", files={"file": ("u.png", data)})

    def search(text):
        return client.post("/api/search", data={"text": text, "top_k": 5})

    with ThreadPoolExecutor(max_workers=6) as pool:
        writes = [pool.submit(upload, data) for data in uploads]
        reads = [pool.submit(search, f"query {i}") for i in range(8)]
        listing = [pool.submit(client.get, "/api/images") for _ in range(4)]
    assert all(f.result().status_code == 201 for f in writes)
    assert all(f.result().status_code == 200 and len(f.result().json()["results"]) == 5 for f in reads)
    assert all(f.result().status_code == 200 for f in listing)
    ids = [f.result().json()["image"]["id"] for f in writes]
    assert len(set(ids)) == 4 and library.stats()["images"]["ok"] == 12
    for image_id, data in zip(ids, uploads, strict=True):
        assert client.get(f"/api/images/{image_id}").content == data
        hit = client.post("/api/search", files={"image": ("q.png", data)}, data={"top_k": 1}).json()["results"][0]
        assert hit["id"] == image_id


def test_json_image_is_base64_bytes_never_a_url_or_a_path(make_client, library, kit, tmp_path):
    """The server fetches nothing and opens no client path: a JSON image is decoded bytes or refused."""
    secret = tmp_path / "secret.png"
    secret.write_bytes(kit.encode(kit.picture((1, 2, 3), seed=5)))
    client = make_client()
    for value in (str(secret), "file://" + str(secret), "http://127.0.0.1:9/x.jpg", "data:image/png;base64,AAAA"):
        for url, body in (("/api/search", {"image": value}), ("/api/classify", {"image": value, "labels": "a, b"})):
            response = client.post(url, json=body)
            assert response.status_code in (415, 422), (value, response.text)
            assert response.json()["error"] in ("invalid_request", "not_an_image")
    # A string that happens to be valid base64 is decoded as bytes, which are not an image: 415, no file read.
    looks_like_path = "/etc/passwd/"
    assert len(looks_like_path) % 4 == 0
    response = client.post("/api/search", json={"image": looks_like_path})
    assert response.status_code == 415 and response.json()["error"] == "not_an_image"
    bomb = client.post("/api/classify", json={"image": base64.b64encode(kit.png_bomb()).decode(), "labels": ["a"]})
    assert bomb.status_code == 413 and bomb.json()["error"] == "too_many_pixels"
    text = client.post("/api/search", json={"image": base64.b64encode(b"hello, not an image").decode()})
    assert text.status_code == 415 and text.json()["detail"].startswith("query image is not an image")
    padding = client.post("/api/search", json={"image": "iVBORw0"})
    assert padding.status_code == 422 and padding.json()["detail"].startswith("image: must be an image file in "
                                                                              "standard base64")
