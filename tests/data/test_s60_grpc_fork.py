"""Decoding workers never fork while a Milvus store's gRPC client is open: they start from a forkserver.

CI hung here: `index add --store milvus-lite` forked its DataLoader workers while gRPC's threads ran, and one worker
never started (gdb: stuck in gRPC's post-fork handler, `__run_postfork_handlers` in cygrpc) until the 600 s test
timeout. The embedded store's commands keep fork's instant start. A hang that shows once in hundreds of runs cannot
be a test; what is tested is the choice of start and that the batches are the same either way.
"""

from __future__ import annotations

import pytest
import torch

from clipforge.cores import fork_unsafe
from clipforge.data.files import ImageFileReader, read_batches, worker_context


class _Holder:
    """Something that holds gRPC's threads (a stand-in for a Milvus store)."""


def test_workers_start_from_a_forkserver_only_while_a_milvus_store_is_open(tmp_path) -> None:
    pytest.importorskip("milvus_lite")
    from clipforge.library.backend import parse_store
    from clipforge.library.milvus_store import MilvusStore

    assert worker_context() is None  # fork: instant
    store = MilvusStore(parse_store(f"milvus-lite:{tmp_path}/m.db"), create=True)
    try:
        assert worker_context().get_start_method() == "forkserver"
    finally:
        store.close()
    assert worker_context() is None


@pytest.mark.slow
def test_a_forkserver_reader_gives_the_forked_readers_batches(tmp_path) -> None:
    from PIL import Image

    from clipforge.image import Preprocess

    paths = []
    for k in range(6):
        path = tmp_path / f"p{k}.png"
        Image.new("RGB", (40 + k, 30), (40 * k, 90, 200 - 30 * k)).save(path)
        paths.append(str(path))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths.append(str(tmp_path / "bad.png"))

    def batches() -> list:
        reader = ImageFileReader(paths, Preprocess(32), hash=True)
        out = []
        for batch in read_batches(reader, batch_size=4, workers=2):
            out.append(([f.sha256 for f in batch.files], batch.pixels, [b.path for b in batch.bad]))
        return out

    forked = batches()
    holder = _Holder()
    fork_unsafe(holder)
    try:
        served = batches()
    finally:
        fork_unsafe(holder, False)
    assert [b[0] for b in served] == [b[0] for b in forked] and [b[2] for b in served] == [b[2] for b in forked]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(served, forked, strict=True))
    assert sum(len(b[2]) for b in served) == 1  # the bad file, named once
