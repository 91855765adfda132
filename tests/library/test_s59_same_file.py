"""One file reached by two names is not a copy (audit 59, collector finding 2). `index add Pics` (a link to
`real`) then `search --in real/2024` indexed every photo again under its real path: `index stats` counted 188
photos for 94 files, and every result read "(+1 identical: .../real/...)" with the name in --json's
`duplicates`; someone deleting the identical copies deleted the only file. Names of one device and inode are
said as the same file (text, JSON, the add's summary) and not counted twice by `index stats`; real copies are
still copies, and `search --in real/2024` still finds its photos.
"""

from __future__ import annotations

import json
import os
import shutil

from clipforge.cli.main import main

QUIET = ["--workers", "0", "-q"]


def test_a_folder_reached_through_a_link_is_the_same_files_not_copies(tmp_path, images_factory, capsys) -> None:
    real = tmp_path / "real"
    photos = images_factory(real / "2024", 3, formats=("png",))
    os.symlink(real, tmp_path / "Pics")
    copy = tmp_path / "copy.png"
    shutil.copyfile(photos[0], copy)  # a real copy: other bytes on disk, the same content
    lib = ["--library", str(tmp_path / "lib")]
    linked = [str(tmp_path / "Pics" / "2024" / p.name) for p in photos]
    assert main(["index", "add", str(tmp_path / "Pics"), str(copy), *lib, *QUIET]) == 0
    capsys.readouterr()

    assert main(["search", "a photo", "--in", str(real / "2024"), "-k", "3", "--paths", *lib]) == 0
    out, err = capsys.readouterr()
    assert sorted(out.splitlines()) == sorted(map(str, photos))  # its photos, found under the name searched
    assert err.startswith(f"indexed {real / '2024'}: added 3 files, updated 0, relinked 0, skipped 0 unchanged, "
                          "failed 0; embedded 0, duplicates 0, 3 second names of files already indexed (the same "
                          "file reached through a link, not a copy) in "), err

    assert main(["index", "stats", *lib]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "images    4 indexed (+3 second names of these files, reached through a link: not copies), 0 failed, "
        "3 distinct by content")
    assert main(["index", "stats", "--json", *lib]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["images"]["ok"], stats["same_file_names"]) == (7, 3)

    assert main(["search", "--image", str(photos[1]), "-k", "1", *lib]) == 0
    assert capsys.readouterr().out == f"  1  1.0000  {linked[1]}  (same file also named: {photos[1]})\n"
    assert main(["search", "--image", str(photos[0]), "-k", "1", *lib]) == 0
    assert capsys.readouterr().out == (f"  1  1.0000  {linked[0]}  (+1 identical: {copy})  (same file also named: "
                                       f"{photos[0]})\n")
    assert main(["search", "--image", str(photos[0]), "-k", "1", "--json", *lib]) == 0
    hit = json.loads(capsys.readouterr().out)["results"][0]
    assert (hit["path"], hit["duplicates"], hit["same_file"]) == (linked[0], [str(copy)], [str(photos[0])])
    assert main(["search", "--image", str(photos[1]), "-k", "1", "--paths", *lib]) == 0
    assert capsys.readouterr() == (linked[1] + "\n", "")  # no "identical copies are not listed": there are none


def test_a_file_link_and_a_hard_link_are_the_same_file(tmp_path, images_factory, capsys) -> None:
    photo, = images_factory(tmp_path / "fmt", 1, formats=("bmp",))
    os.symlink(photo, tmp_path / "link_to_bmp.bmp")
    os.link(photo, tmp_path / "hard.bmp")
    lib = ["--library", str(tmp_path / "lib")]
    assert main(["index", "add", str(tmp_path), *lib, "--workers", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["added"], report["embedded"], report["duplicates"], report["same_file"]) == (3, 1, 0, 2)
    assert main(["search", "--image", str(photo), "-k", "1", "--json", *lib]) == 0
    hit = json.loads(capsys.readouterr().out)["results"][0]
    names = sorted([hit["path"], *hit["same_file"]])
    assert names == sorted(str(p) for p in (photo, tmp_path / "link_to_bmp.bmp", tmp_path / "hard.bmp"))
    assert hit["duplicates"] == []
