"""A library folder that cannot be made is one line naming it, the OS's reason and how to choose another
(audit61 packager #4: `HOME=/proc/nohome clipforge index add photos` printed only
"error: [Errno 2] No such file or directory: '/proc/nohome'", naming neither the library nor --library)."""

from __future__ import annotations

import errno
import sys

import pytest

from clipforge.cli.main import main
from clipforge.library import Library
from clipforge.library.paths import LibraryPaths

# /proc refuses every mkdir (ENOENT), even to root, which a read-only folder would not.
needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's /proc")


@needs_proc
@pytest.mark.parametrize("variable, value, folder, blocker", [
    ("HOME", "/proc/nohome", "/proc/nohome/.local/share/clipforge/library", "/proc/nohome"),
    ("XDG_DATA_HOME", "/proc/xdg", "/proc/xdg/clipforge/library", "/proc/xdg"),
    ("CLIPFORGE_LIBRARY", "/proc/lib/here", "/proc/lib/here", "/proc/lib"),
])
def test_index_add_names_the_default_library_folder_and_how_to_choose_another(
        tmp_path, images_factory, capsys, monkeypatch, variable, value, folder, blocker):
    images_factory(tmp_path / "photos", 1)
    for name in ("CLIPFORGE_LIBRARY", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value)
    assert main(["index", "add", "--model", "test-vit-tiny", str(tmp_path / "photos"), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: cannot make library folder {folder} ({blocker}: No such file or directory): "
                            "choose another with --library PATH or $CLIPFORGE_LIBRARY\n")
    assert captured.out == ""


@needs_proc
def test_an_explicit_library_gets_the_same_line(tmp_path, images_factory, capsys):
    images_factory(tmp_path / "photos", 1)
    code = main(["index", "add", "--library", "/proc/cf/lib", "--model", "test-vit-tiny", str(tmp_path / "photos")])
    assert code == 2
    assert capsys.readouterr().err == ("error: cannot make library folder /proc/cf/lib (/proc/cf: No such file or "
                                       "directory): choose another with --library PATH or $CLIPFORGE_LIBRARY\n")


@needs_proc
def test_the_error_keeps_the_os_error_number_and_file(tiny_encoder):
    """Callers that sort OS errors by number (`dbfile.not_writable` turns EACCES into the read-only answer)
    still can."""
    with pytest.raises(OSError) as caught:
        Library("/proc/cf/lib", tiny_encoder)
    assert (caught.value.errno, caught.value.filename) == (errno.ENOENT, "/proc/cf")
    with pytest.raises(OSError) as again:
        LibraryPaths("/proc/cf/lib").ensure()
    assert str(again.value) == str(caught.value)


def test_a_file_in_the_way_still_names_the_file(tmp_path, capsys):
    (tmp_path / "libfile").write_text("x")
    with pytest.raises(NotADirectoryError) as caught:
        LibraryPaths(tmp_path / "libfile" / "sub").ensure()
    assert str(caught.value) == (f"cannot make library folder {tmp_path}/libfile/sub: {tmp_path}/libfile is a file, "
                                 "not a folder; give --library a folder path")
