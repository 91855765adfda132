"""SIGTERM stops a long command as Ctrl-C does (audit 58, finding 11).

`index add` under systemd or Kubernetes (whose stop signal is SIGTERM) died on the spot: status -15, its log ending
mid-progress-bar, with no word of what was kept. SIGTERM now goes through SIGINT's path: the command's cleanup, one
line ``terminated: ...`` saying that the committed batches are kept and a rerun resumes, and status 143 (SIGINT:
``interrupted: ...``, 130). The indexing subprocess sleeps after each committed batch (patched in here) so the
signal lands while work remains.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipforge.cli.main import main

_SLOW_INDEXER = """
import sys, time
from clipforge.library import indexer
write = indexer._BatchWriter.write
def slow_write(self, batch):
    write(self, batch)
    time.sleep(0.3)
indexer._BatchWriter.write = slow_write
from clipforge.cli.main import main
sys.exit(main({args!r}))
"""

PHOTOS = Path("/work/shared/data/imagenet_sample/images")
NOTE = "every batch indexed before it is kept, nothing lost; run the same command again to resume"


def _rows(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
    except sqlite3.Error:  # not created yet, or locked for a moment
        return 0


def _stop_mid_run(photos: Path, lib: Path, how: str, group: bool) -> tuple[int, str, int]:
    """(status, stderr, rows committed) of `index add` sent `how` once it committed a batch."""
    args = ["index", "add", str(photos), "--library", str(lib), "--model", "test-vit-tiny", "--batch-size", "2",
            "--workers", "1"]  # (a progress bar: the line must come after it)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_INDEXER.format(args=args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while _rows(lib / "library.sqlite3") < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"indexing ended (rc {proc.returncode}) or stalled before the signal: {proc.stderr.read()}")
            time.sleep(0.02)
        sent = getattr(signal, how)
        os.killpg(proc.pid, sent) if group else proc.send_signal(sent)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err, _rows(lib / "library.sqlite3")


@pytest.mark.parametrize(("how", "group", "word", "status"), [
    ("SIGTERM", False, "terminated", 143),  # `kill PID`, as the audit sent it
    ("SIGTERM", True, "terminated", 143),  # systemd's control group: the decoding worker gets it too
])
def test_a_stopped_index_add_says_so_in_one_line_and_resumes(tmp_path, capsys, how, group, word, status) -> None:
    if not PHOTOS.is_dir():
        pytest.skip(f"real photos {PHOTOS} are absent")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in sorted(os.listdir(PHOTOS))[:24]:
        shutil.copyfile(PHOTOS / name, photos / name)
    total = 24
    lib = tmp_path / "lib"
    code, err, committed = _stop_mid_run(photos, lib, how, group)
    assert code == status, err
    assert "Traceback" not in err, err
    assert err.replace("\r", "\n").strip().splitlines()[-1] == f"{word}: {NOTE}"
    assert 2 <= committed < total
    capsys.readouterr()
    assert main(["index", "add", str(photos), "--library", str(lib), "--workers", "0", "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"added {total - committed} files,") and f"skipped {committed} unchanged" in out, out


def test_ctrl_c_says_the_same_with_its_own_word(tmp_path, capsys, monkeypatch) -> None:
    """SIGINT's path, which SIGTERM now shares: `interrupted: ...` and 130 (it said only `interrupted`)."""
    from clipforge.cli import index

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(index, "run_add", interrupted)
    (tmp_path / "photos").mkdir()
    assert main(["index", "add", str(tmp_path / "photos"), "--library", str(tmp_path / "lib")]) == 130
    assert capsys.readouterr().err == f"interrupted: {NOTE}\n"


def test_sigterm_handling_ends_with_the_command(capsys) -> None:
    """The handler is the command's: after `main` returns, SIGTERM is as before (a test process, a caller's own)."""
    before = signal.getsignal(signal.SIGTERM)
    assert main(["models", "--json"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
