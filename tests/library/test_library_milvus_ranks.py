"""Many writers, one collection: torchrun ranks (gloo) each index their share into a Milvus server.

The server is milvus-lite's standalone gRPC server (`milvus-lite server`): the embedded `.db` engine
admits one process, a server admits many, which is what ranks on several machines talk to.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def milvus_server(tmp_path):
    port = _free_port()
    exe = Path(sys.executable).with_name("milvus-lite")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "milvus_lite"]
    proc = subprocess.Popen([*cmd, "server", "--data-dir", str(tmp_path / "milvus-data"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    yield f"milvus://127.0.0.1:{port}/photos"
    proc.terminate()
    proc.wait(timeout=30)


_SLOW = """
import sys, time
from clipforge.library import milvus_library
write = milvus_library.MilvusWriter.write
def slow_write(self, batch):
    write(self, batch)
    print("batch", flush=True)
    time.sleep(0.5)
milvus_library.MilvusWriter.write = slow_write
from clipforge.cli.main import main
sys.exit(main({args!r}))
"""


def _stored(store: str, lib: Path) -> list[dict]:
    with MilvusLibrary(store, lib) as milvus:
        return list(milvus.space.iter_rows(fields=["path", "status"]))


def test_torchrun_ranks_split_the_files_and_a_killed_rank_reruns_cleanly(tmp_path, images_factory,
                                                                         bad_files_factory, milvus_server) -> None:
    photos = images_factory(tmp_path / "photos", 12, formats=("png", "jpg"))
    bad_files_factory(tmp_path / "photos", photos[0])
    shutil.copyfile(photos[1], tmp_path / "photos" / "same_bytes.png")
    total, ok = 17, 13
    lib = tmp_path / "lib"
    args = ["index", "add", str(tmp_path / "photos"), "--store", milvus_server, "--library", str(lib),
            "--model", "test-vit-tiny", "--workers", "0", "--batch-size", "2", "-q"]
    env = dict(os.environ, WORLD_SIZE="2", PYTHONUNBUFFERED="1")
    env.pop("MASTER_ADDR", None)
    # Two writer processes, rank 1 killed (-9) after its first batch; rank 0 finishes its share.
    rank0 = subprocess.Popen([sys.executable, "-c", _SLOW.format(args=args)], env=env | {"RANK": "0"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rank1 = subprocess.Popen([sys.executable, "-c", _SLOW.format(args=args)], env=env | {"RANK": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert rank1.stdout is not None
    assert rank1.stdout.readline().startswith(b"batch"), rank1.stderr.read().decode()[-2000:] if rank1.stderr else ""
    os.killpg(rank1.pid, signal.SIGKILL)
    rank1.wait()
    assert rank0.wait(timeout=300) == 0, rank0.stderr.read().decode()[-2000:] if rank0.stderr else ""
    partial = _stored(milvus_server, lib)
    assert len(partial) == len({r["path"] for r in partial}) < total

    # The same command under torchrun (2 gloo ranks): rank 1's lost share is redone, nothing doubled.
    port = _free_port()
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(port), "-m", "clipforge", *args], capture_output=True, text=True,
                         timeout=600, env={k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 0/2:" in run.stdout and "rank 1/2:" in run.stdout
    rows = _stored(milvus_server, lib)
    assert len(rows) == len({r["path"] for r in rows}) == total
    assert sum(r["status"] == "ok" for r in rows) == ok
