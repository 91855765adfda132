"""Text holding a lone surrogate: an undecodable byte of a command-line argument (``$'a \\xff cat'`` arrives as
``"a \\udcff cat"``) or ``"\\ud800"`` in a REST body. The search and classify themselves ran; the notices beside
them and the class-embedding cache key encoded the text strictly and raised "surrogates not allowed" (the CLI's
one line was Python's codec message, the REST search notice an exception)."""

from __future__ import annotations

from clipforge.cli.main import main
from clipforge.library import Library
from clipforge.server.service import LibraryService
from clipforge.text import tokenizer_of
from clipforge.text.context_cut import cut_texts, unread_part
from clipforge.zeroshot.embeddings import cache_key


def test_the_length_checks_and_the_cache_key_take_a_lone_surrogate(tiny_encoder) -> None:
    tokenizer = tokenizer_of(tiny_encoder.model)
    assert unread_part(tokenizer, "a \udcff cat") == ""
    assert cut_texts(tokenizer, ["a \ud800 " * 40]) == ["a \ud800 " * 40]
    key = cache_key("f" * 64, ["\udcffdog", "cat"], ["a photo of a {}."], 77)
    assert len(key) == 32 and key != cache_key("f" * 64, ["dog", "cat"], ["a photo of a {}."], 77)


def test_a_search_with_an_undecodable_byte_runs_and_says_nothing_false(
    tmp_path, tiny_encoder, images_factory, capsys
) -> None:
    images_factory(tmp_path / "photos", 3)
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        assert LibraryService(library).search_notice("a \ud800 cat") is None
    # the CLI now refuses such a query before searching, naming the byte (audit 63 i18n #5: it searched U+FFFD)
    assert main(["search", "a \udcff cat", "--library", str(tmp_path / "lib"), "-k", "2", "--paths"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: QUERY: not valid UTF-8 (byte 0xff after 'a '); ")
    assert "surrogates" not in err


def test_a_failed_file_whose_name_holds_a_newline_is_one_failure_line(tmp_path, capsys) -> None:
    """`index add`'s and `embed`'s `  failed: PATH: why` lines printed such a name's tail as a line of its own."""
    from clipforge.cli.common import print_failures

    print_failures([(str(tmp_path / "bad\nname.jpg"), "not an image")], "index stats")
    assert capsys.readouterr().err == f"  failed: {tmp_path}/bad\\nname.jpg: not an image\n"
