"""A batch that shared memory refuses is one line and a non-zero exit, never a hang (audit 61 chaos, finding 1).

`index add` and `embed` under `ulimit -f 150` waited for ever: a decoding worker's batch, stacked in ordinary
memory, was copied into shared memory by the worker's queue feeder thread, which only printed
``unable to resize file </torch_...> to the right size: File too large (27)`` and dropped the batch; the main
process waited for it in `read_batches`. A full /dev/shm (Docker's 64 MB) did the same (``No space left on
device (28)``). Batches are now built in shared memory in the worker, a batch the feeder cannot send is answered
with its error (`clipforge.data.sharing`), and the loader says it in one line. Each run that could hang has a
subprocess timeout as its hang guard only (`CLIPFORGE_TEST_HANG_GUARD`, 120 s).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clipforge
from clipforge.cli.main import main
from clipforge.library.export import read_export

from .conftest import write_image

HANG_GUARD = float(os.environ.get("CLIPFORGE_TEST_HANG_GUARD", "120"))
CROP = 3 * 32 * 32  # bytes of one clipforge-tiny crop (uint8, 32 px): a batch of B travels as B x CROP
REFUSED = "error: could not write a batch of decoded images to shared memory on its way from a decoding worker: "
FILE_SIZE = (REFUSED + "this process's file-size limit (`ulimit -f`) is below one batch (File too large); raise the "
             "limit, or decode in this process (--workers 0), and run the command again")
SHM_FULL = (REFUSED + "/dev/shm is full (No space left on device); free space in /dev/shm or make it larger (Docker: "
            "--shm-size), or decode in this process (--workers 0), and run the command again")


def _photos(folder: Path, count: int) -> Path:
    for i in range(count):  # distinct colours: distinct bytes, one row each
        write_image(folder / f"{i:04d}.jpg", color=(i % 256, 40 * (i // 256), 7), size=(40, 40))
    return folder


def _cli(*args: str, limit: int | None = None, wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m clipforge ARGS` on the code under test, under a file-size limit of `limit` bytes."""
    env = {**os.environ, "PYTHONPATH": str(Path(clipforge.__file__).resolve().parents[1])}

    def apply() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return subprocess.run([*(wrap or []), sys.executable, "-m", "clipforge", *args], capture_output=True, text=True,
                          env=env, preexec_fn=apply, timeout=HANG_GUARD)


def _images(library: Path, capsys: pytest.CaptureFixture[str]) -> int:
    capsys.readouterr()
    assert main(["index", "stats", "--library", str(library), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["images"]["ok"]


# 264 photos in batches of 8 (the first) and 256: the second is 768 KB of crops, over the 640 KB limit, which the
# library (float16 vectors; ~500 KB) stays under
PHOTOS, BATCH, LIMIT = 264, 256, 640 * 1024
ADD = ["--model", "clipforge-tiny", "--batch-size", str(BATCH), "--float16", "-q"]


def test_index_add_whose_batch_shared_memory_refuses_fails_in_one_line_and_resumes(tmp_path, capsys) -> None:
    assert 8 * CROP < LIMIT < (PHOTOS - 8) * CROP
    photos = _photos(tmp_path / "photos", PHOTOS)
    refused = _cli("index", "add", str(photos), "--library", str(tmp_path / "lib"), *ADD, "--workers", "1",
                   limit=LIMIT)
    assert (refused.returncode, refused.stderr.splitlines()) == (2, [FILE_SIZE])  # was: a hang, tracebacks
    assert _images(tmp_path / "lib", capsys) == 8  # the first batch, committed before

    in_process = _cli("index", "add", str(photos), "--library", str(tmp_path / "clean"), *ADD, "--workers", "0",
                      limit=LIMIT)  # what the line advises works under the same limit
    assert in_process.returncode == 0, in_process.stderr
    assert in_process.stdout.startswith(f"added {PHOTOS} files, updated 0, relinked 0, skipped 0 unchanged, failed 0")

    resumed = _cli("index", "add", str(photos), "--library", str(tmp_path / "lib"), *ADD, "--workers", "1",
                   limit=64 << 20)  # a generous limit: the workers' batches pass
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(f"added {PHOTOS - 8} files, updated 0, relinked 0, skipped 8 unchanged, failed 0")
    assert _images(tmp_path / "lib", capsys) == _images(tmp_path / "clean", capsys) == PHOTOS


def test_embed_whose_batch_shared_memory_refuses_fails_in_one_line_and_resumes(tmp_path) -> None:
    """108 photos in partitions of 100 and 8, batches of 8 and 92 (282 KB) under a 200 KB limit."""
    photos = _photos(tmp_path / "photos", 108)
    args = ["embed", str(photos), "--model", "clipforge-tiny", "--shard-size", "100", "--batch-size", "100", "-q"]
    refused = _cli(*args, "--out", str(tmp_path / "out"), "--workers", "1", limit=200 * 1024)
    assert (refused.returncode, refused.stderr.splitlines()) == (2, [FILE_SIZE])
    in_process = _cli(*args, "--out", str(tmp_path / "clean"), "--workers", "0", limit=200 * 1024)
    assert in_process.returncode == 0, in_process.stderr
    resumed = _cli(*args, "--out", str(tmp_path / "out"), "--workers", "1")  # the same job, no --overwrite
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("wrote 2 of 2 partitions (0 already done), 108 embeddings, 0 failed in ")
    vectors, rows = read_export(tmp_path / "out")
    clean_vectors, clean_rows = read_export(tmp_path / "clean")
    assert len(rows) == len(clean_rows) == 108 and vectors.shape == clean_vectors.shape


FEEDER = r"""
import gc, multiprocessing, resource, torch
from torch.utils.data import Dataset
from clipforge.data.loader import make_loader

class Numbers(Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        return i

def big(items):  # a collate of one's own: its batch leaves the worker through the queue's feeder thread
    return torch.zeros(100_000)

def unpicklable(items):
    return lambda: "cannot be pickled"

if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
    for collate, context in ((big, None), (unpicklable, None), (big, multiprocessing.get_context("forkserver"))):
        try:
            for batch in make_loader(Numbers(), batch_size=2, workers=1, collate_fn=collate, context=context):
                print("batch")
        except Exception as exc:
            print(type(exc).__name__, "|", str(exc).splitlines()[0])
        gc.collect()  # the failed iterator, in a traceback's cycle, ends here, not in the next loader's forked worker
"""


def test_a_batch_the_workers_queue_cannot_send_is_raised_not_lost(tmp_path) -> None:
    """Any loader's batch that fails in the feeder thread (400 KB under a 100 KB limit; a lambda) is the main
    process's exception, a refusal said as for the workers' own collate; forked workers and a forkserver's alike
    (`files.worker_context` starts them from one while a Milvus client is open)."""
    env = {**os.environ, "PYTHONPATH": str(Path(clipforge.__file__).resolve().parents[1])}
    script = tmp_path / "feeder.py"  # a file: the forkserver's workers import the collate from it
    script.write_text(FEEDER)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=HANG_GUARD)
    refused = "SharedMemoryFullError | " + FILE_SIZE.removeprefix("error: ")
    assert run.stdout.splitlines() == [
        refused, "AttributeError | Caught AttributeError in DataLoader worker process 0 while sending its batch.",
        refused], run.stderr


def test_a_full_dev_shm_is_one_line(tmp_path) -> None:
    """/dev/shm of 150 KB (a private mount, as Docker's small default): the second batch (56 crops) finds no room."""
    mount = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=150k tmpfs /dev/shm && exec "$@"', "sh"]
    if os.geteuid() != 0 or shutil.which("unshare") is None or subprocess.run(
            [*mount, "true"], capture_output=True).returncode != 0:
        pytest.skip("needs root, unshare and mount to give a command a small /dev/shm of its own")
    photos = _photos(tmp_path / "photos", 72)
    run = _cli("index", "add", str(photos), "--library", str(tmp_path / "lib"), "--model", "clipforge-tiny",
               "--workers", "1", "-q", wrap=mount)
    assert (run.returncode, run.stderr.splitlines()) == (2, [SHM_FULL])


@pytest.mark.parametrize(("text", "code"), [
    ("Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n  File x\n"
     "RuntimeError: unable to resize file </torch_1_2_3> to the right size: File too large (27)\n", 27),
    ("unable to allocate shared memory(shm) for file </torch_1_2_3>: No space left on device (28)", 28),
    ("DataLoader worker (pid(s) 12) is killed by signal: Bus error. It is possible that dataloader's workers are "
     "out of shared memory. Please try to raise your shared memory limit.", 28),
    ("Too many open files. Communication with the workers is no longer possible. Please increase the limit", 24),
    ("Caught OSError in DataLoader worker process 1 while sending its batch.\nOriginal Traceback (most recent call "
     "last):\nOSError: [Errno 24] Too many open files\n", 24),
])
def test_torchs_words_for_a_refused_batch_are_one_line(text, code) -> None:
    from clipforge.data.sharing import SharedMemoryError, refused_batch
    from clipforge.disk_full import disk_full

    error = refused_batch(RuntimeError(text))
    assert isinstance(error, SharedMemoryError) and isinstance(error, OSError) and error.errno == code
    assert "\n" not in str(error) and str(error).startswith(REFUSED.removeprefix("error: "))
    assert disk_full(error) is (code != 24)  # want of room is the project's one DiskFullError; too many files is not


def test_a_shared_memory_file_refused_for_another_reason_is_said_as_torch_says_it() -> None:
    from clipforge.data.sharing import refused_batch
    from clipforge.disk_full import disk_full

    error = refused_batch(RuntimeError("unable to open shared memory object </torch_9_8_7> in read-write mode: "
                                       "Permission denied (13)"))
    assert str(error) == (REFUSED.removeprefix("error: ") + "torch could not make its shared-memory file (Permission "
                          "denied); check /dev/shm (room, and this user's access), or decode in this process "
                          "(--workers 0), and run the command again")
    assert not disk_full(error)


def test_a_full_shared_memory_says_again_what_a_caller_knows_better() -> None:
    """`DiskFullError.advising`, as the trainer uses it, keeps the cause and the way round it."""
    from clipforge.data.sharing import refused_batch

    error = refused_batch(RuntimeError("unable to resize file </torch_1_2_3> to the right size: File too large (27)"))
    assert str(error.advising("every batch before is kept", "resume")) == (
        "could not write /dev/shm: this process's file-size limit (`ulimit -f`) is below one batch (File too large); "
        "every batch before is kept: raise the limit, or decode in this process (--workers 0), and resume")


@pytest.mark.parametrize("text", [
    "stack expects each tensor to be equal size, but got [3, 4] at entry 0 and [3, 5] at entry 1",
    "Caught OSError in DataLoader worker process 0.\nOriginal Traceback:\nOSError: [Errno 24] Too many open files\n",
    "Caught OSError in DataLoader worker process 0.\nOSError: [Errno 28] No space left on device: 'cache.bin'\n",
    "unable to open file <features.bin> in read-write mode: No such file or directory (2)",  # torch.load(mmap=True)
])
def test_other_loader_errors_keep_their_own_words(text) -> None:
    """A dataset's own failure (its own file writes, a ragged batch) is not called a shared-memory refusal."""
    from clipforge.data.sharing import refused_batch

    assert refused_batch(RuntimeError(text)) is None



class _Four(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        return index


def _raises(items: list[int]) -> None:
    raise ValueError("a worker's own failure")


def _refused(items: list[int]) -> None:
    raise RuntimeError("unable to resize file </torch_1_2_3> to the right size: File too large (27)")


@pytest.mark.parametrize(("collate", "said"), [(_raises, "a worker's own failure"), (_refused, FILE_SIZE[7:])])
def test_a_workers_exception_ends_its_workers_before_it_is_raised(collate, said) -> None:
    """Left to the garbage collector (torch's `reraise` holds the iterator in a traceback cycle), the workers
    were waited for 5 s, then killed: they end, cleanly, before the caller sees the error."""
    from clipforge.data.loader import make_loader

    iterator = iter(make_loader(_Four(), batch_size=2, workers=1, collate_fn=collate))
    with pytest.raises(Exception) as raised:
        next(iterator)
    assert said in str(raised.value)
    assert [(w.is_alive(), w.exitcode) for w in iterator._workers] == [(False, 0)]  # was: (True, None), then -15
