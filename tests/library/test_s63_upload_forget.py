"""The server's cleanup of a failed upload, and the uploads' turn, across processes (review 63, revconc #1, #2).

A failed upload's files were removed by glob outside any cross-process lock: another server storing the same bytes
meanwhile reused the file, answered 201, and lost it (its record then pointed at nothing). And a holder of the
uploads' turn that was suspended made a server's uploads (and searches queued behind them) wait until it resumed.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from clipforge.library import Library
from clipforge.library.dbfile import LibraryBusyError
from clipforge.library.media import store_upload

_HOLDER = r"""
import sys
from pathlib import Path

from clipforge.library.lock import library_lock

sys.argv = ["clipforge", "serve"]  # the command words the lock records
with library_lock(Path(__import__("os").environ["LOCK"])):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_failed_uploads_cleanup_spares_bytes_a_record_holds(tmp_path, images_factory, tiny_encoder) -> None:
    from clipforge.server import create_app

    kept, stray = (p.read_bytes() for p in images_factory(tmp_path / "up", 2, formats=("png",)))
    with Library(tmp_path / "lib", tiny_encoder) as library:
        record = library.add_bytes(kept, filename="kept.png")  # another server's upload of these bytes, recorded
        service = create_app(library, ui=False).state.service
        service._forget_partial_upload(hashlib.sha256(kept).hexdigest())  # this server's write of them failed
        assert Path(record.path).read_bytes() == kept  # in use: not removed
        left = store_upload(library.paths, stray, filename="stray.png")  # stored, never recorded (a failed add)
        service._forget_partial_upload(hashlib.sha256(stray).hexdigest())
        assert not left.exists() and not left.parent.exists()  # a leftover no record holds still goes


@pytest.mark.timeout(60)  # the old code waited for ever
def test_the_uploads_turn_is_waited_for_at_most_the_busy_timeout(tmp_path, images_factory, monkeypatch) -> None:
    import os

    from clipforge.library.paths import LibraryPaths

    monkeypatch.setattr("clipforge.library.dbfile.BUSY_TIMEOUT_S", 0.3)
    paths = LibraryPaths(tmp_path / "lib")
    paths.uploads_dir.mkdir(parents=True)
    data = images_factory(tmp_path / "up", 1, formats=("png",))[0].read_bytes()
    child = subprocess.Popen([sys.executable, "-c", _HOLDER], env={**os.environ, "LOCK": str(paths.root / "uploads.lock")},
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n", child.stderr.read()
        with pytest.raises(LibraryBusyError) as caught:
            store_upload(paths, data, filename="x.png")
        assert str(caught.value) == (f"library {paths.root} is busy: another process (pid {child.pid}: clipforge "
                                     "serve) has held its uploads for 0.3 s; the image was not stored; try again when "
                                     "it finishes")
    finally:
        child.kill()
        child.wait()
    assert store_upload(paths, data, filename="x.png").read_bytes() == data  # the holder gone: stored
