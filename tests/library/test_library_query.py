"""Query arithmetic parser and the weighted combination of term embeddings."""

from __future__ import annotations

import re

import numpy as np
import pytest

from clipforge.library.query import QueryError, QueryTerm, combine_terms, parse_query


def _is_image(value: str) -> bool:
    return value.lower().endswith((".jpg", ".png"))


def parse(query: str) -> list[QueryTerm]:
    return parse_query(query, is_image=_is_image)


def test_plain_text_is_one_term():
    assert parse("a dog on the beach") == [QueryTerm(1.0, "text", "a dog on the beach")]


def test_arithmetic_with_text_and_image():
    assert parse('"cat" + photo.jpg - "grass"') == [
        QueryTerm(1.0, "text", "cat"), QueryTerm(1.0, "image", "photo.jpg"), QueryTerm(-1.0, "text", "grass")]


def test_weights_and_signs():
    assert parse('2:"cat" - 0.5:photo.jpg + .25:"sky"') == [
        QueryTerm(2.0, "text", "cat"), QueryTerm(-0.5, "image", "photo.jpg"), QueryTerm(0.25, "text", "sky")]


def test_leading_minus_and_no_spaces_around_quotes():
    assert parse('-"grass"+"cat"') == [QueryTerm(-1.0, "text", "grass"), QueryTerm(1.0, "text", "cat")]


def test_hyphens_inside_words_are_not_operators():
    assert parse("a black-and-white photo - colour") == [
        QueryTerm(1.0, "text", "a black-and-white photo"), QueryTerm(-1.0, "text", "colour")]


def test_quoted_text_keeps_operators_and_escapes():
    assert parse(r'"rock - paper + scissors" + "say \"hi\""') == [
        QueryTerm(1.0, "text", "rock - paper + scissors"), QueryTerm(1.0, "text", 'say "hi"')]


def test_prefixes_force_kind():
    assert parse('image:"my photo.jpeg" - text:photo.jpg') == [
        QueryTerm(1.0, "image", "my photo.jpeg"), QueryTerm(-1.0, "text", "photo.jpg")]


def test_existing_file_without_extension_is_image(tmp_path):
    path = tmp_path / "scan0001"
    path.write_bytes(b"x")
    assert parse_query(f"{path} + \"red\"")[0] == QueryTerm(1.0, "image", str(path))


@pytest.mark.parametrize("query, message", [
    ("", "empty query"),
    ("   ", "empty query"),
    ('"cat', "unterminated quote"),
    ('"cat" "dog"', "expected + or - between terms"),
    ('"cat" +', "expected a term after the operator"),
    ('cat - "dog" food', "expected + or - between terms"),  # `cat "dog"` is the text, as with curly quotes
    ('"cat" + ""', "empty term"),
])
def test_errors_point_at_the_problem(query, message):
    with pytest.raises(QueryError, match=re.escape(message)):
        parse(query)


def test_combine_is_normalised_weighted_sum():
    basis = {"a": np.array([1.0, 0.0, 0.0]), "b": np.array([0.0, 1.0, 0.0]), "p.jpg": np.array([0.0, 0.0, 1.0])}

    def enc(values):
        return np.stack([basis[v] for v in values]).astype(np.float32)

    vector = combine_terms(parse('2:"a" - "b" + p.jpg'), enc, enc)
    expected = np.array([2.0, -1.0, 1.0]) / np.sqrt(6.0)
    np.testing.assert_allclose(vector, expected, atol=1e-6)
    with pytest.raises(QueryError, match="cancel out"):
        combine_terms(parse('"a" - "a"'), enc, enc)


def test_image_paths_in_a_query_expand_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    terms = parse_query('"cat" + ~/Pictures/sofa.jpg - image:~/x.png - text:~/notes.jpg')
    assert [(t.kind, t.value) for t in terms] == [
        ("text", "cat"), ("image", str(tmp_path / "Pictures" / "sofa.jpg")), ("image", str(tmp_path / "x.png")),
        ("text", "~/notes.jpg")]
