"""A command whose decoding workers came from a forkserver leaves no process and no /tmp/pymp-* folder behind.

Audit 63 (concurrency #5): `index add --store milvus-lite:...` starts its workers from a multiprocessing forkserver
(`files.worker_context`, while a Milvus store's gRPC client is open). After a `kill -9` of the command, the
forkserver, its worker and the resource tracker (~415 MB) lived on for good: the worker watched its parent, the
forkserver, and the forkserver waited for the EOF of a pipe the worker held (`data.lifeline`). Every process a
command started is found here by a marker in its environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import clipforge

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
              pytest.mark.slow]  # end-to-end: a command and a forkserver that import torch (~5 s on 2 busy cores)

COMMAND = r"""
import os, signal, sys, threading, time
import torch
from PIL import Image
from torch.utils.data import Dataset
from clipforge.cores import fork_unsafe
from clipforge.data.files import ImageFileReader, read_batches, worker_context
from clipforge.data.loader import make_loader
from clipforge.image import Preprocess

class Holder:  # a stand-in for a Milvus store's gRPC client: the workers start from a forkserver
    pass

class Busy(Dataset):  # an item that takes long (a slow disk): torch's watchdog looks only between items
    def __len__(self):
        return 4
    def __getitem__(self, i):
        print("busy", os.getpid(), flush=True)
        time.sleep(600)
        return torch.zeros(1)

def busy_loader():  # built outside the main thread (as the server's are): no death signal ties its worker
    next(iter(make_loader(Busy(), batch_size=1, workers=1, context=worker_context())))

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # as the CLI: a clean exit on SIGTERM
    paths = []
    for k in range(4):
        paths.append(f"{sys.argv[1]}/p{k}.png")
        Image.new("RGB", (40, 30), (60 * k, 90, 200)).save(paths[-1])
    holder = Holder()
    fork_unsafe(holder)
    batches = read_batches(ImageFileReader(paths, Preprocess(32)), batch_size=2, workers=1)  # `index add`'s way
    batch = next(batches)  # its worker decodes ahead, then waits for the next request
    print("batch", len(batch.files), flush=True)
    if sys.argv[2] == "busy":
        threading.Thread(target=busy_loader, daemon=True).start()
    sys.stdin.read()  # until stopped
"""

MARK = "CLIPFORGE_S63_ORPHAN_MARK"


def _marked(mark: str) -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) of every living (not zombie) process whose environment holds `mark`."""
    found: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if f"{MARK}={mark}".encode() not in handle.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat") as handle:
                state, ppid = handle.read().rsplit(")", 1)[1].split()[:2]
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # ended meanwhile
            continue
        if state not in ("Z", "X"):
            found[int(entry)] = (int(ppid), cmdline)
    return found


def _wait_until_gone(mark: str) -> dict[int, tuple[int, str]]:
    """The marked processes still alive after up to 10 s (a poll's bound, not a timing assert: they end in a moment
    or never)."""
    deadline = time.monotonic() + 10.0
    left = _marked(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _marked(mark)
    return left


def _start(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], str]:
    mark = uuid.uuid4().hex
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, MARK: mark, "TMPDIR": str(tmp_path / "tmp"),  # the command's /tmp/pymp-* folders go there
           "PYTHONPATH": str(Path(clipforge.__file__).resolve().parents[1])}
    script = tmp_path / "command.py"  # a file: the forkserver's workers import the script's module from it
    script.write_text(COMMAND)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    return proc, mark


def _clean_up(proc: subprocess.Popen[str], mark: str) -> None:
    """A failed run's processes, by pid: nothing of a test stays on the machine."""
    proc.kill()
    proc.wait(timeout=30)
    for pid in _marked(mark):
        os.kill(pid, signal.SIGKILL)


def test_a_killed_commands_forkserver_workers_and_tracker_end_with_it(tmp_path: Path) -> None:
    """`kill -9` of the command: its forkserver, the tracker and both workers end - one stopped (it cannot run any
    code: the forkserver ends without waiting for it, and takes it along), one busy in an item of a loader built in
    a thread (no death signal ties it: it watches the command itself)."""
    proc, mark = _start(tmp_path, "busy")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "batch 2\n"
        busy_line = proc.stdout.readline()
        assert busy_line.startswith("busy "), busy_line
        busy = int(busy_line.split()[1])
        started = _marked(mark)
        server = [pid for pid, (ppid, cmd) in started.items() if ppid == proc.pid and "forkserver import main" in cmd]
        assert len(server) == 1, started
        workers = sorted(pid for pid, (ppid, _) in started.items() if ppid == server[0])
        assert busy in workers and len(workers) == 2, started
        stopped = next(pid for pid in workers if pid != busy)
        tracker = [pid for pid, (_, cmd) in started.items() if "resource_tracker" in cmd]
        assert len(tracker) == 1, started
        roles = {proc.pid: "command", server[0]: "forkserver", stopped: "stopped worker", busy: "busy worker",
                 tracker[0]: "resource tracker"}
        assert set(started) == set(roles), started
        os.kill(stopped, signal.SIGSTOP)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        left = _wait_until_gone(mark)
        assert sorted(roles.get(pid, cmd[:80]) for pid, (_, cmd) in left.items()) == []
    finally:
        _clean_up(proc, mark)


def test_a_command_stopped_with_its_group_leaves_no_temporary_folder(tmp_path: Path) -> None:
    """SIGTERM to the command's group (a service manager's stop): the worker dies of it, the command exits cleanly.
    The worker's socket folder (/tmp/pymp-*/listener-*) was its own, left behind; now it is the command's, which
    the command removes as it exits."""
    proc, mark = _start(tmp_path, "idle")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "batch 2\n"
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
        assert _wait_until_gone(mark) == {}
        assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "tmp").rglob("*")) == []
    finally:
        _clean_up(proc, mark)
