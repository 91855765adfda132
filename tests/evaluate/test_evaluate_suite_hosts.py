"""A suite's ``--out`` shared by runs on several hosts, and one file name spelled in NFC and NFD.

`clean_stale` judged every temporary by its writer's pid on this host: a second suite run on another host,
writing into the same shared ``--out``, had its live temporary removed (its pid is nobody here) and its cell
failed. Temporaries now carry the host; another host's, or one without a host, is removed only once a day old.
And a model spec in NFD shared the NFC spelling's cell folder even where the two spellings are two files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

from clipforge.evaluate.suite_files import clean_stale, model_folder


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temp(folder: Path, name: str, pid: int, host: str | None, days_old: float = 0.0) -> Path:
    """A temporary as `atomic.atomic_path` names it for `name` (with a host: as the suite's writers do)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = name, Path(name).suffix
    path = folder / f".{stem}.{pid}-0badc0de.tmp{'@' + host if host else ''}{suffix}"
    path.write_text("{}", encoding="utf-8")
    if days_old:
        stamp = time.time() - days_old * 86_400
        os.utime(path, (stamp, stamp))
    return path


def test_another_hosts_live_temporary_is_kept_and_any_hosts_goes_after_a_day(tmp_path):
    """A run on another host writes into this shared --out: its pid is nobody here, yet its write is live."""
    out, dead = tmp_path / "out", _dead_pid()
    cells = out / "cells" / "test-vit-tiny"
    kept = [
        _temp(cells, "c.json", dead, "other-host"),
        _temp(out / "predictions", "c.parquet", dead, "other-host"),
        _temp(cells, "d.json", dead, None),  # no host (an earlier version's): judged by age
    ]
    gone = [
        _temp(cells, "b.json", dead, "other-host", days_old=2),
        _temp(out, "table.png", dead, None, days_old=2),
    ]
    finished = cells / "f.json"
    finished.write_text("{}", encoding="utf-8")
    assert clean_stale(out) == len(gone)
    assert [p.exists() for p in gone] == [False] * len(gone)
    assert [p.exists() for p in kept] == [True] * len(kept) and finished.exists()


def test_this_hosts_dead_writers_temporaries_go_and_its_live_ones_stay(tmp_path):
    from clipforge.evaluate.suite_files import host_tag

    out, dead, here = tmp_path / "out", _dead_pid(), host_tag()
    cells = out / "cells" / "test-vit-tiny"
    gone = [_temp(cells, "a.json", dead, here), _temp(out / "predictions", "a.parquet", dead, here)]
    live = _temp(cells, "e.json", os.getpid(), here)
    assert clean_stale(out) == 2 and not any(p.exists() for p in gone) and live.exists()


def test_a_cells_temporary_is_named_with_this_host(tmp_path, monkeypatch):
    import clipforge.atomic as atomic
    from clipforge.atomic import write_json_atomic
    from clipforge.evaluate.suite_files import host_tag

    seen, real = [], os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda src, dst: (seen.append(Path(src).name), real(src, dst)))
    path = tmp_path / "cells" / "m" / "cifar10__test.json"
    path.parent.mkdir(parents=True)
    write_json_atomic(path, {"metrics": {"top1": None}, "clipforge": {}})  # as `run_suite` writes a cell
    assert (
        len(seen) == 1
        and seen[0].startswith(".cifar10__test.json.")
        and seen[0].endswith(f"@{host_tag()}.json")
    )
    assert path.read_text(encoding="utf-8").startswith('{\n  "metrics"')


def test_nfc_and_nfd_spellings_share_a_folder_only_when_they_are_one_file(tmp_path, monkeypatch):
    """On Linux `modèle.pt` in NFC and in NFD are two files: with one folder, the second model (the same weights)
    read the first one's cells as its own and vanished from the merged table. macOS gives NFD names for the file
    typed in NFC: one file, one folder, so a resume typed either way finds its cells."""
    monkeypatch.chdir(tmp_path)
    nfc, nfd = (unicodedata.normalize(form, "modèle.pt") for form in ("NFC", "NFD"))
    Path(nfd).write_bytes(b"weights")
    assert model_folder(nfd) == model_folder(nfc) == nfc  # one file, either spelling
    Path(nfc).write_bytes(b"weights")
    if os.path.samefile(nfc, nfd):  # a normalising file system (macOS): still one file
        return
    assert model_folder(nfc) == nfc and model_folder(nfd).startswith(nfc + "-")
    assert model_folder(nfd) == model_folder(nfd)  # stable
