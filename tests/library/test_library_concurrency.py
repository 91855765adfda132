"""Several writers and readers on one library at once (issue 9, items 2 and 14)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from clipforge.library import Library
from clipforge.library.lock import library_lock


def test_two_concurrent_adds_embed_each_image_once(tmp_path, tiny_encoder, images_factory, monkeypatch):
    images_factory(tmp_path / "photos", 6)
    Library(tmp_path / "lib", tiny_encoder).close()
    embedded: list[int] = []
    inside, release = threading.Event(), threading.Event()
    original = tiny_encoder.encode_pixels

    def spy(pixels):
        embedded.append(len(pixels))
        inside.set()
        release.wait(30)  # the first run holds its batch open while the second one starts
        return original(pixels)

    monkeypatch.setattr(tiny_encoder, "encode_pixels", spy)
    reports: dict[str, object] = {}

    def run(name: str) -> None:
        # Two Library objects: as two processes would, they share nothing but the folder.
        with Library(tmp_path / "lib", tiny_encoder) as library:
            reports[name] = library.add(tmp_path / "photos", workers=0, batch_size=64, progress=False)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    second.join(1.0)  # without a library lock it plans the same 6 files and embeds them too
    release.set()
    first.join(60)
    second.join(60)
    assert sum(embedded) == 6, embedded
    assert (reports["first"].added, reports["first"].embedded) == (6, 6)
    assert (reports["second"].added, reports["second"].unchanged, reports["second"].embedded) == (0, 6, 0)


_WRITER = textwrap.dedent("""
    import sys
    from clipforge.library import Library

    lib, *folders = sys.argv[1:]
    with Library(lib, "test-vit-tiny") as library:
        for folder in folders:
            library.add(folder, workers=0, batch_size=2, progress=False, update_index=False)
            library.classify("cat,dog,car", templates="simple", progress=False)
""")


def test_readers_never_see_an_error_while_another_process_writes(tmp_path, tiny_encoder, images_factory):
    images_factory(tmp_path / "photos", 4)
    library = Library(tmp_path / "lib", tiny_encoder)
    library.add(tmp_path / "photos", workers=0, progress=False)
    folders = []
    for round_ in range(3):
        images_factory(tmp_path / f"more{round_}", 4, seed=200 + round_, formats=("png",))
        folders.append(str(tmp_path / f"more{round_}"))
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "lib"), *folders],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
    errors: list[BaseException] = []
    reads = [0]
    first_id = library.list_images()[0].id

    def reader() -> None:
        try:
            while writer.poll() is None:
                assert library.search(text="a dog", top_k=3)
                assert library.get_image(first_id) is not None
                library.stats()
                library.store.list_images(limit=50)
                library.store.tag_counts(tiny_encoder.fingerprint)
                reads[0] += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if writer.poll() is None:
            writer.kill()
        output = writer.communicate()[0].decode(errors="replace")
        for thread in threads:
            thread.join(30)
    assert writer.returncode == 0, output
    assert not errors, errors
    assert reads[0] > 0
    # What the other process wrote is visible here: the live index is extended in place.
    assert library.store.status_counts()["ok"] == 16
    assert library.search(image=tmp_path / "more2" / "img003.png", top_k=1)[0].path == \
        str(tmp_path / "more2" / "img003.png")
    assert sum(library.store.tag_counts(tiny_encoder.fingerprint).values()) == 16
    library.close()


_PROBE = textwrap.dedent("""
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(3)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_library_lock_excludes_other_processes_and_forked_children_do_not_keep_it(tmp_path):
    path = tmp_path / "library.lock"

    def probe() -> int:
        return subprocess.run([sys.executable, "-c", _PROBE, str(path)], timeout=60).returncode

    child = 0
    try:
        with library_lock(path):
            assert probe() == 3  # held: another process cannot take it
            child = os.fork()
            if child == 0:  # like a DataLoader worker forked during the run, still alive after it
                time.sleep(60)
                os._exit(0)
        assert probe() == 0  # released by the run although its forked child lives on
    finally:
        if child:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
