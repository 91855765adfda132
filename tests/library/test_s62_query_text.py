"""Queries as a switcher from rclip types them (audit 62, findings 2, 3 and 4).

2. Plain-English queries holding ASCII quotes were refused ("expected + or - before the quoted term"): 'a painting
   called "Starry Night"', "rock 'n' roll band", '"Starry Night" painting', and a photo file name holding a quoted
   word ("q/with space & 'quote'.jpg"), where the same words in curly quotes were searched as text. The errors that
   remain (a query still ambiguous) name the way out: text:"...", image:"..." or --image.
3. A query starting with a time or ratio lost its first number silently: "10:30 meeting" was weight 10 on
   "30 meeting". `N:` before a digit is text; a sign glued to a weight (`-2:cat`) is an operator, as one glued to a
   quote (`-"cat"`) is, so `-2:cat` and `cat - 2:dog` subtract alike.
4. `search`'s plain output printed "no results: ..." on stdout (`--paths` sent it to stderr); `--json` gave no
   reason, where the REST answer has `reason`.
"""

from __future__ import annotations

import json
import shutil

import pytest

from clipforge.cli.main import main
from clipforge.library.query import QueryError, parse_query

QUIET = ["--workers", "0", "-q"]


def _terms(query: str) -> list[tuple[float, str, str]]:
    return [(t.weight, t.kind, t.value) for t in parse_query(query, lambda value: value.endswith(".jpg"))]


@pytest.mark.parametrize("query", [
    'a painting called "Starry Night"',
    "rock 'n' roll band",
    "it's 'raining' outside",
    "the 'best' dog",
    'a sign saying "stop" on a road',
    '"Starry Night" painting',
    "'n' roll",
    '"cat" dog',
])
def test_ascii_quotes_among_words_are_text_as_curly_ones_are(query: str) -> None:
    assert _terms(query) == [(1.0, "text", query)]
    curly = query.replace("'", "\u2018", 1).replace("'", "\u2019", 1).replace('"', "\u201c", 1).replace('"', "\u201d", 1)
    assert _terms(curly) == [(1.0, "text", curly)]  # the same shape in curly quotes: the same parse


def test_an_operator_inside_quoted_words_does_not_split_them() -> None:
    assert _terms('a sign saying "rock - paper" on a door') == [(1.0, "text", 'a sign saying "rock - paper" on a door')]
    assert _terms('"rock - paper" band - drums') == [(1.0, "text", '"rock - paper" band'), (-1.0, "text", "drums")]
    assert _terms('a "cat" - "dog"') == [(1.0, "text", 'a "cat"'), (-1.0, "text", "dog")]
    assert _terms("the dogs' bowl - cats' toys") == [(1.0, "text", "the dogs' bowl"), (-1.0, "text", "cats' toys")]


def test_a_photo_name_holding_a_quoted_word_is_an_image(tmp_path) -> None:
    photo = tmp_path / "q" / "with space & 'quote'.jpg"
    photo.parent.mkdir()
    photo.write_bytes(b"x")
    assert [(t.kind, t.value) for t in parse_query(str(photo))] == [("image", str(photo))]
    assert [(t.kind, t.value) for t in parse_query("'quote'.jpg")] == [("image", "'quote'.jpg")]
    assert [(t.kind, t.value) for t in parse_query(f"{photo} - 'cat'")] == [("image", str(photo)), ("text", "cat")]


@pytest.mark.parametrize("query, expected", [
    ("cat - dog", [(1.0, "text", "cat"), (-1.0, "text", "dog")]),
    ('2:"golden retriever"', [(2.0, "text", "golden retriever")]),
    ("2:golden retriever", [(2.0, "text", "golden retriever")]),
    ('"a" + "b"', [(1.0, "text", "a"), (1.0, "text", "b")]),
    ("'a' - 'b'", [(1.0, "text", "a"), (-1.0, "text", "b")]),
    ('-"grass"+"cat"', [(-1.0, "text", "grass"), (1.0, "text", "cat")]),
    ('"cat" + photo.jpg - 0.5:"grass"', [(1.0, "text", "cat"), (1.0, "image", "photo.jpg"), (-0.5, "text", "grass")]),
    ('image:"my photo.jpg" - text:"sofa.jpg"', [(1.0, "image", "my photo.jpg"), (-1.0, "text", "sofa.jpg")]),
    ('"rock - paper" - scissors', [(1.0, "text", "rock - paper"), (-1.0, "text", "scissors")]),
    (r'"say \"hi\""', [(1.0, "text", 'say "hi"')]),
])
def test_the_documented_arithmetic_is_unchanged(query: str, expected: list) -> None:
    assert _terms(query) == expected


WAY_OUT = 'put + or - between terms, or search it all as one text with text:"..." (a photo: image:"..." or --image)'
UNCLOSED = 'close it, or search the words as typed with text:"..." (a photo: image:"..." or --image)'


@pytest.mark.parametrize("query, line", [
    ('"cat" "dog"', f"""expected + or - between terms at position 6 in query '"cat" "dog"' (at '"dog"'): {WAY_OUT}"""),
    ('2:"golden retriever" dog', "expected + or - between terms at position 21 in query '2:\"golden retriever\" dog' "
                                 f"(at 'dog'): {WAY_OUT}"),
    ('cat - "dog" food', f"""expected + or - between terms at position 12 in query 'cat - "dog" food' (at 'food'): """
                         f"{WAY_OUT}"),
    ('"cat', f"""unterminated quote at position 0 in query '"cat' (at '"cat'): {UNCLOSED}"""),
    ("' cat", f"""unterminated quote at position 0 in query "' cat" (at "' cat"): {UNCLOSED}"""),
    ("cat - 'tis' season", f"""expected + or - between terms at position 12 in query "cat - 'tis' season" """
                           f"""(at 'season'): {WAY_OUT}"""),
])
def test_a_query_still_ambiguous_names_the_way_out(query: str, line: str) -> None:
    with pytest.raises(QueryError) as error:
        _terms(query)
    assert str(error.value) == line


@pytest.mark.parametrize("query, expected", [
    ("'90s fashion", [(1.0, "text", "'90s fashion")]),
    ("'tis the season", [(1.0, "text", "'tis the season")]),
    ("'Tis", [(1.0, "text", "'Tis")]),
    ("rock 'n roll - 'em", [(1.0, "text", "rock 'n roll"), (-1.0, "text", "'em")]),
    ("2:'90s car", [(2.0, "text", "'90s car")]),
    ("\u2018tis the season", [(1.0, "text", "\u2018tis the season")]),  # the ‘ smart punctuation types (review 63)
    ("cat - \u201890s", [(1.0, "text", "cat"), (-1.0, "text", "\u201890s")]),
    ("\u2018cat\u2019 - dog", [(1.0, "text", "cat"), (-1.0, "text", "dog")]),  # closed: a quote, as before
])
def test_an_apostrophe_no_quote_closes_is_text(query: str, expected: list) -> None:
    """`'90s fashion` was refused as an unterminated quote (stop 53's switcher audit)."""
    assert _terms(query) == expected


def test_the_ways_out_work() -> None:
    assert _terms('text:\'"cat" "dog"\'') == [(1.0, "text", '"cat" "dog"')]
    assert _terms(r'text:"\"cat\" \"dog\""') == [(1.0, "text", '"cat" "dog"')]
    assert _terms("text:\"'tis the season\"") == [(1.0, "text", "'tis the season")]
    assert _terms('2:"golden retriever" + dog') == [(2.0, "text", "golden retriever"), (1.0, "text", "dog")]


@pytest.mark.parametrize("query", ["10:30 meeting", "16:9 screen", "3:30 pm clock", "12:30pm lunch", "-10:30 meeting",
                                   "9:45 A.M. train", "4:3", "1:2.5 scale model"])
def test_a_time_or_ratio_is_text(query: str) -> None:
    assert _terms(query) == [(1.0, "text", query)]


@pytest.mark.parametrize(("query", "terms"), [
    ("2:3d render", [(2.0, "text", "3d render")]), ("2:1980s car", [(2.0, "text", "1980s car")]),
    ("cat - 2:3d render", [(1.0, "text", "cat"), (-2.0, "text", "3d render")]),
])
def test_a_weight_before_a_word_starting_with_a_digit_is_a_weight(query: str, terms: list) -> None:
    """Review 62: the time/ratio rule took `2:3d render` for the text "2:3d render", its weight lost silently."""
    assert _terms(query) == terms


def test_a_weight_is_n_colon_before_a_term_and_a_glued_sign_takes_it() -> None:
    assert _terms("cat + 16:9 screen") == [(1.0, "text", "cat"), (1.0, "text", "16:9 screen")]
    assert _terms("2:cat") == [(2.0, "text", "cat")]
    assert _terms('2: "cat"') == [(2.0, "text", "cat")]
    assert _terms("-2:cat") == [(-2.0, "text", "cat")]
    assert _terms("cat - 2:dog") == _terms("cat -2:dog") == [(1.0, "text", "cat"), (-2.0, "text", "dog")]
    assert _terms("+0.5:cat - .5:dog") == [(0.5, "text", "cat"), (-0.5, "text", "dog")]
    assert _terms("black-2:dog") == [(1.0, "text", "black-2:dog")]  # inside a word: never an operator


@pytest.fixture()
def photo_library(tmp_path, images_factory, capsys, monkeypatch) -> tuple[list[str], list]:
    """Three photos, one of them copied into `q/with space & 'quote'.jpg` (the working directory's)."""
    photos = images_factory(tmp_path / "photos", 3, formats=("png",))
    lib = ["--library", str(tmp_path / "lib"), "--model", "test-vit-tiny"]
    assert main(["index", "add", str(tmp_path / "photos"), *lib, *QUIET]) == 0
    (tmp_path / "q").mkdir()
    shutil.copy(photos[1], tmp_path / "q" / "with space & 'quote'.jpg")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    return lib, photos


def test_search_takes_quoted_words_and_a_quoted_file_name(photo_library, capsys) -> None:
    lib, photos = photo_library
    for query in ('a painting called "Starry Night"', "rock 'n' roll band", '"Starry Night" painting'):
        assert main(["search", query, *lib, "-k", "2", "--json"]) == 0, query
        out, err = capsys.readouterr()
        answer = json.loads(out)
        assert (answer["query"], answer["images"], len(answer["results"]), err) == (query, [], 2, ""), query
    assert main(["search", "q/with space & 'quote'.jpg", *lib, "-k", "1", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["images"] == ["q/with space & 'quote'.jpg"]
    assert answer["results"][0]["path"] == str(photos[1])
    assert answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert main(["search", '"cat" "dog"', *lib]) == 2
    assert capsys.readouterr().err == (f"""error: expected + or - between terms at position 6 in query '"cat" "dog"' """
                                       f"""(at '"dog"'): {WAY_OUT}\n""")


def test_no_results_goes_to_stderr_and_into_the_json_reason(photo_library, tmp_path, capsys) -> None:
    lib, _ = photo_library
    empty = tmp_path / "empty"
    empty.mkdir()
    reason = f"no indexed photo in {empty}"
    assert main(["search", "cat", *lib, "--in", str(empty)]) == 0
    assert capsys.readouterr() == ("", f"no results: {reason}\n")
    assert main(["search", "cat", *lib, "--in", str(empty), "--json"]) == 0
    out, err = capsys.readouterr()
    assert (json.loads(out), err) == ({"query": "cat", "images": [], "results": [], "reason": reason}, "")
    assert main(["search", "cat", *lib, "--in", str(empty), "--paths"]) == 0
    assert capsys.readouterr() == ("", f"no results: {reason}\n")
    assert main(["search", "cat", *lib, "--tag", "giraffe"]) == 0
    assert capsys.readouterr() == ("", "no results: no photo has tag 'giraffe': this library has no tags yet (tag it "
                                       "with `clipforge tag --labels \"cat, dog, car\"`)\n")
    found = json.loads(_out(capsys, ["search", "cat", *lib, "-k", "1", "--json"]))
    assert len(found["results"]) == 1 and found["reason"] is None


def _out(capsys, argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def test_the_json_reason_is_the_rest_answers(photo_library, tmp_path, capsys) -> None:
    """One source for both: the library's `no_results_reason`, which the REST route answers with."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipforge.library import Library, resolve_encoder
    from clipforge.server import create_app

    lib, _ = photo_library
    cli = json.loads(_out(capsys, ["search", "cat", *lib, "--tag", "giraffe", "--json"]))
    with Library(tmp_path / "lib", resolve_encoder("test-vit-tiny")) as library, \
            TestClient(create_app(library, ui=False)) as client:
        rest = client.post("/api/search", json={"text": "cat", "top_k": 2, "tags": "giraffe"}).json()
    assert cli["results"] == rest["results"] == [] and cli["reason"] == rest["reason"]
    assert "no photo has tag 'giraffe'" in cli["reason"]


@pytest.mark.parametrize("query, expected", [
    ("２：猫", [(2.0, "text", "猫")]),
    ("「猫」－「草」", [(1.0, "text", "猫"), (-1.0, "text", "草")]),
    ('"猫" ＋ "犬"', [(1.0, "text", "猫"), (1.0, "text", "犬")]),
    ("猫 －2：狗", [(1.0, "text", "猫"), (-2.0, "text", "狗")]),
    ("text：猫", [(1.0, "text", "猫")]),
    ("北京－上海", [(1.0, "text", "北京－上海")]),  # a full-width dash inside words is text, as "-" is
    # review 63: between words a spaced full-width sign is a route, a range, a subtitle: text (it subtracted)
    ("北京 － 上海 － 广州", [(1.0, "text", "北京 － 上海 － 广州")]),
    ("ドラえもん － のび太の恐竜", [(1.0, "text", "ドラえもん － のび太の恐竜")]),
    ("Ｔシャツ ＋ ジーンズ", [(1.0, "text", "Ｔシャツ ＋ ジーンズ")]),
    ("猫 － 「草」", [(1.0, "text", "猫"), (-1.0, "text", "草")]),  # before a quote: arithmetic
    ('"猫" － 狗', [(1.0, "text", "猫"), (-1.0, "text", "狗")]),  # after a quoted term: arithmetic
    ("「猫」 － 草 － 花", [(1.0, "text", "猫"), (-1.0, "text", "草"), (-1.0, "text", "花")]),  # then each sign alike
    ("10：30 会议", [(1.0, "text", "10：30 会议")]),  # a time, as 10:30
])
def test_the_full_width_signs_an_input_method_types_are_the_ascii_ones(query: str, expected: list) -> None:
    """`２：猫` was the text "２：猫" while `２:猫` weighed 猫 by 2 (stop 63's i18n audit, finding 7)."""
    assert _terms(query) == expected
