"""Review of `clipforge tag`'s short writes (session 54): what the readers of a dropped space see.

`tag` now writes a space's tags under `<fingerprint>#<n>` and names that key in the meta row `tag_rows:<fingerprint>`.
`index drop-space` still deleted only the rows under the bare fingerprint and the vocabulary: the `#<n>` rows and
the key stayed, and once the space had a vocabulary again (`index copy` into the library writes one; so does a
`tag` run's switch) the dropped space's old tags answered its searches and counts.
"""

from __future__ import annotations

import json

from clipforge.cli.main import main
from clipforge.library import Library
from clipforge.library.transaction import TAG_ROWS_KEY, VOCABULARY_KEY


def test_drop_space_forgets_the_tags_of_every_key_and_they_never_come_back(tmp_path, images_factory, capsys):
    images_factory(tmp_path / "photos", 3)
    lib = ["--library", str(tmp_path / "lib"), "-q"]
    add = ["index", "add", "--model", "test-rn-tiny", "--workers", "0", *lib]
    assert (
        main(["index", "add", str(tmp_path / "photos"), "--model", "test-vit-tiny", "--workers", "0", *lib])
        == 0
    )
    assert main(add) == 0
    assert (
        main(
            [
                "tag",
                "--labels",
                "cat,dog",
                "--templates",
                "simple",
                "-k",
                "2",
                "--model",
                "test-rn-tiny",
                *lib,
            ]
        )
        == 0
    )
    with Library(tmp_path / "lib") as library:
        fingerprint = next(s["fingerprint"] for s in library.spaces() if not s["default"])
        assert sum(library.store.tag_counts(fingerprint).values()) == 3
    assert main(["index", "drop-space", "test-rn-tiny", *lib[:2]]) == 0
    capsys.readouterr()
    with Library(tmp_path / "lib") as library:
        conn = library.store.conn()
        left = conn.execute("SELECT COUNT(*) FROM tags WHERE model LIKE ?", (fingerprint + "%",)).fetchone()[
            0
        ]
        assert left == 0, "the dropped space's tag rows were left"
        assert library.store.get_meta(TAG_ROWS_KEY + fingerprint) is None
    assert main(add) == 0  # the space again, and a vocabulary for it (what `index copy` into it records)
    with Library(tmp_path / "lib") as library, library.store.transaction() as tx:
        tx.set_meta(
            VOCABULARY_KEY + fingerprint, json.dumps({"labels": ["car"], "templates": "simple", "top_k": 1})
        )
    with Library(tmp_path / "lib") as library:
        assert library.store.tag_counts(fingerprint) == {}, "the dropped space's old tags answered again"
        assert [len(x) for x in library.store.untagged_images(fingerprint)] == [2, 2, 2]
