"""audit 63 concurrency #3: an `embed` job holds its --out folder for its whole run.

A second `embed` on the same --out while one runs (a resume, another job, `--overwrite`) is refused at once,
before the model loads or anything in --out is touched, in one line naming the folder and the running job (its pid
and command line); the ranks of one job share the folder. The lock dies with its holder, `kill -9` included, so the
next run simply resumes. The holder here is a real `clipforge embed` in another process, stopped (not killed) right
after its first partition: the state `--overwrite` used to clear under a running job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.library.export import read_export
from clipforge.library.lock import LockHeld, hold_lock

LOCK_FILE = ".clipforge-embed.lock"  # in --out, beside job.json; no reader of the layout looks at it
TINY = ["--model", "test-vit-tiny", "--device", "cpu", "--shard-size", "2", "--workers", "0", "-q"]

_HOLDER = r"""
import sys
from pathlib import Path

import clipforge.library.export as export
from clipforge.cli.main import main

ready, argv = Path(sys.argv[1]), sys.argv[2:]
write = export._write_partition


def write_then_hold(*args, **kwargs):
    write(*args, **kwargs)
    ready.write_text("one partition written")
    sys.stdin.read()  # the run stays here, lock held, until the test kills it


export._write_partition = write_then_hold
sys.argv = ["clipforge", *argv]  # as the console script is called: the command line the lock records
sys.exit(main(argv))
"""

_PART_HOLDER = r"""
import sys
from pathlib import Path

from clipforge.library.lock import hold_lock

path, part = Path(sys.argv[1]), int(sys.argv[2])
with hold_lock(path, "the other process", part=part):
    print("held", flush=True)
    sys.stdin.read()
"""


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` with its bytes and mtime: what "untouched" means."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _start_holder(tmp_path: Path, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A real `clipforge embed argv` in another process, returned once it has written one partition and stopped."""
    ready = tmp_path / "holder-ready"
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(ready), *argv], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # a generous bound on a loaded machine; nothing is timed
    while not ready.exists():
        if child.poll() is not None:
            raise AssertionError(f"the holder ended early: {child.communicate()[1].decode()[-2000:]}")
        assert time.monotonic() < deadline, "the holder never wrote its first partition"
        time.sleep(0.05)
    return child


def _kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL


def _no_model(*args, **kwargs):
    raise AssertionError("a refused embed loaded the model")


def _plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}


def test_a_running_embed_holds_its_out_and_a_kill_9_frees_it(tmp_path, images_factory, capsys, monkeypatch):
    images_factory(tmp_path / "photos", 5)  # 3 partitions of 2
    images_factory(tmp_path / "other", 3, seed=1)
    out = tmp_path / "emb"
    argv = ["embed", str(tmp_path / "photos"), "--out", str(out), *TINY]
    child = _start_holder(tmp_path, argv, _plain_env())
    try:
        command = "clipforge embed"  # the command words only, as the library's lock records them
        before = _snapshot(out)
        said = (f"error: {out} is in use by a running embed job (pid {child.pid}: {command}): wait for it to end, "
                f"or use another --out\n")
        with monkeypatch.context() as patched:
            patched.setattr("clipforge.library.export.resolve_encoder", _no_model)
            for second in (argv, [*argv, "--overwrite"],  # a resume of the same job, or a replacement of it
                           ["embed", str(tmp_path / "other"), "--out", str(out), *TINY],  # another job
                           ["embed", str(tmp_path / "other"), "--out", str(out), *TINY, "--overwrite"]):
                assert main(second) == 2
                assert capsys.readouterr() == ("", said)
                assert _snapshot(out) == before  # nothing deleted, nothing added, the lock's record kept
        assert (out / LOCK_FILE).read_text() == f"{child.pid}\t{command}\n"  # who holds it, for the next comer
    finally:
        _kill(child)
    # The kernel dropped the dead holder's lock; its file, left behind, blocks nothing: the next run resumes the job.
    assert (out / LOCK_FILE).exists()
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("wrote 2 of 3 partitions (1 already done), 3 embeddings")
    assert main(argv) == 0  # and an ordinary resume of the finished job still works
    assert capsys.readouterr().out.startswith("wrote 0 of 3 partitions (3 already done)")
    vectors, rows = read_export(out)
    assert vectors.shape == (5, 32) and len({r["image_path"] for r in rows}) == 5
    # a run that ends removes the lock file: the folder holds the layout alone
    assert sorted(p.name for p in out.iterdir()) == ["img_emb", "job.json", "manifest.json", "metadata", "stats"]


def test_the_ranks_of_one_job_share_out_and_shut_out_every_other_run(tmp_path, images_factory, capsys, monkeypatch):
    images_factory(tmp_path / "photos", 5)  # partitions 0 and 2 for rank 0, partition 1 for rank 1
    out = tmp_path / "emb"
    argv = ["embed", str(tmp_path / "photos"), "--out", str(out), *TINY]
    child = _start_holder(tmp_path, argv, {**_plain_env(), "RANK": "0", "WORLD_SIZE": "2"})
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    try:
        said = (f"error: {out} is in use by a running embed job (pid {child.pid}: "
                f"clipforge embed): wait for it to end, or use another --out\n")
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        assert main(argv) == 0  # rank 1 of the same job runs beside rank 0
        assert capsys.readouterr().out.startswith("rank 1/2: wrote 1 of 3 partitions (0 already done)")
        monkeypatch.setenv("RANK", "0")
        assert main(argv) == 2  # a second rank 0
        assert capsys.readouterr() == ("", said)
        monkeypatch.delenv("RANK")
        monkeypatch.delenv("WORLD_SIZE")
        assert main([*argv, "--overwrite"]) == 2  # a one-process run, which would write every partition
        assert capsys.readouterr() == ("", said)
    finally:
        _kill(child)
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("wrote 1 of 3 partitions (2 already done), 1 embeddings")
    assert read_export(out)[0].shape == (5, 32)


def test_hold_lock_parts_and_whole(tmp_path):
    """`hold_lock` in one process: a whole-file holder excludes everything, parts exclude only the same part."""
    path = tmp_path / "x.lock"
    with hold_lock(path, "first"):
        with pytest.raises(LockHeld) as caught, hold_lock(path, "second"):
            pass
        assert (caught.value.pid, caught.value.record) == (os.getpid(), "first")
        with pytest.raises(LockHeld), hold_lock(path, "second", part=0):
            pass
    with hold_lock(path, "rank 0", part=0), hold_lock(path, "rank 1", part=1):
        with pytest.raises(LockHeld) as caught, hold_lock(path, "again", part=1):
            pass
        assert caught.value.record == "rank 1"
        with pytest.raises(LockHeld), hold_lock(path, "whole"):
            pass
        assert path.read_text() == f"{os.getpid()}\trank 0\n{os.getpid()}\trank 1\n"  # a line per part
    assert not path.exists()  # the last holder to leave removed it
    path.write_text("999999\ta holder killed with SIGKILL\n")
    with hold_lock(path, "whole again"):  # a file left behind blocks nothing
        assert path.read_text() == f"{os.getpid()}\twhole again\n"  # a whole-file holder's record replaces it
    assert not path.exists()


def test_hold_lock_across_processes_and_after_kill_9(tmp_path):
    path = tmp_path / "x.lock"
    child = subprocess.Popen([sys.executable, "-c", _PART_HOLDER, str(path), "0"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n", child.stderr.read()
        with hold_lock(path, "mine", part=1):  # another part: held together
            with pytest.raises(LockHeld) as caught, hold_lock(path, "mine too", part=0):  # the same part
                pass
            assert (caught.value.pid, caught.value.record) == (child.pid, "the other process")
        with pytest.raises(LockHeld) as caught, hold_lock(path, "whole"):  # the whole file
            pass
        assert (caught.value.pid, caught.value.record) == (child.pid, "the other process")
        assert path.read_text() == f"{child.pid}\tthe other process\n{os.getpid()}\tmine\n"  # a line per part
    finally:
        _kill(child)
    assert path.exists()  # the killed holder could not remove it
    with hold_lock(path, "whole"):
        assert path.read_text() == f"{os.getpid()}\twhole\n"
    assert not path.exists()


def test_a_lock_file_removed_before_it_was_locked_is_not_held(tmp_path, monkeypatch):
    """A process that opened the lock file just before its last holder removed it locks a file no one else can
    find: it must lock the one at the path now, or two runs would each hold "the" lock."""
    import clipforge.library.lock as lock

    path = tmp_path / "x.lock"
    path.write_text("")
    removed = os.open(path, os.O_RDWR)
    path.unlink()  # what the last holder does on leaving, after this process opened the file
    opened = iter([removed])
    real_open = os.open
    monkeypatch.setattr(lock.os, "open", lambda *args, **kwargs: next(opened, None) or real_open(*args, **kwargs))
    with hold_lock(path, "mine"):
        assert path.read_text() == f"{os.getpid()}\tmine\n"  # the file at the path is the one held
    assert not path.exists()


def test_out_that_cannot_be_a_folder_is_one_line_and_a_failed_start_leaves_no_folder(tmp_path, images_factory,
                                                                                     capsys):
    images_factory(tmp_path / "photos", 2)
    afile = tmp_path / "afile"
    afile.write_text("notes\n")
    assert main(["embed", str(tmp_path / "photos"), "--out", str(afile), *TINY]) == 2
    assert capsys.readouterr() == ("", f"error: --out {afile}: is a file, not a folder\n")
    assert afile.read_text() == "notes\n"
    out = tmp_path / "new" / "emb"  # made for the lock, taken back when the run fails before writing anything
    argv = ["embed", str(tmp_path / "photos"), "--out", str(out), *TINY]
    assert main([*argv[:-len(TINY)], *TINY[2:], "--model", "no-such-model-anywhere"]) == 2
    assert capsys.readouterr().err.startswith("error: model 'no-such-model-anywhere' is neither a known name")
    assert not (tmp_path / "new").exists()


def test_the_python_api_holds_out_too(tmp_path, images_factory, monkeypatch):
    """`export_embeddings` itself takes the lock (review 63: only the CLI did, so a script beside a running embed
    mixed its output in), before its model loads."""
    from clipforge.library.export import export_embeddings
    from clipforge.library.export_lock import LOCK_FILE, OutputInUse

    photos = images_factory(tmp_path / "photos", 2)
    out = tmp_path / "out"
    out.mkdir()
    child = subprocess.Popen([sys.executable, "-c", _PART_HOLDER, str(out / LOCK_FILE), "0"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n", child.stderr.read()
        monkeypatch.setattr("clipforge.library.export.resolve_encoder", _no_model)
        with pytest.raises(OutputInUse, match=f"pid {child.pid}: the other process"):
            export_embeddings([photos[0].parent], out, "test-vit-tiny", workers=0, progress=False)
    finally:
        _kill(child)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
