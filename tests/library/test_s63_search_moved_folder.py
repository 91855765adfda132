"""A photo folder renamed after indexing: `search` says its results' folder is not found (stop 63's filesystem
audit: `--paths` piped the old names, which did not open, and nothing was said), and `index add` of the new name
finds them again without embedding them again."""

from __future__ import annotations

import os

from clipforge.cli.main import main

QUIET = ["--workers", "0", "-q"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_renamed_folder_is_said_and_found_again(tmp_path, images_factory, capsys) -> None:
    images_factory(tmp_path / "photos", 3, formats=("png",))
    lib = ["--library", str(tmp_path / "lib"), "--model", "test-vit-tiny"]
    assert main(["index", "add", str(tmp_path / "photos"), *lib, *QUIET]) == 0
    os.rename(tmp_path / "photos", tmp_path / "moved")
    capsys.readouterr()
    code, out, err = _run(capsys, "search", "cat", *lib, "-k", "2")
    assert code == 0 and out.count("(folder not found)") == 2, out
    assert err == (f"notice: 2 of these photos are in a folder not found on this machine ({tmp_path / 'photos'}): "
                   "moved, renamed or deleted, or on a drive not mounted; `clipforge index add NEW/FOLDER` finds a "
                   "moved folder's photos again without embedding them again\n")
    code, out, err = _run(capsys, "search", "cat", *lib, "-k", "2", "--paths")
    assert code == 0 and out.count(str(tmp_path / "photos")) == 2 and "not found on this machine" in err
    assert _run(capsys, "search", "cat", *lib, "-k", "2", "-q")[2] == ""  # --quiet: nothing said

    code, out, _ = _run(capsys, "index", "add", str(tmp_path / "moved"), *lib, "--workers", "0")
    assert code == 0 and out.startswith("added 0 files, updated 0, relinked 3,") and "embedded 0," in out, out
    code, out, err = _run(capsys, "search", "cat", *lib, "-k", "2")
    assert code == 0 and "not found" not in out + err and out.count(str(tmp_path / "moved")) == 2, (out, err)


def test_a_deleted_photo_is_still_missing_not_a_folder_not_found(tmp_path, images_factory, capsys) -> None:
    photos = images_factory(tmp_path / "photos", 2, formats=("png",))
    lib = ["--library", str(tmp_path / "lib"), "--model", "test-vit-tiny"]
    assert main(["index", "add", str(tmp_path / "photos"), *lib, *QUIET]) == 0
    os.remove(photos[0])
    capsys.readouterr()
    code, out, err = _run(capsys, "search", "cat", *lib, "-k", "2")
    assert code == 0 and out.count("(missing)") == 1 and "folder not found" not in out + err, (out, err)


def test_a_milvus_servers_photos_elsewhere_are_not_said_but_milvus_lites_are(tmp_path, images_factory, capsys,
                                                                            monkeypatch) -> None:
    """A Milvus server's photos live on the machines that indexed them (review 63): a search from a machine that does
    not see their folders marked every row and said so at every search, with advice to relink (or, for a file gone
    from a folder that is here, to prune other machines' photos). milvus-lite is a file of this machine: said."""
    import contextlib
    import dataclasses

    import clipforge.cli.search as search_cli

    photos = images_factory(tmp_path / "photos", 3, formats=("png",))
    lib = ["--store", f"milvus-lite:{tmp_path / 'm.db'}", "--library", str(tmp_path / "lib"), "--model", "test-vit-tiny"]
    assert main(["index", "add", str(tmp_path / "photos"), *lib, *QUIET]) == 0
    os.remove(photos[0])
    capsys.readouterr()
    code, out, err = _run(capsys, "search", "cat", *lib, "-k", "3")
    assert code == 0 and out.count("(missing)") == 1 and "no longer on disk" in err, (out, err)
    os.rename(tmp_path / "photos", tmp_path / "elsewhere")
    code, out, err = _run(capsys, "search", "cat", *lib, "-k", "3")
    assert code == 0 and out.count("(folder not found)") == 3 and "not found on this machine" in err, (out, err)

    opened = search_cli.open_library

    @contextlib.contextmanager
    def as_a_server(*args, **kwargs):  # the same store, taken for a Milvus server's (spec.kind "milvus")
        with opened(*args, **kwargs) as library:
            library.spec = dataclasses.replace(library.spec, kind="milvus")
            yield library

    monkeypatch.setattr(search_cli, "open_library", as_a_server)
    code, out, err = _run(capsys, "search", "cat", *lib, "-k", "3")
    assert code == 0 and out.count(str(tmp_path / "photos")) == 3, out
    assert "not found" not in out + err and "missing" not in out + err, (out, err)
