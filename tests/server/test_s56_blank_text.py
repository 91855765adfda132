"""`POST /api/search` refuses a text of blanks only, as it refuses "" and as the CLI does (audit, stop 47).

`{"text": "   "}` (or "\\u3000", the ideographic space of a Chinese input method) answered 200 with hits for a
query of nothing, while `clipforge search "   "` says "empty query: give some text, an image, or both". The rule
is the body model's, so the published schema says it too (a `pattern`) and a generated client agrees.
"""

from __future__ import annotations

import base64
import re

import pytest

BLANKS = [" ", "   ", "\t", "\n\r", "\u3000", "\u3000\u3000", "\u00a0", " \u2003\u2009\u202f\u205f\u1680\u2028\x85"]
REFUSAL = ("text: only blanks (spaces, tabs or other white space): give some words, or leave text out to search "
           "by image alone")


@pytest.mark.parametrize("blank", BLANKS, ids=[repr(b) for b in BLANKS])
def test_blank_text_is_a_422_in_every_body_form(make_client, kit, blank: str) -> None:
    client = make_client()
    image = kit.encode(kit.picture((200, 30, 30), 9))
    for response in (
        client.post("/api/search", json={"text": blank, "top_k": 2}),
        client.post("/api/search", data={"text": blank, "top_k": "2"}),  # urlencoded
        client.post("/api/search", files={"text": (None, blank), "top_k": (None, "2")}),  # multipart
        # with an image too, as "" is refused with one: leave `text` out to search by image alone
        client.post("/api/search", json={"text": blank, "image": base64.b64encode(image).decode()}),
        client.post("/api/search", data={"text": blank}, files={"image": ("q.png", image, "image/png")}),
    ):
        assert response.status_code == 422, response.text
        assert response.json() == {"error": "invalid_request", "detail": REFUSAL}


def test_text_with_words_among_blanks_is_a_query(make_client) -> None:
    client = make_client()
    # a zero-width space beside words is a query; alone it is refused as blanks are (audit 63 i18n #9)
    for text in ("  red  ", "\u3000红色\u3000", "\tx", "\u200bred"):
        response = client.post("/api/search", json={"text": text, "top_k": 2})
        assert response.status_code == 200, response.text
        assert len(response.json()["results"]) == 2
    empty = client.post("/api/search", json={"text": ""})  # unchanged: pydantic's words for ""
    assert empty.status_code == 422 and empty.json()["detail"] == "text: String should have at least 1 character"


def test_the_published_schema_says_so(make_client) -> None:
    spec = make_client().get("/openapi.json").json()
    content = spec["paths"]["/api/search"]["post"]["requestBody"]["content"]
    for media in ("application/json", "multipart/form-data", "application/x-www-form-urlencoded"):
        text = content[media]["schema"]["properties"]["text"]
        pattern = re.compile(text["pattern"])
        assert text["minLength"] == 1
        assert all(pattern.search(blank) is None for blank in BLANKS)
        assert pattern.search(" a ") and pattern.search("\u3000猫")


def test_blank_labels_and_tags_were_already_refused(make_client, kit) -> None:
    """The other query text fields: classify's labels and search's tags need a character other than blanks."""
    client = make_client()
    image = base64.b64encode(kit.encode(kit.picture((30, 200, 40), 3))).decode()
    for labels in (["\u3000"], [" ", "\t"], "\u3000", " , \u3000"):
        response = client.post("/api/classify", json={"image": image, "labels": labels})
        assert response.status_code == 422, response.text
    tags = client.post("/api/search", json={"text": "red", "tags": ["\u3000"]})
    assert tags.status_code == 422 and tags.json()["detail"].startswith("tags")



def test_the_service_reads_blank_text_as_no_text(library, kit) -> None:
    """The UI's path (no body model): blank text alone is no query; beside an image, the image alone is the query
    (the blanks were embedded with it)."""
    from clipforge.server.errors import APIError
    from clipforge.server.service import LibraryService
    from clipforge.server.uploads import sniff_image

    service = LibraryService(library)
    assert service.clean_text("\u3000 \t") is None and service.clean_text("  red ") == "red"
    with pytest.raises(APIError) as caught:
        service.search(" \u3000", None, 2)
    assert (caught.value.status, caught.value.code) == (400, "empty_query")
    image = kit.encode(kit.picture((200, 30, 30), 9))
    by_image, _ = service.search(None, sniff_image(image, service.limits, "query image"), 3)
    with_blanks, _ = service.search("\u3000 ", sniff_image(image, service.limits, "query image"), 3)
    assert [(h.id, h.score) for h in with_blanks] == [(h.id, h.score) for h in by_image]
