"""Every writer takes the library lock; no image is ever "ok" without a vector (issue 21, item 9).

`index remove`, or `prune` after a move, run while `index add` was between batches, deleted the
vector of bytes the add was about to write a row for (the add had planned "already embedded");
the row landed "ok" with no vector: search could not find it and `stats` said fresh. The other
writer is a second `Library` on the same folder, as another process would be; the library lock
excludes the threads of one process as it excludes processes.
"""

from __future__ import annotations

import os
import shutil
import threading
from contextlib import contextmanager

import pytest

from clipforge.cli.main import main
from clipforge.library import Library


def _during_add(library: Library, action) -> dict:
    """Run `action` in another thread right after the add's first commit that wrote images, and give it
    0.5 s to finish while the add waits (it does finish, unless a lock makes it wait for the add)."""
    real = library.store.transaction
    state: dict = {}

    @contextmanager
    def transaction():
        with real() as tx:
            yield tx
        if "thread" not in state and library.store.status_counts()["ok"] > 4:
            state["thread"] = threading.Thread(target=lambda: state.setdefault("result", action()))
            state["thread"].start()
            state["thread"].join(timeout=0.5)
            state["finished_during_add"] = not state["thread"].is_alive()

    library.store.transaction = transaction  # type: ignore[method-assign]
    return state


@pytest.mark.parametrize("writer", ["remove", "prune"])
def test_remove_or_prune_during_add_waits_and_no_image_lacks_a_vector(tmp_path, tiny_encoder, images_factory,
                                                                      writer, recwarn):
    photos = images_factory(tmp_path / "photos", 4)
    lib = tmp_path / "lib"
    with Library(lib, tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
    images_factory(tmp_path / "new", 6, seed=1)
    last = tmp_path / "new" / "zz_last.png"  # the same bytes as photos[0], written in the add's last batch
    if writer == "remove":
        shutil.copy2(photos[0], last)
    else:
        os.rename(photos[0], last)  # a move: prune forgets the old path, the add relinks it
    other = Library(lib)
    with Library(lib, tiny_encoder) as library:
        state = _during_add(library, (lambda: other.remove(photos[0])) if writer == "remove" else other.prune)
        library.add(tmp_path / "new", workers=0, progress=False, batch_size=2)
        state["thread"].join()
        assert state["finished_during_add"] is False  # it waited for the add's lock
        assert library.store.images_missing_vectors(library.encoder.fingerprint) == []
        hit = library.search(image=last, top_k=1)[0]
        assert hit.path == str(last) and hit.score == pytest.approx(1.0, abs=1e-5)
        paths = {r.path for r in library.list_images()}
        assert str(last) in paths and str(photos[0]) not in paths
        assert state["result"] == (1 if writer == "remove" else 0)  # a moved file is relinked, not pruned
    assert not [w for w in recwarn if "re-embedded" in str(w.message)]  # prevented, not repaired afterwards
    other.close()


def test_stats_reports_and_add_repairs_images_without_vectors(tmp_path, tiny_encoder, images_factory, capsys):
    """A library damaged by the old race (or any writer that bypassed the lock): detected, then repaired."""
    photos = images_factory(tmp_path / "photos", 5)
    lib = tmp_path / "lib"
    with Library(lib, tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        fingerprint = library.encoder.fingerprint
        assert library.store.vectors_checked(fingerprint)  # the add checked: later adds skip the scan
        lost = library.store.image_by_path(str(photos[2]))
        with library.store.transaction() as tx:  # what the race did: a deletion (which counts as one)
            tx.execute("DELETE FROM embeddings WHERE sha256 = ?", (lost.sha256,))
            tx.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'removals'")
        assert not library.store.vectors_checked(fingerprint)  # a deletion: the next add scans again
        assert [r.id for r in library.store.images_missing_vectors(fingerprint)] == [lost.id]
        assert library.stats(verify=True)["missing_vectors"] == 1
    assert main(["index", "stats", "--library", str(lib)]) == 0
    out = capsys.readouterr().out
    assert "vectors   1 indexed image has no vector (it cannot be found by search): run `clipforge index add`" in out
    assert main(["index", "add", str(tmp_path / "photos" / "img000.png"), "--library", str(lib), "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == "warning: re-embedded 1 image whose vector was missing\n"
    with Library(lib, tiny_encoder) as library:
        assert library.store.images_missing_vectors(fingerprint) == []
        assert library.search(image=photos[2], top_k=1)[0].id == lost.id  # same record, found again
        assert library.stats(verify=True)["missing_vectors"] == 0
