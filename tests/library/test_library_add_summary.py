"""`index add`'s summary line says which counts mean what.

"added 0 (200 embedded, 0 duplicates), updated 200": the embeddings were of the 200 updated files, but the line
put them inside "added 0". Files are counted once each, by what happened to them; the embeddings after, as work
for added and updated files alike.
"""

from __future__ import annotations

from clipforge.library.indexer import AddReport


def test_embeddings_of_updated_files_are_not_counted_under_added():
    line = AddReport(updated=200, embedded=200, seconds=2.0).summary_line()
    assert line == (
        "added 0 files, updated 200, relinked 0, skipped 0 unchanged, failed 0; embedded 200, duplicates 0 in 2.0s "
        "(100 files/s)"
    )
    one = AddReport(added=1, embedded=0, duplicates=1, unchanged=3, touched=1, seconds=1.0).summary_line()
    assert one.startswith("added 1 file, updated 0, relinked 0, skipped 4 unchanged, failed 0; embedded 0, duplicates 1 in ")
