"""clipforge.atomic: whole files or nothing, the mode open() would give, and stale temps cleaned."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipforge import atomic


@pytest.fixture()
def umask():
    """Run a test under a chosen umask, restoring the process's own afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_new_files_get_the_mode_plain_open_gives(tmp_path, umask, mask) -> None:
    umask(mask)
    with open(tmp_path / "plain.log", "w") as f:
        f.write("x")
    expected = _mode(tmp_path / "plain.log")
    assert expected == 0o666 & ~mask
    written = [
        atomic.write_json_atomic(tmp_path / "report.json", {"a": 1}),
        atomic.write_text_atomic(tmp_path / "notes.txt", "hé"),
        atomic.write_bytes_atomic(tmp_path / "blob.bin", b"\x00\x01"),
        atomic.write_atomic(tmp_path / "emb.npy", lambda tmp: np.save(tmp, np.arange(3))),
    ]
    with atomic.atomic_path(tmp_path / "sub" / "index.faiss") as tmp:
        tmp.write_bytes(b"faiss")
    written.append(tmp_path / "sub" / "index.faiss")
    assert {p.name: _mode(p) for p in written} == {p.name: expected for p in written}
    assert json.loads((tmp_path / "report.json").read_text()) == {"a": 1}
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "hé"
    assert np.load(tmp_path / "emb.npy").tolist() == [0, 1, 2]  # np.save kept the .npy name: no emb.npy.npy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "emb.npy", "notes.txt", "plain.log",
                                                          "report.json", "sub"]


def test_replacing_a_file_keeps_its_mode(tmp_path, umask) -> None:
    umask(0o022)
    target = tmp_path / "secret.json"
    target.write_text("{}")
    os.chmod(target, 0o600)
    atomic.write_json_atomic(target, {"b": 2})
    assert _mode(target) == 0o600 and json.loads(target.read_text()) == {"b": 2}


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")

    def half_write(tmp: Path) -> None:
        assert tmp.suffix == ".safetensors" and tmp.parent == tmp_path
        tmp.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.write_atomic(target, half_write)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_remove_stale_temps_removes_only_dead_writers_files(tmp_path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".ckpt.safetensors.{dead_pid}-0123abcd.tmp.safetensors"
    live = tmp_path / f".train.csv.{os.getpid()}-89abcdef.tmp.csv"
    other = tmp_path / ".hidden.99999999-notours.tmp"
    for path in (stale, live, other, tmp_path / "ckpt.safetensors"):
        path.write_bytes(b"x")
    assert atomic.remove_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "ckpt.safetensors"])
    assert atomic.remove_stale_temps(tmp_path / "missing") == []


def test_save_figure_writes_a_png_whole_and_closes_the_figure(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = tmp_path / "plot.png"
    target.write_bytes(b"the previous plot")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    finished = []
    with pytest.raises(RuntimeError, match="disk full"):
        atomic.save_figure(fig, target, finish=lambda f: (finished.append(f), f.canvas.mpl_connect(
            "draw_event", lambda event: (_ for _ in ()).throw(RuntimeError("disk full")))))
    assert finished == [fig]
    assert target.read_bytes() == b"the previous plot"  # the failed write left the old file
    assert not plt.fignum_exists(fig.number)  # and did not leak the figure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    assert atomic.save_figure(fig, target, dpi=50) == target
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
