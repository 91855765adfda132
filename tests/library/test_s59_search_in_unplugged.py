"""`search --in` a symlinked folder whose drive is unplugged (audit 59, collector finding 7) said "is a file, not a
folder (to find photos like it: --image ...)" and exit 2, with --no-index too, though its photos were still in the
library. It now says the link's target is not there; with --no-index it searches the photos indexed under it.
"""

from __future__ import annotations

import os

from clipforge.cli.main import main


def test_a_link_whose_target_is_gone_is_said_and_searched_without_indexing(tmp_path, images_factory,
                                                                          capsys) -> None:
    usb = tmp_path / "usb"
    photos = images_factory(usb, 2, formats=("png",))
    (tmp_path / "pics").mkdir()
    link = tmp_path / "pics" / "phone"
    os.symlink(usb, link)
    lib = ["--library", str(tmp_path / "lib")]
    assert main(["index", "add", str(tmp_path / "pics"), *lib, "--workers", "0", "-q"]) == 0
    os.rename(usb, tmp_path / "usb.unplugged")
    capsys.readouterr()
    gone = f"a link to {usb}, which is not there (a drive not mounted, or a folder moved?)"

    assert main(["search", "a photo", "--in", str(link), *lib]) == 2
    assert capsys.readouterr().err == f"error: --in {link}: {gone}; --no-index searches the photos indexed there\n"
    assert main(["search", "a photo", "--in", str(link), "--no-index", "--paths", *lib]) == 0
    out, err = capsys.readouterr()
    assert sorted(out.splitlines()) == sorted(str(link / p.name) for p in photos)
    assert err == (f"notice: --in {link}: {gone}; searched the photos indexed there (their files cannot be opened "
                   "now)\n")
    assert main(["search", "a photo", "--in", str(link), "--no-index", "-q", *lib]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2

    dangling = tmp_path / "pics" / "old"  # a link to nothing the library ever indexed: still an error
    os.symlink(tmp_path / "nowhere", dangling)
    assert main(["search", "a photo", "--in", str(dangling), "--no-index", *lib]) == 2
    assert capsys.readouterr().err == (f"error: --in {dangling}: a link to {tmp_path / 'nowhere'}, which is not "
                                       "there (a drive not mounted, or a folder moved?), and the library holds no "
                                       "photo indexed there\n")
    assert main(["search", "a photo", "--in", str(tmp_path / "typo"), *lib]) == 2  # as before: a typo
    assert capsys.readouterr().err == f"error: --in {tmp_path / 'typo'}: no such folder\n"
    assert main(["search", "a photo", "--in", str(photos[0].parent.parent / "pics"), "--in",
                 str(tmp_path / "lib" / "x"), "--no-index", *lib, "-q"]) == 0  # one folder there: no refusal
