"""Text typed on a command line or sent to the REST API that is not text to search by (audit 63 i18n #5, #9, #6).

#5: bytes that are not UTF-8 (a Latin-1 or Shift-JIS terminal, a script in a legacy encoding) reach Python as lone
surrogates ("caf\\xe9" -> "caf\\udce9"). `search`, `similarity` and `classify` embedded them silently (`caf�`), `tag`
embedded every prompt and then failed inside SQLite with a bare codec message, `search --tag` failed the same way.
Now each text flag is checked before any model or library is opened: one line naming the flag and the byte, exit 2.

#9: text of invisible characters only (ZWJ, RLO, NUL, ...) was searched as an empty prompt (REST 200 with ranked
hits), while blanks were refused; a NUL inside a template file's line was kept in the prompt.

#6: `indistinct_notice` blamed the 16-token context's cut for labels that tokenize the same for another reason
(Chinese-CLIP's [UNK]: 'قطة' = '😺') and told the user to shorten them.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.text.typed import check_argument, invisible_class, invisible_problem, unicode_problem

TERMINAL = ("your terminal's (or script's) encoding is not UTF-8 (Latin-1, Shift-JIS, ...): switch it to UTF-8, or "
            "convert the text with `iconv -t UTF-8`")
REST_TEXT = "text: {}: give some words, or leave text out to search by image alone"


def test_the_one_check_names_the_byte_or_the_invisible_characters() -> None:
    assert unicode_problem("café 猫 😺") is None and unicode_problem("caf\udce9", command_line=True) == (
        f"not valid UTF-8 (byte 0xe9 after 'caf'); {TERMINAL}")
    assert unicode_problem("\udc8eq,dog", command_line=True) == f"not valid UTF-8 (byte 0x8e at its start); {TERMINAL}"
    assert unicode_problem("x" * 30 + "\udcff", command_line=True).startswith(
        "not valid UTF-8 (byte 0xff after '...xxxxxxxxxxxxxxxxxxxx'); ")
    # the REST API's words for a lone surrogate (`server.errors`: JSON's "\ud800" escape)
    assert unicode_problem("a \ud800") == ("not valid Unicode text (an escaped lone surrogate such as \\ud800); send "
                                           "the text as UTF-8")
    assert invisible_problem("cat") is None and invisible_problem("\u200dcat\u200d") is None
    assert invisible_problem(" \u3000\t") == "only blanks (spaces, tabs or other white space)"
    assert invisible_problem("\u200d") == "only invisible characters (U+200D ZERO WIDTH JOINER)"
    assert invisible_problem("\u202e \x00\u200b\u2060\ufeff") == (
        "only invisible characters (U+202E RIGHT-TO-LEFT OVERRIDE, U+0000 (a control character), "
        "U+200B ZERO WIDTH SPACE, ...)")
    assert check_argument("猫，狗", "--labels") == "猫，狗"
    with pytest.raises(ValueError) as raised:
        check_argument("\u200d", "--text", words=True)
    assert str(raised.value) == "--text '\\u200d': only invisible characters (U+200D ZERO WIDTH JOINER): give some words"


def test_the_published_pattern_refuses_the_invisible_characters_the_check_refuses() -> None:
    pattern = re.compile(f"[{invisible_class()}]")
    assert all(pattern.fullmatch(ch) for ch in "\x00\x1b\x7f\u200b\u200d\u202e\u2060\ufeff\u00ad\u180e\ufe0f")
    assert not any(pattern.fullmatch(ch) for ch in "a猫😺é\u0301 \u3000")


@pytest.fixture()
def nothing_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way a command gets to its model or library fails the test: the check comes before any work."""
    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model or library was opened before the text was checked")

    import clipforge.cli.common
    import clipforge.cli.search
    import clipforge.cli.tag
    import clipforge.zeroshot.files

    monkeypatch.setattr(clipforge.cli.common, "load_cli_model", loaded)
    monkeypatch.setattr(clipforge.zeroshot.files, "classify_files", loaded)
    monkeypatch.setattr(clipforge.cli.search, "open_library", loaded)
    monkeypatch.setattr(clipforge.cli.tag, "open_library", loaded)


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "p.png"
    Image.new("RGB", (32, 32), (200, 120, 40)).save(path)
    return path


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_undecodable_bytes_in_each_text_flag_are_one_line_before_any_work(
        nothing_loads: None, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = str(tmp_path / "lib")
    assert _error(["search", "caf\udce9", "--library", lib, "-k", "2"], capsys) == (
        f"error: QUERY: not valid UTF-8 (byte 0xe9 after 'caf'); {TERMINAL}")
    assert _error(["search", '"cat" - "caf\udce9"', "--library", lib], capsys) == (
        f"error: QUERY: not valid UTF-8 (byte 0xe9 after 'caf'); {TERMINAL}")
    assert _error(["search", "cat", "--tag", "dog", "--tag", "caf\udce9", "--library", lib], capsys) == (
        f"error: --tag: not valid UTF-8 (byte 0xe9 after 'caf'); {TERMINAL}")
    assert _error(["similarity", str(photo), "--text", "a dog", "caf\udce9", "--model", "clipforge-tiny"],
                  capsys) == f"error: --text: not valid UTF-8 (byte 0xe9 after 'caf'); {TERMINAL}"
    assert _error(["classify", str(photo), "--labels", "caf\udce9,dog", "--model", "clipforge-tiny", "--quiet"],
                  capsys) == f"error: --labels: not valid UTF-8 (byte 0xe9 after 'caf'); {TERMINAL}"
    assert _error(["classify", str(photo), "--labels", "cat,dog", "--templates", "a {} in caf\udce9"],
                  capsys) == f"error: --templates: not valid UTF-8 (byte 0xe9 after 'a {{}} in caf'); {TERMINAL}"
    assert _error(["tag", "--library", lib, "--labels", "\udc8eq,dog"], capsys) == (
        f"error: --labels: not valid UTF-8 (byte 0x8e at its start); {TERMINAL}")
    assert _error(["tag", "--library", lib, "--labels", "cat", "--templates", "\udc8e {}"], capsys) == (
        f"error: --templates: not valid UTF-8 (byte 0x8e at its start); {TERMINAL}")


def test_invisible_only_text_is_refused_as_blank_text_is(
        nothing_loads: None, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = str(tmp_path / "lib")
    zwj = "only invisible characters (U+200D ZERO WIDTH JOINER): give some words"
    assert _error(["search", "\u200d", "--library", lib], capsys) == f"error: QUERY '\\u200d': {zwj}"
    assert _error(["search", "cat", "--tag", "\u200d", "--library", lib], capsys) == f"error: --tag '\\u200d': {zwj}"
    assert _error(["similarity", str(photo), "--text", "a dog", "\u202e\x00", "--model", "clipforge-tiny"],
                  capsys) == ("error: --text '\\u202e\\x00': only invisible characters (U+202E RIGHT-TO-LEFT "
                              "OVERRIDE, U+0000 (a control character)): give some words")
    assert _error(["similarity", str(photo), "--text", " \u3000 ", "--model", "clipforge-tiny"], capsys) == (
        "error: --text ' \\u3000 ': only blanks (spaces, tabs or other white space): give some words")
    # a label of invisible characters is no label, as a blank one is (one rule: `split_labels`)
    assert _error(["classify", str(photo), "--labels", "\u200d, \u202e", "--model", "clipforge-tiny"], capsys) == (
        "error: --labels '\\u200d, \\u202e': no label in it; expected comma-separated labels (',', '，', '、', '､' "
        "or '،' between them), e.g. 'cat,dog,car' or '猫，狗，汽车'")


def test_invisible_labels_are_dropped_like_blank_ones() -> None:
    from clipforge.text.labels import split_labels

    assert split_labels("cat,\u200d,dog,\x00") == ["cat", "dog"]
    assert split_labels(["\u200dcat", "\u2060"]) == ["\u200dcat"]  # an invisible character among letters is kept


def test_a_template_file_line_holding_a_control_character_is_refused(tmp_path: Path) -> None:
    from clipforge.zeroshot.prompts import TemplateError, get_templates

    good = tmp_path / "good.txt"
    good.write_bytes(b"# mine\r\na photo of a {}.\r\n\ta\tdrawing of a {}\t\n")
    assert get_templates(str(good)) == ["a photo of a {}.", "a\tdrawing of a {}"]  # tabs are text, CRLF line ends
    nul = tmp_path / "tpl_nul.txt"
    nul.write_bytes(b"a photo of a {}.\n\n  a photo\x00 of {}\n")
    with pytest.raises(TemplateError) as raised:
        get_templates(str(nul))
    assert str(raised.value) == (f"template file {nul} line 3: 'a photo\\x00 of {{}}' holds a control character "
                                 "(U+0000), which is no text; remove it")
    listed = tmp_path / "tpl.json"
    listed.write_text('["a photo of a {}.", "a \\u001b[31mred\\u001b[0m {}"]', encoding="utf-8")
    with pytest.raises(TemplateError) as raised:
        get_templates(str(listed))
    assert str(raised.value) == (f"template file {listed} template 2: 'a \\x1b[31mred\\x1b[0m {{}}' holds a control "
                                 "character (U+001B), which is no text; remove it")


def test_classify_refuses_the_nul_template_file_in_one_line(photo: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    nul = tmp_path / "tpl_nul.txt"
    nul.write_bytes(b"a photo\x00 of {}\n")
    assert _error(["classify", str(photo), "--labels", "cat,dog", "--templates", str(nul), "--model",
                   "clipforge-tiny", "--json"], capsys) == (
        f"error: template file {nul} line 1: 'a photo\\x00 of {{}}' holds a control character (U+0000), which is "
        "no text; remove it")


def test_rest_search_refuses_invisible_only_text_and_publishes_it(tmp_path: Path, photo: Path) -> None:
    pytest.importorskip("fastapi")
    import torch
    from fastapi.testclient import TestClient

    from clipforge.image import build_preprocess
    from clipforge.library import Encoder, Library
    from clipforge.models import create_model_from_config, get_config
    from clipforge.server import create_app
    from clipforge.server.service import LibraryService

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model_from_config(get_config("test-vit-tiny")).eval()
    library = Library(tmp_path / "lib", Encoder(model, build_preprocess(32), name="test-vit-tiny"))
    library.add(photo.parent, workers=0, progress=False)
    try:
        with TestClient(create_app(library, ui=False)) as client:
            for text, named in (("\u200d", "U+200D ZERO WIDTH JOINER"), ("\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),
                                ("\x00", "U+0000 (a control character)"), ("\u200b ", "U+200B ZERO WIDTH SPACE")):
                refusal = REST_TEXT.format(f"only invisible characters ({named})")
                for response in (client.post("/api/search", json={"text": text, "top_k": 1}),
                                 client.post("/api/search", data={"text": text, "top_k": "1"})):
                    assert response.status_code == 422, response.text
                    assert response.json() == {"error": "invalid_request", "detail": refusal}
            blank = client.post("/api/search", json={"text": " \u3000", "top_k": 1})  # unchanged
            assert blank.json()["detail"] == REST_TEXT.format("only blanks (spaces, tabs or other white space)")
            words = client.post("/api/search", json={"text": "\u200dred\u200d", "top_k": 1})
            assert words.status_code == 200 and len(words.json()["results"]) == 1
            labels = client.post("/api/classify", json={"image": base64.b64encode(photo.read_bytes()).decode(),
                                                        "labels": ["cat", "\u200d"]})
            assert labels.status_code == 422 and labels.json()["detail"].startswith("labels.1: ")
            spec = client.get("/openapi.json").json()
            schema = spec["paths"]["/api/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            pattern = re.compile(schema["properties"]["text"]["pattern"])
            assert pattern.search("\u200d\u202e\x00") is None and pattern.search("\u200d猫")
        # the web page's path (no body model): invisible text is no text, as blanks are
        assert LibraryService(library).clean_text("\u200d\u3000") is None
    finally:
        library.close()


def test_the_notice_says_the_tokenizer_when_the_cut_is_not_the_cause() -> None:
    from clipforge.cli.common import indistinct_notice
    from clipforge.text.context_cut import same_after_cut
    from clipforge.text.families import CarriedTokenizer
    from clipforge.text.wordpiece import tokenize_chinese

    tokenizer = CarriedTokenizer(tokenize_chinese, 52)  # Chinese-CLIP's WordPiece: Arabic and emoji are [UNK]
    unknown = same_after_cut(tokenizer, {"قطة": ["قطة"], "😺": ["😺"], "long": ["一" * 60]})
    assert unknown == [["قطة", "😺"]]
    assert indistinct_notice(unknown, "cn-RN50", 52, "labels") == (
        "notice: model cn-RN50 cannot tell these labels apart: its tokenizer reads them as the same tokens, so "
        "they score the same ('قطة' = '😺')")
    cut = same_after_cut(tokenizer, {"x": ["一" * 60 + "猫"], "y": ["一" * 60 + "狗"]})
    assert cut == [["x", "y"]]
    assert indistinct_notice(cut, "cn-RN50", 52, "texts") == (
        "notice: model cn-RN50 cannot tell these texts apart: its 52-token context cuts them to the same tokens, "
        "so they score the same ('x' = 'y'); shorten them")
