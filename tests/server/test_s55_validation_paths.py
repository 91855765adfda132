"""A refused JSON field is named by its path alone, and text that is not Unicode says so.

pydantic names each branch of a union it tried: `{"labels": ["\\udc00"]}` was answered "labels.list[function-after[
check(), constrained-str]].0: Input should be a valid string, unable to parse raw data as a unicode string; labels.
function-after[check(), function-after[check(), function-after[check(), constrained-str]]]: Input should be a valid
string". Now: the field's path (`labels.0`), its most specific branch's error alone, and what a lone surrogate is.
"""

from __future__ import annotations

import pytest

from clipforge.server.errors import validation_text

UNICODE = "not valid Unicode text (an escaped lone surrogate such as \\ud800); send the text as UTF-8"


def _post(client, path: str, body: bytes):
    return client.post(path, content=body, headers={"content-type": "application/json"})


def test_a_surrogate_in_a_label_list_names_the_label(make_client) -> None:
    answer = _post(make_client(), "/api/classify", b'{"labels": ["cat", "\\udc00"]}')
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert f"labels.1: {UNICODE}" in detail, detail
    assert "[" not in detail and detail.count("labels") == 1, detail


def test_a_surrogate_in_search_text_says_what_it_is(make_client) -> None:
    answer = _post(make_client(), "/api/search", b'{"text": "a \\ud800 cat"}')
    assert (answer.status_code, answer.json()) == (422, {"error": "invalid_request", "detail": f"text: {UNICODE}"})


@pytest.mark.parametrize(("errors", "expected"), [
    ([{"loc": ("body", "labels", "list[str]", 2), "msg": "m1", "type": "string_type"},
      {"loc": ("body", "labels", "function-after[check(), str]"), "msg": "m2", "type": "string_type"}],
     "labels.2: m1"),
    ([{"loc": ("body", "labels", "str"), "msg": "m2", "type": "string_type"},
      {"loc": ("body", "labels", "list[str]", 0), "msg": "m1", "type": "string_type"},
      {"loc": ("body", "top_k"), "msg": "m3", "type": "int_type"}],
     "labels.0: m1; top_k: m3"),
    ([{"loc": ("body", "a"), "msg": "x", "type": "t"}, {"loc": ("body", "a"), "msg": "y", "type": "t"}], "a: x; a: y"),
])
def test_union_branches_collapse_to_the_deepest(errors, expected) -> None:
    assert validation_text(errors) == expected
