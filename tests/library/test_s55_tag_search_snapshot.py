"""A search with a tag filter reads the filter and the hits' tags as one snapshot.

The filter (`image_ids_with_tags`) and the tags each hit shows (`tags_for_images`) were two reads: a `tag` run in
another process switching the vocabulary between them answered photos picked by the old labels showing only the
new ones (`--tags cat` listing photos tagged "car, tree"). The switch is a real `tag_library` run through a second
`Store` (its own connection), started from a hook between the two reads, never timed.
"""

from __future__ import annotations

from clipforge.library import Library
from clipforge.library import search as search_module
from clipforge.library.store import Store
from clipforge.library.tagging import tag_library

OLD, NEW = "cat, dog", ["car", "tree"]


def test_a_filtered_search_shows_the_tags_it_filtered_by(tmp_path, tiny_encoder, images_factory, monkeypatch):
    images_factory(tmp_path / "photos", 8)
    library = Library(tmp_path / "lib", tiny_encoder)
    try:
        library.add(tmp_path / "photos", workers=0, progress=False)
        library.classify(OLD, templates="simple", top_k=2, progress=False)
        real, switched = search_module.search_vector, []

        def switch_then_search(store, *args, **kwargs):
            other = Store(store.path)  # what another process's `clipforge tag --labels "car, tree"` does
            try:
                tag_library(other, tiny_encoder, NEW, "simple", top_k=2, progress=False)
            finally:
                other.close()
            switched.append(1)
            return real(store, *args, **kwargs)

        monkeypatch.setattr("clipforge.library.library_reads.search_vector", switch_then_search)
        hits = library.search("a photo", top_k=8, filter_tags="cat, dog")
        monkeypatch.undo()
        assert switched == [1] and hits
        assert {label for hit in hits for label, _ in hit.tags} <= {"cat", "dog"}, [hit.tags for hit in hits]
        assert not library.store.conn().in_transaction
        after = library.search("a photo", top_k=8, filter_tags="car, tree")
        assert after and {label for hit in after for label, _ in hit.tags} <= set(NEW)
    finally:
        library.close()
