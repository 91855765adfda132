"""Review of session 54: the host rule for temporaries lives in the one atomic writer, so every writer has it.

The suite's `clean_stale` had grown its own copy of `atomic.remove_stale_temps` (and of `_alive`) to learn that
another host's pid means nothing here; the other writers into shared folders (a training run's checkpoints, a
library's index and thumbnails, an export) still removed another host's live temporary by its pid, and their
temporaries carried no host to judge by.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from clipforge.atomic import host_tag, remove_stale_temps, write_bytes_atomic


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temp(folder: Path, name: str, pid: int, host: str | None, days_old: float = 0.0) -> Path:
    path = folder / f".{name}.{pid}-0badc0de.tmp{'@' + host if host else ''}{Path(name).suffix}"
    path.write_bytes(b"part")
    if days_old:
        stamp = time.time() - days_old * 86_400
        os.utime(path, (stamp, stamp))
    return path


def test_any_writers_folder_keeps_another_hosts_live_temporary(tmp_path):
    """A checkpoint folder on a shared disk: the other host's write in progress has a pid nobody is here."""
    dead = _dead_pid()
    kept = [
        _temp(tmp_path, "model-step-6.safetensors", dead, "other-host"),
        _temp(tmp_path, "live.faiss", os.getpid(), host_tag()),
    ]
    gone = [
        _temp(tmp_path, "a.faiss", dead, host_tag()),
        _temp(tmp_path, "b.faiss", dead, None),  # an earlier version's, on this host as it always was
        _temp(tmp_path, "c.safetensors", dead, "other-host", days_old=2),
    ]
    assert sorted(remove_stale_temps(tmp_path)) == sorted(gone)
    assert [p.exists() for p in kept] == [True, True] and not any(p.exists() for p in gone)


def test_every_atomic_writer_names_its_temporary_with_this_host(tmp_path, monkeypatch):
    import clipforge.atomic as atomic

    seen, real = [], os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda src, dst: (seen.append(Path(src).name), real(src, dst)))
    write_bytes_atomic(tmp_path / "index.faiss", b"x")
    assert (
        len(seen) == 1
        and seen[0].startswith(".index.faiss.")
        and seen[0].endswith(f".tmp@{host_tag()}.faiss")
    )
    assert (tmp_path / "index.faiss").read_bytes() == b"x"
