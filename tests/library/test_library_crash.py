"""`kill -9` in the middle of `clipforge index add`, then a re-run: nothing lost twice, nothing doubled.

The indexing subprocess sleeps a little after each committed batch (patched in by the test)
so the test can reliably kill it while work remains, and checks that it really did.
"""

from __future__ import annotations

import hashlib
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
from clipforge.library import Library
from clipforge.library.store import Store

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _row_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:  # not created yet, or locked for a moment
        return 0


# `clipforge index add`, slowed down after each committed batch so the kill lands mid-run (the product
# has no test hook: the slowdown is patched in here).
_SLOW_INDEXER = """
import sys, time
from clipforge.library import indexer
write = indexer._BatchWriter.write
def slow_write(self, batch):
    write(self, batch)
    time.sleep({delay})
indexer._BatchWriter.write = slow_write
from clipforge.cli.main import main
sys.exit(main({args!r}))
"""


def _start_and_kill(photos: Path, lib: Path, batch_size: int, kill_after_rows: int, delay: float,
                    workers: int = 1) -> int:
    """Run `clipforge index add` in a subprocess and SIGKILL its process group mid-run; rows seen."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = ["index", "add", str(photos), "--library", str(lib), "--model", "test-vit-tiny",
            "--batch-size", str(batch_size), "--workers", str(workers), "-q"]
    cmd = [sys.executable, "-c", _SLOW_INDEXER.format(delay=delay, args=args)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    db = lib / "library.sqlite3"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace")
                pytest.fail(f"indexing finished (rc {proc.returncode}) before it could be killed:\n{out}")
            if _row_count(db) >= kill_after_rows:
                os.killpg(proc.pid, signal.SIGKILL)  # the indexer and its DataLoader workers
                break
            time.sleep(0.02)
        else:
            pytest.fail("indexing made no progress in 120 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return _row_count(db)


def _check_complete(lib: Path, good: list[Path], bad: dict[str, str]) -> None:
    library = Library(lib)
    rows = library.store.list_images(status=None)
    by_path: dict[str, list] = {}
    for row in rows:
        by_path.setdefault(row.path, []).append(row)
    assert len(rows) == len(good) + len(bad)
    for path in good:
        records = by_path[os.path.normpath(str(path))]
        assert len(records) == 1 and records[0].status == "ok", records
        assert records[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    for name, word in bad.items():
        (record,) = by_path[str(lib.parent / "photos" / name)]
        assert record.status == "failed" and word in record.error, record
    distinct = {hashlib.sha256(p.read_bytes()).hexdigest() for p in good}
    assert library.store.embedded_shas(library.encoder.fingerprint) == distinct
    assert library.store.integrity_ok()
    # Every stored vector is searchable and finds its own image first.
    probe = good[len(good) // 2]
    assert library.search(image=probe, top_k=1)[0].sha256 == hashlib.sha256(probe.read_bytes()).hexdigest()
    library.close()


def test_kill_9_mid_run_then_resume(tmp_path, images_factory, bad_files_factory):
    photos = tmp_path / "photos"
    good = images_factory(photos, 56, formats=("png", "jpg", "webp"))
    for i in (3, 17):
        shutil.copyfile(good[i], photos / f"dup{i}.png")
        good.append(photos / f"dup{i}.png")
    bad = bad_files_factory(photos, good[1])
    lib = tmp_path / "lib"
    total = len(good) + len(bad)

    seen = _start_and_kill(photos, lib, batch_size=4, kill_after_rows=12, delay=0.25)
    assert 12 <= seen < total, "the run must be interrupted while work remains"
    store = Store(lib / "library.sqlite3")
    assert store.integrity_ok()
    # Committed batches are complete: every 'ok' row has its vector.
    ok_shas = {r.sha256 for r in store.list_images(status="ok")}
    assert ok_shas and ok_shas <= store.embedded_shas(store.get_meta("model_fingerprint"))
    store.close()

    assert main(["index", "add", str(photos), "--library", str(lib), "--batch-size", "8",
                 "--workers", "0", "-q"]) == 0
    _check_complete(lib, good, bad)


@pytest.mark.slow
@pytest.mark.data
def test_kill_9_on_real_imagenet_sample(tmp_path):
    source = SHARED_DATA / "imagenet_sample" / "images"
    if not source.is_dir():
        pytest.skip(f"real data {source} is absent")
    photos = tmp_path / "photos"
    photos.mkdir()
    good = []
    for image in sorted(source.iterdir()):
        link = photos / image.name
        link.symlink_to(image)  # no copy of the image data
        good.append(link)
    assert len(good) == 1000
    bad = {}
    for i, image in enumerate(sorted(source.iterdir())[:3]):
        data = image.read_bytes()
        (photos / f"corrupt_{i}.JPEG").write_bytes(data[: len(data) // 3])
        bad[f"corrupt_{i}.JPEG"] = "truncated"
    (photos / "zero.JPEG").write_bytes(b"")
    bad["zero.JPEG"] = "empty"
    (photos / "readme.JPEG").write_text("not a photo")
    bad["readme.JPEG"] = "not an image"
    lib = tmp_path / "lib"

    seen = _start_and_kill(photos, lib, batch_size=32, kill_after_rows=160, delay=0.05)
    assert 160 <= seen < len(good) + len(bad)
    assert main(["index", "add", str(photos), "--library", str(lib), "--batch-size", "64",
                 "--workers", "1", "-q"]) == 0
    _check_complete(lib, good, bad)
