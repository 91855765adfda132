"""A stored vector holding NaN (or infinity) is damage named as a wrong-length one is (audit 57, finding 11): it was
accepted without a word, and its photo could no longer be found, not even by itself. The check rides on the one
read every vector goes through (`store_vectors.VectorReads._checked_vectors`)."""

from __future__ import annotations

import numpy as np
import pytest

from clipforge.cli.main import main
from clipforge.library import Library


@pytest.fixture()
def built(tmp_path, tiny_encoder, images_factory):
    photos = images_factory(tmp_path / "photos", 6)
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        library.search("a photo")
    return tmp_path / "lib", photos


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_vector_is_named_with_its_photos_and_the_fix(built, capsys, value) -> None:
    lib, photos = built
    with Library(lib) as library:
        victim = library.list_images()[2]
        embedding, dtype, blob = library.store.conn().execute(
            "SELECT id, dtype, vector FROM embeddings WHERE sha256 = ?", (victim.sha256,)).fetchone()
        vector = np.frombuffer(blob, dtype=np.float16 if dtype == "float16" else np.float32).copy()
        vector[3] = value
        library.store.conn().execute("UPDATE embeddings SET vector = ? WHERE id = ?", (vector.tobytes(), embedding))
        index_path = library.index_manager.index_path
    index_path.unlink()  # the next search builds the index from the stored vectors
    assert main(["search", "a cat", "--library", str(lib)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: library database {lib / 'library.sqlite3'} is damaged: vector {embedding} holds NaN or "
                   f"infinite values, not a unit vector; nothing was changed. To embed its photos again: "
                   f"`clipforge index remove {victim.id}`, then add those photos again\n")
    # the remedy works: search finds every photo again, the victim by itself first
    assert main(["index", "remove", str(victim.id), "--library", str(lib)]) == 0
    assert main(["index", "add", str(photos[0].parent), "--library", str(lib), "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    assert main(["search", "--image", victim.path, "--library", str(lib), "-k", "1", "--paths"]) == 0
    assert capsys.readouterr().out == f"{victim.path}\n"


def test_sound_vectors_read_as_before_whatever_their_dtype(tiny_encoder) -> None:
    """The one-buffer decoding of whole rows gives what the row-by-row one gave (float32, writable)."""
    from clipforge.library.store_vectors import VectorReads

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 8)).astype(np.float32)
    for dtype, kind in (("float32", np.float32), ("float16", np.float16)):
        rows = [(i, dtype, vectors[i].astype(kind).tobytes()) for i in range(5)]
        out = VectorReads._checked_vectors(None, "m", rows, 8)  # type: ignore[arg-type]
        assert out.dtype == np.float32 and out.flags.writeable
        np.testing.assert_array_equal(out, vectors.astype(kind).astype(np.float32))
