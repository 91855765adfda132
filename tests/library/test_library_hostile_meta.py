"""A library database edited by a hostile hand, and a `tag` run stopped halfway.

Every value the library reads back from its own database - a meta row written as JSON (the index spec, the
index's record, a tag vocabulary), a counter, the vectors' dtype, a vector blob, a tag's score - may have been
altered. Each must end as one line naming the database and what was expected (or, for a derived record, a
rebuild), never a traceback, a silently dropped vector, or a million prompts encoded. And `tag` interrupted
(Ctrl-C, kill -9) must leave the library tagged as it was before, not half with the new labels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipforge.cli.main import main
from clipforge.library import Library
from clipforge.library.tagging import tag_library


@pytest.fixture()
def tagged(tmp_path, tiny_encoder, images_factory):
    """A closed library of 4 photos, tagged 'cat, dog', its index saved; returns (folder, db, fingerprint)."""
    images_factory(tmp_path / "photos", 4)
    images_factory(tmp_path / "more", 1, seed=7, prefix="new")
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        library.classify("cat, dog", progress=False)
        library.search("a photo")
        fingerprint = library.encoder.fingerprint
    return tmp_path / "lib", tmp_path / "lib" / "library.sqlite3", fingerprint


def _edit(lib, sql: str, params=()) -> None:
    with Library(lib) as library:
        library.store.conn().execute(sql, params)


def _one_line(capsys, *argv: str) -> str:
    """Run the CLI, expecting the user-error status and one line on stderr; returns that line."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_a_vector_dtype_the_schema_refuses_is_named_not_a_silently_lost_vector(tagged, capsys):
    """meta 'vector_dtype' = 'float64': each new photo's vector row broke the schema's CHECK, INSERT OR IGNORE
    dropped it without a word, and `index add` said "added 1" for a photo no search could ever find."""
    lib, db, _ = tagged
    _edit(lib, "UPDATE meta SET value = 'float64' WHERE key = 'vector_dtype'")
    err = _one_line(
        capsys, "index", "add", str(lib.parent / "more"), "--library", str(lib), "--workers", "0", "-q"
    )
    assert err.startswith(
        f"error: library database {db} is damaged (its meta key 'vector_dtype' holds 'float64', "
        "not 'float32' or 'float16')"
    ), err
    with Library(lib) as library:
        assert library.store.status_counts()["ok"] == 4  # nothing recorded as indexed without its vector
        assert library.store.images_missing_vectors(library.model_fingerprint) == []


_NESTED = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("key", "value", "why", "fix"),
    [
        (
            "index_spec",
            _NESTED,
            "its meta key 'index_spec' holds '[[[",
            ["index", "rebuild", "--index", "flat"],
        ),
        (
            "index_spec",
            "[1, 2]",
            "its meta key 'index_spec' is not an index spec: a JSON list, not an object",
            ["index", "rebuild", "--index", "flat"],
        ),
        (
            "index_spec",
            json.dumps({"kind": "ivf", "nlist": 10**12}),
            "its meta key 'index_spec' is not an index spec: index setting nlist must be a whole number from 1 to "
            "262144 (or unset), got 1000000000000",
            ["index", "rebuild", "--index", "flat"],
        ),
        (
            "tag_labels:",
            _NESTED,
            "its meta key 'tag_labels:{fp}' holds '[[[",
            ["tag", "--labels", "cat, dog", "-q"],
        ),
        (
            "tag_labels:",
            json.dumps({"labels": 5, "templates": "imagenet", "top_k": 2}),
            "its meta key 'tag_labels:{fp}' holds labels that are not a list of words",
            ["tag", "--labels", "cat, dog", "-q"],
        ),
        (
            "tag_labels:",
            json.dumps({"labels": [f"l{i}" for i in range(100_001)], "templates": "imagenet", "top_k": 2}),
            "its meta key 'tag_labels:{fp}' holds 100001 labels, more than the 100000 `clipforge tag` records",
            ["tag", "--labels", "cat, dog", "-q"],
        ),
    ],
    ids=[
        "spec-nested",
        "spec-list",
        "spec-nlist-1e12",
        "vocabulary-nested",
        "vocabulary-labels-int",
        "vocabulary-100001-labels",
    ],
)
def test_a_json_meta_row_edited_into_something_else_is_one_line_and_its_fix_works(
    tagged, capsys, key, value, why, fix
):
    """Before: RecursionError / AttributeError / TypeError tracebacks, std::bad_alloc on every search (nlist
    10**12), or an add that prompted a million labels. Now one line naming the database and the key, and the
    command it names puts the library right."""
    lib, db, fingerprint = tagged
    full_key = key + fingerprint if key.endswith(":") else key
    _edit(lib, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (full_key, value))
    command = (
        ["search", "a cat"]
        if key == "index_spec"
        else ["index", "add", str(lib.parent / "more"), "-q", "--workers", "0"]
    )
    err = _one_line(capsys, *command, "--library", str(lib))
    assert err.startswith(f"error: library database {db} is damaged ({why.format(fp=fingerprint)}"), err
    assert f"`clipforge {' '.join(fix[:2])}" in err, err
    assert main([*fix, "--library", str(lib)]) == 0
    assert (
        main(["index", "add", str(lib.parent / "more"), "-q", "--workers", "0", "--library", str(lib)]) == 0
    )
    capsys.readouterr()
    assert main(["search", "a cat", "--library", str(lib), "--tag", "cat", "--top-k", "9", "--paths"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5  # every photo, the new one tagged too


def test_an_index_record_nested_past_the_decoder_means_a_rebuild(tagged, capsys):
    """The index's record is derived, like its file: one the JSON decoder cannot read (RecursionError, a
    traceback on every search before) is rebuilt from the database."""
    lib, _, fingerprint = tagged
    _edit(lib, "UPDATE meta SET value = ? WHERE key = ?", (_NESTED, "index_state:" + fingerprint))
    assert main(["search", "a cat", "--library", str(lib), "--top-k", "9", "--paths"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    with Library(lib) as library:
        assert library.index_manager.status()["fresh"] is True


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        (
            "UPDATE meta SET value = 'abc' WHERE key = 'removals'",
            "its meta key 'removals' holds 'abc', not a count",
        ),
        (
            "UPDATE meta SET value = x'ff00' WHERE key = 'model_name'",
            "its meta key 'model_name' holds b'\\xff\\x00', not a model name",
        ),
        ("UPDATE tags SET score = 'x'", "a tag of image 1 has the score 'x', not a number"),
    ],
    ids=["removals-text", "model-name-blob", "tag-score-text"],
)
def test_a_scalar_of_the_wrong_type_names_the_database(tagged, capsys, sql, why):
    """Before: "invalid literal for int() with base 10: 'abc'", "could not convert string to float: 'x'" (naming
    neither file nor field), or a TypeError traceback ("model must be a name ...; got bytes")."""
    lib, db, _ = tagged
    _edit(lib, sql)
    err = _one_line(capsys, "search", "a cat", "--library", str(lib))
    assert err.startswith(f"error: library database {db} is damaged ({why}"), err


@pytest.mark.parametrize("edit", ["dtype-float16", "vector-as-text"])
def test_a_vector_row_edited_out_of_shape_is_named_by_a_filtered_search(tagged, capsys, edit):
    """A tag-filtered search scores the stored vectors exactly: a row relabelled float16 (its 128 bytes read as
    64 values) gave "matmul: Input operand 1 has a mismatch in its core dimension 0 ..."; a vector stored as
    text a TypeError traceback. Now the same line as a vector cut short: the row, its photos, the fix."""
    lib, db, _ = tagged
    with Library(lib) as library:
        victim = library.list_images()[1]
        embedding = (
            library.store.conn()
            .execute("SELECT id FROM embeddings WHERE sha256 = ?", (victim.sha256,))
            .fetchone()[0]
        )
        sql = (
            "UPDATE embeddings SET dtype = 'float16' WHERE id = ?"
            if edit == "dtype-float16"
            else "UPDATE embeddings SET vector = 'abcdabcdabcd' WHERE id = ?"
        )
        library.store.conn().execute(sql, (embedding,))
    size = 128 if edit == "dtype-float16" else 12
    err = _one_line(capsys, "search", "a cat", "--tag", "cat", "--library", str(lib))
    assert err.startswith(
        f"error: library database {db} is damaged: vector {embedding} is {size} bytes, not 32 "
        f"values; nothing was changed. To embed its photos again: `clipforge index remove "
        f"{victim.id}`"
    ), err


def _tags(library: Library) -> dict[int, list[tuple[str, float]]]:
    ids = [r.id for r in library.list_images()]
    return library.store.tags_for_images(library.encoder.fingerprint, ids)


def test_tag_stopped_halfway_leaves_the_old_tags_and_a_rerun_matches_an_uninterrupted_one(
    tagged, tiny_encoder, monkeypatch
):
    """`tag` committed its new vocabulary (old tags cleared) first and then each chunk of photos: stopped after the
    first chunk (Ctrl-C; kill -9 alike), the library said it was tagged 'car, tree' while half its photos had no
    tag at all - a tag filter skipped them, and no later add tagged them (they were not new). Now the run is one
    transaction: stopped, the library is tagged as before; run again, it is tagged as by one uninterrupted run."""
    lib, _, fingerprint = tagged
    from clipforge.library import tagging

    with Library(lib, tiny_encoder) as library:
        before_tags, before_vocabulary = _tags(library), tagging.tag_vocabulary(library.store, fingerprint)
        assert len(before_tags) == 4
        real, calls = tagging.scored_top_k, []

        def stopped(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(tagging, "scored_top_k", stopped)
        with pytest.raises(KeyboardInterrupt):
            tag_library(library.store, library.encoder, "car, tree", top_k=2, progress=False, chunk=2)
        assert len(calls) == 2
        assert tagging.tag_vocabulary(library.store, fingerprint) == before_vocabulary
        assert _tags(library) == before_tags
        monkeypatch.setattr(tagging, "scored_top_k", real)
        tag_library(library.store, library.encoder, "car, tree", top_k=2, progress=False, chunk=2)
        rerun = _tags(library)
    with Library(tmp_copy := lib.parent / "lib2", tiny_encoder) as other:  # the same photos, tagged in one go
        other.add(lib.parent / "photos", workers=0, progress=False)
        other.classify("car, tree", top_k=2, progress=False)
        once = _tags(other)
    assert tmp_copy.is_dir() and len(rerun) == len(once) == 4
    by_path = {
        library_path: tags
        for library_path, tags in zip(_paths(lib), (rerun[i] for i in sorted(rerun)), strict=True)
    }
    for path, tags in zip(_paths(tmp_copy), (once[i] for i in sorted(once)), strict=True):
        assert [label for label, _ in by_path[path]] == [label for label, _ in tags]
        np.testing.assert_allclose([s for _, s in by_path[path]], [s for _, s in tags], atol=1e-5)


def _paths(lib) -> list[str]:
    with Library(lib) as library:
        return [r.path for r in library.list_images()]


def test_tag_scores_without_the_write_lock_and_tags_a_photo_committed_meanwhile(
    tagged, tiny_encoder, monkeypatch
):
    """`tag` scored every photo inside its one write transaction: SQLite's write lock was held for the whole run
    (25 s for 150,000 photos and 1,000 labels), so an upload in a server process waited that long, or failed with
    "database is locked" past its 60 s busy timeout. Now the scores are computed first and only written under the
    lock; a photo another process commits while they are computed is scored under the lock and tagged too."""
    import sqlite3

    from clipforge.library import tagging
    from clipforge.library.transaction import Transaction

    lib, db, fingerprint = tagged
    with Library(lib, tiny_encoder) as library:
        vector = next(library.store.iter_embeddings(fingerprint))[1][0]
        real, calls = tagging.scored_top_k, []

        def upload_meanwhile(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:  # another process commits a photo, without waiting (timeout 0)
                other = sqlite3.connect(db, timeout=0, isolation_level=None)
                try:
                    other.execute("BEGIN IMMEDIATE")  # "database is locked" while tag held the write lock
                    tx = Transaction(other)
                    tx.upsert_image(str(lib.parent / "upload.png"), "f" * 64, 1, 1, 8, 8, "ok", None)
                    tx.insert_embedding("f" * 64, fingerprint, vector)
                    other.execute("COMMIT")
                finally:
                    other.close()
            return real(*args, **kwargs)

        monkeypatch.setattr(tagging, "scored_top_k", upload_meanwhile)
        report = tag_library(library.store, library.encoder, "car, tree", top_k=2, progress=False, chunk=2)
        # two chunks of the 4 photos, then (under the lock) the photo committed meanwhile
        assert len(calls) == 3
        assert report.images == 5 and library.store.untagged_images(fingerprint) == []
        tags = _tags(library)
        assert len(tags) == 5 and all(len(t) == 2 for t in tags.values())
        assert {label for t in tags.values() for label, _ in t} <= {"car", "tree"}


def test_drop_space_killed_at_its_worst_moment_leaves_no_index_file_behind(
    tmp_path, images_factory, monkeypatch, capsys
):
    """`index drop-space` committed its deletions and then removed the space's index file: killed in between, the
    file stayed for good (the space was gone, so a second drop-space could not name it: "no single model space").
    Now the derived file goes first; stopped there, the space is intact and the command simply runs again."""
    import pathlib

    images_factory(tmp_path / "photos", 3)
    lib = ["--library", str(tmp_path / "lib"), "-q"]
    assert (
        main(["index", "add", str(tmp_path / "photos"), "--model", "test-vit-tiny", "--workers", "0", *lib])
        == 0
    )
    assert main(["index", "add", "--model", "test-rn-tiny", "--workers", "0", *lib]) == 0
    assert main(["search", "red", "--model", "test-rn-tiny", *lib]) == 0
    with Library(tmp_path / "lib") as library:
        second = next(s for s in library.spaces() if not s["default"])
        index_file = library.paths.index_file(second["fingerprint"])
    assert index_file.is_file()
    real_unlink = pathlib.Path.unlink

    def killed(self, *args, **kwargs):
        if self.suffix == ".faiss":
            raise KeyboardInterrupt  # the kill lands on the index file's removal
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "unlink", killed)
    assert main(["index", "drop-space", "test-rn-tiny", *lib[:2]]) == 130
    monkeypatch.setattr(pathlib.Path, "unlink", real_unlink)
    capsys.readouterr()
    with Library(tmp_path / "lib") as library:
        if any(s["fingerprint"] == second["fingerprint"] for s in library.spaces()):
            assert main(["index", "drop-space", "test-rn-tiny", *lib[:2]]) == 0  # the command, run again
        assert [s["name"] for s in library.spaces()] == ["test-vit-tiny"]
    assert not index_file.exists(), "the dropped space's index file was left behind"
    assert main(["search", "red", "--model", "test-rn-tiny", *lib]) == 2
    assert "index add --model test-rn-tiny" in capsys.readouterr().err


def test_a_tag_score_edited_into_text_is_fixed_by_the_command_the_line_names(tagged, capsys):
    """The line once ended with two remedies, the second "restore that file from a backup, or ... index the
    photos again": for a tag score, `clipforge tag` rewrites every tag in place, and the line says only that."""
    lib, db, _ = tagged
    _edit(lib, "UPDATE tags SET score = 'x'")
    err = _one_line(capsys, "search", "a cat", "--library", str(lib), "--tag", "cat")
    assert err == (
        f"error: library database {db} is damaged (a tag of image 1 has the score 'x', not a number); nothing in "
        'the library was changed: tag the library again with `clipforge tag --labels "cat, dog, car"` (your '
        "labels)\n"
    )
    assert main(["tag", "--labels", "cat, dog", "--library", str(lib), "-q"]) == 0
    capsys.readouterr()
    assert main(["search", "a cat", "--library", str(lib), "--tag", "cat", "--top-k", "9", "--paths"]) == 0
    assert capsys.readouterr().out.strip()
