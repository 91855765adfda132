"""The `index`, `search`, `tag` and `embed` subcommands, driven through `clipforge.cli.main.main`."""

from __future__ import annotations

import argparse
import json

from clipforge.cli.main import build_parser, main


def test_index_search_tag_cycle(tmp_path, images_factory, bad_files_factory, capsys):
    photos = images_factory(tmp_path / "photos", 6)
    bad_files_factory(tmp_path / "photos", photos[0])
    lib = str(tmp_path / "lib")
    assert main(["index", "add", str(tmp_path / "photos"), "--library", lib, "--model", "test-vit-tiny",
                 "--workers", "0", "-q"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("added 6 files, updated 0,") and "failed 4:" in out and "; embedded 6, duplicates 0 in " in out
    assert "bomb.png: too many pixels" in err

    assert main(["search", "a dog on the beach", "--library", lib, "--top-k", "4", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 4 and {"id", "path", "score", "sha256"} <= set(results[0])
    # unquoted words are one text (it was "unrecognized arguments: dog on the beach")
    assert main(["search", "a", "dog", "on", "the", "beach", "--library", lib, "--top-k", "4", "--json"]) == 0
    unquoted = json.loads(capsys.readouterr().out)
    assert unquoted["query"] == "a dog on the beach" and unquoted["results"] == results

    assert main(["search", "--image", str(photos[2]), "--library", lib, "--top-k", "1"]) == 0
    assert capsys.readouterr().out.split()[1:3] == ["1.0000", str(photos[2])]
    assert main(["search", "a dog on the beach", "--library", lib, "-k", "2", "--json"]) == 0  # -k: --top-k
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2

    assert main(["tag", "--labels", "cat, dog,car", "--templates", "simple", "--library", lib, "--json"]) == 0
    tagged = json.loads(capsys.readouterr().out)
    assert tagged["images"] == 6 and tagged["labels"] == ["cat", "dog", "car"]
    label, count = next(iter(tagged["top1_counts"].items()))
    assert main(["search", "x", "--tag", label, "--library", lib, "--json", "--top-k", "50"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == count

    assert main(["index", "stats", "--library", lib, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["images"] == {"ok": 6, "failed": 4} and stats["model"]["name"] == "test-vit-tiny"
    assert main(["index", "stats", "--library", lib]) == 0
    out = capsys.readouterr().out
    assert "6 indexed, 4 failed" in out
    # a space holds one vector per distinct content (files of the same bytes share it): "N images" there
    # contradicted the line above it whenever two files were copies
    space = next(line for line in out.splitlines() if line.startswith("space "))
    assert space.endswith(f" {stats['distinct_contents']} vectors (default)"), space

    photos[5].unlink()  # still found until pruned: marked, and said once (a pipe of --paths got a name that fails)
    assert main(["search", "--image", str(photos[4]), "--library", lib, "--top-k", "6"]) == 0
    out, err = capsys.readouterr()
    assert f"  {photos[5]}  " in out and [line for line in out.splitlines() if line.endswith("  (missing)")] == [
        line for line in out.splitlines() if f"  {photos[5]}  " in line]
    assert err == ("notice: 1 of these photos is no longer on disk (marked 'missing'); `clipforge index prune` "
                   "forgets the library's photos whose files are gone\n")
    assert main(["index", "prune", "--library", lib]) == 0
    assert capsys.readouterr().out == "pruned 1 image whose files are gone\n"
    first_id = str(results[0]["id"])
    assert main(["index", "remove", first_id, "--library", lib]) == 0
    assert capsys.readouterr().out == "removed 1 image\n"
    assert main(["index", "rebuild", "--index", "ivf", "--library", lib]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kept an exact flat index of 4 vectors instead of ivf: 4 vectors are too few to train "
                          "IVF cells (it needs at least 156)") and out.count("\n") == 1
    assert main(["index", "rebuild", "--index", "ivf", "--library", lib, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "flat"
    assert main(["index", "rebuild", "--index", "flat", "--library", lib]) == 0
    assert capsys.readouterr().out.startswith("rebuilt the flat index of 4 vectors in ")
    # a folder this machine does not see (moved, unmounted) is not "missing": only a file gone from a folder that
    # is here; the embedded store's results say their folder is not found (s63; a Milvus store's do not)
    (tmp_path / "photos").rename(tmp_path / "elsewhere")
    assert main(["search", "a cat", "--library", lib, "--top-k", "3"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and "(missing)" not in out and "no longer on disk" not in err
    assert out.count("(folder not found)") == 3 and err.startswith("notice: 3 of these photos are in a folder not found")


def test_cli_errors_are_one_line(tmp_path, images_factory, capsys):
    images_factory(tmp_path / "photos", 2)
    lib = str(tmp_path / "lib")
    assert main(["search", "cat", "--library", lib]) == 2
    assert "no library database" in capsys.readouterr().err
    assert main(["index", "add", str(tmp_path / "nope"), "--library", lib, "--model", "test-vit-tiny"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["index", "add", str(tmp_path / "photos"), "--library", lib, "--model", "test-vit-tiny",
                 "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    assert main(["search", "cat", "--library", lib, "--model", "test-rn-tiny"]) == 2
    assert "was built with test-vit-tiny" in capsys.readouterr().err
    assert main(["search", '"cat" "dog"', "--library", lib]) == 2
    assert "expected + or - between terms" in capsys.readouterr().err
    assert main(["search", "--library", lib]) == 2


def test_embed_command(tmp_path, images_factory, capsys):
    images_factory(tmp_path / "photos", 3)
    assert main(["embed", str(tmp_path / "photos"), "--out", str(tmp_path / "out"), "--model", "test-vit-tiny",
                 "--float32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 3 and report["written"] == [0]
    assert (tmp_path / "out" / "img_emb" / "img_emb_0.npy").is_file()


def test_library_user_errors_are_one_line_with_nonzero_exit(tmp_path, images_factory, capsys):
    images_factory(tmp_path / "photos", 2)
    not_a_folder = tmp_path / "passwd"
    not_a_folder.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for command in (["search", "cat"], ["index", "stats"], ["index", "rebuild"], ["tag", "--labels", "a,b"],
                    ["index", "add", str(tmp_path / "photos"), "--model", "test-vit-tiny", "-q"]):
        assert main([*command, "--library", str(not_a_folder)]) == 2, command
        err = capsys.readouterr().err
        assert err == (f"error: library {not_a_folder} is a file, not a library folder: give --library a folder "
                       "(a new one is created by `clipforge index add`)\n"), command
    assert not_a_folder.read_text().startswith("root:")
    # a path through a file: it was "[Errno 20] Not a directory: '.../passwd/sub'"
    assert main(["index", "add", str(tmp_path / "photos"), "--model", "test-vit-tiny", "-q", "--library",
                 str(not_a_folder / "sub")]) == 2
    assert capsys.readouterr().err == (f"error: cannot make library folder {not_a_folder / 'sub'}: {not_a_folder} "
                                       "is a file, not a folder; give --library a folder path\n")

    lib = str(tmp_path / "lib")
    assert main(["index", "add", str(tmp_path / "photos"), "--library", lib, "--model", "test-vit-tiny",
                 "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    for bad in ("0", "-5"):
        assert main(["search", "cat", "--library", lib, "--top-k", bad]) == 2
        assert capsys.readouterr().err == f"error: --top-k must be at least 1 (the number of results to show), got {bad}\n"
        assert main(["tag", "--labels", "a,b", "--library", lib, "--top-k", bad]) == 2
        assert capsys.readouterr().err.startswith("error: --top-k must be at least 1")
    assert main(["index", "remove", "99999", "1", "--library", lib]) == 2
    assert capsys.readouterr().err == (f"error: library {lib} has no image with id 99999 (nothing removed; "
                                       "`clipforge index list` shows each file's id)\n")
    assert main(["index", "remove", str(tmp_path / "elsewhere.jpg"), "--library", lib]) == 2
    assert f"no image with {tmp_path / 'elsewhere.jpg'}" in capsys.readouterr().err
    assert main(["index", "stats", "--library", lib, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"]["ok"] == 2  # the failed remove removed nothing


def test_singular_and_plural_counts(tmp_path, images_factory, capsys):
    images_factory(tmp_path / "photos", 1)
    lib = str(tmp_path / "lib")
    assert main(["index", "add", str(tmp_path / "photos"), "--library", lib, "--model", "test-vit-tiny",
                 "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    assert main(["tag", "--labels", "cat,dog", "--templates", "simple", "--library", lib]) == 0
    assert capsys.readouterr().out.startswith("tagged 1 image with 2 labels in ")
    assert main(["tag", "--labels", "cat", "--templates", "simple", "--library", lib]) == 0
    assert capsys.readouterr().out.startswith("tagged 1 image with 1 label in ")
    assert main(["index", "rebuild", "--library", lib]) == 0
    assert capsys.readouterr().out.startswith("rebuilt the flat index of 1 vector in ")
    assert main(["index", "prune", "--library", lib]) == 0
    assert capsys.readouterr().out == "pruned 0 images whose files are gone\n"


def test_index_add_walks_sub_folders_like_embed(tmp_path, images_factory, capsys):
    images_factory(tmp_path / "photos", 2)
    images_factory(tmp_path / "photos" / "2024", 3, seed=7)
    lib = str(tmp_path / "lib")
    base = ["index", "add", str(tmp_path / "photos"), "--library", lib, "--model", "test-vit-tiny", "--workers", "0",
            "-q"]
    assert main([*base, "--no-recursive"]) == 0
    assert capsys.readouterr().out.startswith("added 2 ")
    assert main(base) == 0
    assert capsys.readouterr().out.startswith("added 3 ")
    assert main([*base, "--recursive"]) == 0  # the old spelling still works
    assert "skipped 5 unchanged" in capsys.readouterr().out
    # One option, spelled and defaulted the same in both commands.
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    index_add = next(a for a in sub.choices["index"]._actions if isinstance(a, argparse._SubParsersAction))
    options = [{o: a for a in p._actions for o in a.option_strings}["--recursive"]
               for p in (index_add.choices["add"], sub.choices["embed"])]
    assert [(o.option_strings, o.default, o.help) for o in options][0] == \
        [(o.option_strings, o.default, o.help) for o in options][1]


def test_json_output_shows_every_script_as_it_is(tmp_path, images_factory, capsys):
    """`search`, `index`, `tag` and `embed` printed "\\u4e00\\u53ea\\u732b" where `classify` printed 一只猫: every
    command's JSON now keeps text as it is; a file name whose bytes are not UTF-8 still prints (`json_text`
    keeps lone surrogates as \\udcXX escapes)."""
    import os

    from clipforge.cli.common import json_text

    folder = tmp_path / "照片"
    photos = images_factory(folder, 2)
    os.rename(photos[1], os.fsencode(folder) + b"/caf\xe9.png")  # Latin-1 bytes: not UTF-8
    lib = str(tmp_path / "lib")
    assert main(["index", "add", str(folder), "--library", lib, "--model", "test-vit-tiny", "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    assert main(["tag", "--labels", "猫，狗", "--templates", "simple", "--library", lib, "--json", "-q"]) == 0
    assert "猫" in capsys.readouterr().out
    assert main(["search", "一只猫", "--library", lib, "--json"]) == 0
    assert "照片" in capsys.readouterr().out
    for command in (["search", "一只猫"], ["index", "stats"], ["tag", "--list"]):
        assert main([*command, "--library", lib, "--json"]) == 0
        text = capsys.readouterr().out
        assert "\\u" not in text and json.loads(text), text
        assert command[0] == "index" or "猫" in text  # the tags, in the search hits and the list
    odd = os.fsdecode(b"caf\xe9.png")
    assert json_text({"path": odd}) == '{\n  "path": "caf\\udce9.png"\n}' and json.loads(json_text([odd])) == [odd]


def test_index_add_refusals_leave_no_library_and_an_empty_folder_says_so(tmp_path, images_factory, capsys):
    """A mistyped path or --model still created an empty library.sqlite3 in a new --library folder; a folder
    without photos added nothing and said nothing about why; `search --in FILE` said "no such folder"."""
    lib = tmp_path / "new-lib"
    assert main(["index", "add", str(tmp_path / "no-such-folder"), "--library", str(lib), "--model", "test-vit-tiny"]) == 2
    assert "no such file or folder" in capsys.readouterr().err and not lib.exists()
    photos = images_factory(tmp_path / "photos", 1)
    assert main(["index", "add", str(tmp_path / "photos"), "--library", str(lib), "--model", "test-vit-tinyy"]) == 2
    assert "Did you mean test-vit-tiny?" in capsys.readouterr().err and not lib.exists()
    (tmp_path / "empty").mkdir()
    assert main(["index", "add", str(tmp_path / "empty"), "--library", str(lib), "--model", "test-vit-tiny"]) == 0
    assert "notice: no image files in" in capsys.readouterr().err
    assert main(["index", "add", str(tmp_path / "photos"), "--library", str(lib), "-q"]) == 0
    assert main(["index", "add", str(tmp_path / "photos"), "--library", str(lib), "-q"]) == 0
    assert "notice" not in capsys.readouterr().err  # unchanged photos are not "no image files"
    assert main(["search", "a photo", "--in", str(photos[0]), "--library", str(lib)]) == 2
    assert "is a file, not a folder (to find photos like it: --image" in capsys.readouterr().err


def test_a_refused_model_takes_back_the_parent_folders_its_library_path_made(tmp_path, images_factory, capsys):
    """`--library new/parents/lib` with a mistyped --model left `new/parents/` behind (only the library folder
    itself was removed): every folder the start made is taken back, and a folder that was there stays."""
    images_factory(tmp_path / "photos", 1)
    lib = tmp_path / "new" / "parents" / "lib"
    assert main(["index", "add", str(tmp_path / "photos"), "--library", str(lib), "--model", "test-vit-tinyy"]) == 2
    capsys.readouterr()
    assert not (tmp_path / "new").exists() and (tmp_path / "photos").is_dir()
