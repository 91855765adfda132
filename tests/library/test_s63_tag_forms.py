"""A tag filter matches a stored tag typed in another Unicode form (audit 63 i18n #6).

`search --tag` with NFD `café` (e + U+0301, what macOS file names and some input methods give) on a library tagged
with NFC `café`, or `cat` on one tagged `ｃａｔ` (a Japanese input method's full-width letters), found nothing and
said "no photo has tag 'café'; tags: café (1)", naming a tag that looks the same. Tags are compared in NFKC form,
the form label repeats are compared in (`text.labels.label_key`): the query's form against the stored tags' forms,
so libraries tagged before (whose stored tags keep the spelling typed) match too.
"""

from __future__ import annotations

import pytest

from clipforge.cli.main import main
from clipforge.library import Library

NFC, NFD = "caf\u00e9", "cafe\u0301"


@pytest.fixture()
def tagged(tmp_path, tiny_encoder, images_factory):
    images_factory(tmp_path / "photos", 8)
    library = Library(tmp_path / "lib", tiny_encoder)
    library.add(tmp_path / "photos", workers=0, progress=False)
    library.classify(f"{NFC}, ｃａｔ", templates="simple", top_k=2, progress=False)
    yield library
    library.close()


def test_a_tag_filter_matches_every_unicode_form_of_a_stored_tag(tagged) -> None:
    store, model = tagged.store, tagged.space_fingerprint
    counts = tagged.tag_counts()
    assert sorted(counts) == sorted([NFC, "ｃａｔ"]) and sum(counts.values()) == 8
    for stored, typed in ((NFC, NFD), ("ｃａｔ", "cat"), ("ｃａｔ", "ｃａｔ"), (NFC, NFC)):
        ids = store.image_ids_with_tags(model, [typed])
        assert ids == store.image_ids_with_tags(model, [stored]) and len(ids) == counts[stored]
        assert len(store.image_ids_with_tags(model, [typed], 1)) == 8  # each photo's tags of rank 0 and 1
        hits = tagged.search("a photo", top_k=20, filter_tags=typed)
        assert sorted(h.id for h in hits) == sorted(ids)
    assert len(store.image_ids_with_tags(model, [NFD, "cat"])) == 8
    assert store.image_ids_with_tags(model, ["dog", "Cat"]) == []  # case is no Unicode form: not the same tag
    top = max(counts, key=counts.__getitem__)  # a tag some photo has at rank 0, typed in the other form
    assert tagged.no_results_reason({NFC: NFD, "ｃａｔ": "cat"}[top]) == "no photo matched"


def test_search_tag_in_another_form_lists_the_tagged_photos(tagged, capsys) -> None:
    root = str(tagged.paths.root)
    tagged.close()
    assert main(["search", "a photo", "--tag", NFD, "--tag", "cat", "--library", root, "-k", "20", "--paths"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 8 and "no results" not in captured.err


@pytest.mark.parametrize("store", ["embedded", "milvus"])
def test_both_stores_match_the_forms_and_say_the_same(store, tmp_path, images_factory, capsys) -> None:
    """The same answers from a milvus-lite library (its filter is a Milvus expression over the stored spelling)."""
    if store == "milvus":
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
    where = (["--library", str(tmp_path / "lib")] if store == "embedded"
             else ["--store", f"milvus-lite:{tmp_path}/m.db", "--library", str(tmp_path / "mlib")])
    images_factory(tmp_path / "photos", 4)
    assert main(["index", "add", str(tmp_path / "photos"), *where, "--model", "test-vit-tiny", "-q"]) == 0
    assert main(["tag", "--labels", "ｃａｔ", "--templates", "simple", *where, "-q"]) == 0  # one label: every photo's
    capsys.readouterr()
    assert main(["search", "a photo", "--tag", "cat", *where, "-k", "10", "--paths"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 4, captured.err
    assert main(["search", "a photo", "--tag", NFD, *where, "-k", "10"]) == 0
    assert capsys.readouterr().err == f"no results: no photo has tag {NFD!r}; tags: ｃａｔ (4)\n"
    from clipforge.library.milvus_library import MilvusLibrary

    with (Library(tmp_path / "lib") if store == "embedded"
          else MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib")) as library:
        assert library.no_results_reason("cat") == "no photo matched"  # it was "no photo has tag 'cat'"
