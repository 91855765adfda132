"""Decoding workers end with their command: a `kill -9` of `index add` left its DataLoader worker running for ~5 s
(torch's own watchdog), holding what it inherited - a milvus-lite store's lock, so the next command was refused as
"in use by another process (a running `clipforge serve`?)". Workers forked by the main thread now die with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

SCRIPT = r"""
import os, signal, sys, time
import torch
from torch.utils.data import Dataset
from clipforge.data.loader import make_loader

class Slow(Dataset):
    def __len__(self):
        return 1000
    def __getitem__(self, i):
        print("worker", os.getpid(), flush=True)
        time.sleep(60)
        return torch.zeros(1), 0

loader = make_loader(Slow(), batch_size=1, workers=1)
iter(loader).__next__()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_commands_decoding_worker_ends_with_it() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("worker "), line
        worker = int(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 2.0  # torch's watchdog takes ~5 s; the signal, a moment
        while time.monotonic() < deadline and _alive(worker):
            time.sleep(0.02)
        assert not _alive(worker), "the worker outlived its killed command"
    finally:
        proc.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
