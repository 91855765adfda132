"""What `/openapi.json` promises, checked field by field, and a client that trusts it.

The spec must state exactly what the server does: ids as positive 64-bit integers, the required
fields, the bounds, the body types, every error status with the `{"error", "detail"}` schema.
A client that builds its requests from the spec (validated against the spec's own request
schemas) and checks every response against the spec round-trips search, classify, list and
upload, in JSON and in form data.
"""

from __future__ import annotations

import base64

import pytest


def _spec(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_spec_states_ids_bounds_bodies_and_errors(make_client):
    spec = _spec(make_client())
    paths = spec["paths"]
    # Path ids are positive 64-bit integers (the server's real rule), not "any string".
    for path in ("/api/images/{image_id}", "/api/images/{image_id}/thumb"):
        (param,) = [p for p in paths[path]["get"]["parameters"] if p["in"] == "path"]
        assert param["required"] is True
        assert param["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1,
                                   "description": param["schema"]["description"], "title": "Image Id"}
    query = {p["name"]: p["schema"] for p in paths["/api/images"]["get"]["parameters"]}
    assert (query["limit"]["minimum"], query["limit"]["maximum"], query["limit"]["default"]) == (1, 500, 50)
    assert (query["offset"]["minimum"], query["offset"]["maximum"]) == (0, 1_000_000_000)
    size = next(p["schema"] for p in paths["/api/images/{image_id}/thumb"]["get"]["parameters"] if p["name"] == "size")
    assert (size["minimum"], size["maximum"], size["default"]) == (16, 1024, 256)
    # Bodies: JSON and form, with required fields and bounds.
    search = paths["/api/search"]["post"]["requestBody"]
    assert search["required"] is True
    assert set(search["content"]) == {"application/json", "multipart/form-data", "application/x-www-form-urlencoded"}
    search_json = search["content"]["application/json"]["schema"]
    assert search_json["additionalProperties"] is False
    assert search_json["anyOf"] == [{"required": ["text"]}, {"required": ["image"]}]
    assert search_json["properties"]["top_k"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 20,
                                                  "description": "how many results", "title": "Top K"}
    assert search_json["properties"]["image"]["format"] == "byte"  # base64: never a URL or a server path
    assert search_json["properties"]["text"]["maxLength"] == 1000
    assert search["content"]["application/json"]["examples"]["text"]["value"] == {"text": "a photo of a fish",
                                                                                  "top_k": 3}
    classify = paths["/api/classify"]["post"]["requestBody"]["content"]
    assert set(classify) == {"application/json", "multipart/form-data"}
    assert set(classify["application/json"]["schema"]["required"]) == {"image", "labels"}
    assert set(classify["multipart/form-data"]["schema"]["required"]) == {"image", "labels"}
    template = classify["application/json"]["schema"]["properties"]["template"]
    from clipforge.zeroshot.prompts import TEMPLATE_PATTERN

    assert {"type": "string", "maxLength": 1000, "pattern": TEMPLATE_PATTERN} in template["anyOf"]
    upload = paths["/api/images"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["required"] == ["file"]
    assert upload["schema"]["properties"]["file"]["format"] == "binary"
    assert upload["schema"]["properties"]["file"]["minLength"] == 1  # an empty upload is not valid
    # Every status each route can answer, each error with the one error schema.
    expected = {("/api/search", "post"): {"200", "400", "403", "405", "408", "413", "415", "422", "429", "503"},
                ("/api/classify", "post"): {"200", "400", "403", "405", "408", "413", "415", "422", "429", "503"},
                ("/api/images", "get"): {"200", "400", "405", "413", "422", "429", "503"},
                ("/api/images", "post"): {"200", "201", "400", "403", "405", "408", "413", "415", "422", "429", "503",
                                          "507"},
                ("/api/images/{image_id}", "get"): {"200", "304", "400", "404", "405", "413", "422", "429", "503"},
                ("/api/images/{image_id}/thumb", "get"): {"200", "304", "400", "404", "405", "413", "422", "429",
                                                          "503"},
                ("/api/stats", "get"): {"200", "400", "405", "413", "429", "503"},
                ("/healthz", "get"): {"200", "400", "405", "413"}}  # 413: a declared Content-Length over the limit
    for (path, method), codes in expected.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == codes, (path, method)
        for code in codes - {"200", "201", "304"}:  # a 304 has no body
            assert responses[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
        assert "Allow" in responses["405"]["headers"]
    assert spec["components"]["schemas"]["ErrorOut"]["required"] == ["error", "detail"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # one error shape, nothing else
    assert "security" not in paths["/api/images"]["post"]  # no token on this server: nothing to send


def test_unlisted_methods_answer_405_with_allow(make_client):
    for ui in (False, True):  # with the gradio UI mounted at "/" too (it used to swallow them as 404)
        client = make_client(ui=ui)
        for method, path, allow in [("TRACE", "/healthz", "GET, HEAD"), ("QUERY", "/healthz", "GET, HEAD"), ("GET", "/api/search", "POST"),
                                    ("PUT", "/api/classify", "POST"), ("DELETE", "/api/images", "GET, HEAD, POST"),
                                    ("PATCH", "/api/images/3", "GET, HEAD"), ("POST", "/api/images/3/thumb", "GET, HEAD"),
                                    ("DELETE", "/api/stats", "GET, HEAD")]:
            response = client.request(method, path)
            assert response.status_code == 405, (ui, method, path, response.text)
            assert response.headers["allow"] == allow
            assert response.json() == {"error": "method_not_allowed",
                                       "detail": f"{method} is not allowed on {path}; use {allow}"}
        missing = client.get("/api/nothing-here")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"


class SpecClient:
    """A client that only sends what the spec allows and only accepts what the spec promises."""

    def __init__(self, client) -> None:
        schemathesis = pytest.importorskip("schemathesis")  # dev extra; the other tests here need nothing
        self.validator_for = pytest.importorskip("jsonschema_rs").validator_for
        self.client = client
        self.spec = _spec(client)
        self.schema = schemathesis.openapi.from_dict(self.spec)

    def _request_schema(self, path: str, media: str) -> dict:
        schema = self.spec["paths"][path]["post"]["requestBody"]["content"][media]["schema"]
        return {**schema, "components": self.spec.get("components", {})}

    def call(self, method: str, path: str, template: str | None = None, **kwargs):
        if "json" in kwargs:  # the body is valid against the spec before it is sent
            self.validator_for(self._request_schema(path, "application/json")).validate(kwargs["json"])
        response = self.client.request(method, path, **kwargs)
        self.schema[template or path][method].validate_response(response)
        return response


def test_spec_validated_client_round_trips_search_classify_list_upload(make_client, library, photos, kit):
    api = SpecClient(make_client(token="tok"))
    png = photos[0].read_bytes()
    b64 = base64.b64encode(png).decode()
    # search: JSON by text, JSON by image (base64), form by text
    by_text = api.call("POST", "/api/search", json={"text": "a red square", "top_k": 3})
    expected = [h.id for h in library.search(text="a red square", top_k=3)]
    assert by_text.status_code == 200 and [r["id"] for r in by_text.json()["results"]] == expected
    by_image = api.call("POST", "/api/search", json={"image": b64, "top_k": 1})
    assert by_image.json()["results"][0]["filename"] == photos[0].name and by_image.json()["image"] is True
    form = api.call("POST", "/api/search", data={"text": "a red square", "top_k": 3})
    assert [r["id"] for r in form.json()["results"]] == expected
    # classify: JSON (list of labels) and form agree
    as_json = api.call("POST", "/api/classify", json={"image": b64, "labels": ["red", "green", "blue"],
                                                      "template": "a photo of something {}."})
    as_form = api.call("POST", "/api/classify", files={"image": ("x.png", png, "image/png")},
                       data={"labels": "red, green, blue", "template": "a photo of something {}."})
    assert as_json.status_code == as_form.status_code == 200
    assert as_json.json()["labels"] == as_form.json()["labels"]
    assert sum(item["probability"] for item in as_json.json()["labels"]) == pytest.approx(1.0, abs=1e-4)
    # upload (token required, declared in the spec), then list it and fetch it by id
    data = kit.encode(kit.picture((10, 200, 120), seed=77), "PNG")
    refused = api.call("POST", "/api/images", files={"file": ("new.png", data, "image/png")})
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    created = api.call("POST", "/api/images", files={"file": ("new.png", data, "image/png")},
                       headers={"Authorization": "Bearer tok"})
    assert created.status_code == 201 and created.json()["created"] is True
    new_id = created.json()["image"]["id"]
    listing = api.call("GET", "/api/images", params={"limit": 500})
    assert new_id in [image["id"] for image in listing.json()["images"]]
    assert len(listing.json()["images"]) == len(photos) + 1 and listing.json()["next_offset"] is None
    original = api.call("GET", f"/api/images/{new_id}", template="/api/images/{image_id}")
    assert original.content == data and original.headers["content-type"] == "image/png"
    thumb = api.call("GET", f"/api/images/{new_id}/thumb", template="/api/images/{image_id}/thumb",
                     params={"size": 16})
    assert thumb.headers["content-type"] == "image/jpeg"
    for response, template, params in ((original, "/api/images/{image_id}", {}),
                                       (thumb, "/api/images/{image_id}/thumb", {"size": 16})):
        again = api.call("GET", template.replace("{image_id}", str(new_id)), template=template, params=params,
                         headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == response.headers["etag"]
    # errors are in the spec too
    missing = api.call("GET", "/api/images/999999", template="/api/images/{image_id}")
    assert missing.status_code == 404 and set(missing.json()) == {"error", "detail"}
    # A request the spec forbids (a format spec in the template) is refused in the spec's error shape.
    bad = api.client.post("/api/classify", json={"image": b64, "labels": ["cat"], "template": "{:>9}{}"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("template: must contain '{}' exactly once")
    api.schema["/api/classify"]["POST"].validate_response(bad)
    api.call("GET", "/api/stats")
    api.call("GET", "/healthz")
