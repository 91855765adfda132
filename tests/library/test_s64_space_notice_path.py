"""`index add FOLDER --model M` on a library whose default is another model (zh-CN.md §4: `index add 照片 --model
另一个模型`): the photos the library already held are embedded into M's space, and the run says that space is not
the default, as `index add --model M` without a folder says. With a folder named it said nothing (audit 64)."""

from __future__ import annotations

import os

from clipforge.cli.main import main

QUIET = ["--workers", "0", "-q"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_second_model_over_a_named_folder_says_its_space_is_not_the_default(tmp_path, images_factory, capsys):
    photos = images_factory(tmp_path / "照片", 3, formats=("png",))
    lib = ["--library", str(tmp_path / "lib")]
    assert _run(capsys, "index", "add", str(tmp_path / "照片"), "--model", "test-vit-tiny", *lib, *QUIET)[0] == 0
    code, out, err = _run(capsys, "index", "add", str(tmp_path / "照片"), "--model", "test-rn-tiny", *lib, *QUIET)
    assert code == 0 and out.startswith("added 0 files, updated 0, relinked 0, skipped 3 unchanged, failed 0; "
                                        "embedded 3,"), out
    assert err == ("notice: filled model space test-rn-tiny with 3 images the library already held (indexed with "
                   "another model); it is not the library's default: plain `search` and `tag` use the default model "
                   "test-vit-tiny: pass `--model test-rn-tiny` to search or tag this space\n")
    for photo in photos:  # nothing left to fill, only files re-read (their time changed): no word
        os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    code, out, err = _run(capsys, "index", "add", str(tmp_path / "照片"), "--model", "test-rn-tiny", *lib, *QUIET)
    assert code == 0 and "embedded 0," in out and err == "", (out, err)


def test_one_new_photo_beside_held_ones_counts_only_the_held_as_filled(tmp_path, images_factory, capsys):
    images_factory(tmp_path / "photos", 2, formats=("png",))
    lib = ["--library", str(tmp_path / "lib")]
    assert _run(capsys, "index", "add", str(tmp_path / "photos"), "--model", "test-vit-tiny", *lib, *QUIET)[0] == 0
    images_factory(tmp_path / "photos" / "more", 1, formats=("jpg",))
    code, out, err = _run(capsys, "index", "add", str(tmp_path / "photos"), "--model", "test-rn-tiny", *lib, *QUIET)
    assert code == 0 and out.startswith("added 1 file, updated 0, relinked 0, skipped 2 unchanged"), out
    assert err.startswith("notice: filled model space test-rn-tiny with 2 images the library already held"), err
