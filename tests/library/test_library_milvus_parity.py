"""The milvus-lite store answers as the embedded store does where a side-by-side run found it did not:
files only in a second model space, re-written files' sizes and times, and a locked, damaged or
missing store (one line, no traceback, no store created by a read-only command)."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.cli.main import main  # noqa: E402
from clipforge.library import Library  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402

SECOND = "test-vit-tiny"  # a second model space; the store's default is DEFAULT
DEFAULT = "test-worldwide-tiny"


def _build(tmp_path: Path, images_factory, count: int = 3) -> tuple[str, Path]:
    """A milvus-lite store of `count` photos (default model), released by this process so that the
    next open really opens the folder again (milvus-lite keeps one in-process server per path)."""
    from milvus_lite.server_manager import server_manager_instance

    images_factory(tmp_path / "photos", count)
    store = f"milvus-lite:{tmp_path}/m.db"
    with MilvusLibrary(store, tmp_path / "mlib", "test-vit-tiny") as milvus:
        milvus.add(tmp_path / "photos", workers=0, progress=False)
    server_manager_instance.release_server(f"{tmp_path}/m.db")
    return store, tmp_path / "m.db"


def _one_error_line(capfd, args: list[str], caplog: pytest.LogCaptureFixture | None = None) -> str:
    """Run a command that must fail: exit status non-zero, exactly one line on stderr, no traceback, and
    (with `caplog`) no error logged by the engines (pytest's log capture keeps those off stderr)."""
    assert main(args) != 0
    captured = capfd.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    if caplog is not None:
        logged = [r for r in caplog.records if r.name.startswith(("milvus_lite", "pymilvus"))
                  and r.levelno >= logging.ERROR]
        assert not logged, [r.getMessage() for r in logged]
    return err


def test_prune_and_remove_reach_files_indexed_only_into_a_second_space(tmp_path, images_factory, capfd) -> None:
    images_factory(tmp_path / "p1", 2, seed=1)
    images_factory(tmp_path / "p2b", 2, seed=2)
    images_factory(tmp_path / "p3", 2, seed=3)
    base = ["--store", f"milvus-lite:{tmp_path}/m.db", "--library", str(tmp_path / "mlib")]
    assert main(["index", "add", str(tmp_path / "p1"), *base, "--model", DEFAULT, "--workers", "0", "-q"]) == 0
    for folder in ("p2b", "p3"):
        assert main(["index", "add", str(tmp_path / folder), *base, "--model", SECOND, "--workers", "0", "-q"]) == 0
    shutil.rmtree(tmp_path / "p2b")
    capfd.readouterr()
    assert main(["index", "prune", *base]) == 0
    assert "pruned 2" in capfd.readouterr().out
    assert main(["index", "remove", str(tmp_path / "p3"), *base]) == 0
    capfd.readouterr()
    with MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib", SECOND) as milvus:
        assert [h.path for h in milvus.search("a photo", top_k=10)] == []
        assert [r["path"] for r in milvus.space.iter_rows(fields=["path"])] == []
    with MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib") as milvus:
        assert sorted(Path(r.path).parent.name for r in milvus.list_images()) == ["p1", "p1"]


def test_rewritten_and_copied_files_keep_size_and_first_added_time(tmp_path, tiny_encoder, images_factory) -> None:
    photos = images_factory(tmp_path / "photos", 3)
    embedded = Library(tmp_path / "lib", tiny_encoder)
    milvus = MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib", tiny_encoder)
    for library in (embedded, milvus):
        library.add(tmp_path / "photos", workers=0, progress=False)
    before = {r.path: r for r in milvus.list_images()}
    stat = photos[0].stat()
    os.utime(photos[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touched: same bytes
    copy = tmp_path / "photos" / "copy_of_second.png"
    shutil.copyfile(photos[1], copy)  # byte-identical copy: its bytes are held, so not decoded again
    for library in (embedded, milvus):
        report = library.add(tmp_path / "photos", workers=0, progress=False)
        assert (report.touched, report.added, report.embedded) == (1, 1, 0)
    for path in (str(photos[0]), str(copy)):
        want, got = embedded.store.image_by_path(path), milvus.get_path(path)
        assert want is not None and got is not None and want.width
        assert (got.width, got.height) == (want.width, want.height), path
    assert milvus.get_path(str(photos[0])).added_at == before[str(photos[0])].added_at
    embedded.close()
    milvus.close()


def test_a_store_another_process_holds_is_one_line_saying_so(tmp_path, images_factory, capfd) -> None:
    store, folder = _build(tmp_path, images_factory)
    fd = os.open(folder / "LOCK", os.O_RDWR)  # what a running `clipforge serve` on this store holds
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        err = _one_error_line(capfd, ["search", "a photo", "--store", store, "--library", str(tmp_path / "mlib")])
    finally:
        os.close(fd)
    assert "another process" in err and "one process at a time" in err and str(folder) in err
    assert "running the same command again" not in err


# (a garbage index file is derived data, rebuilt: tests/library/test_s57_milvus_index_repair.py)
@pytest.mark.parametrize("damage", ["truncated segment", "garbage segment", "no schema.json"])
def test_a_damaged_store_is_one_line_naming_the_file(tmp_path, images_factory, capfd, caplog, damage) -> None:
    store, folder = _build(tmp_path, images_factory)
    space = next(p for p in (folder / "collections").iterdir() if not p.name.endswith("_spaces"))
    if damage == "truncated segment":
        victim = next(space.rglob("*.parquet"))
        victim.write_bytes(victim.read_bytes()[:40])
    elif damage == "garbage segment":
        victim = next(space.rglob("*.parquet"))
        victim.write_bytes(os.urandom(victim.stat().st_size))
    else:
        victim = space / "schema.json"
        victim.unlink()
    err = _one_error_line(capfd, ["search", "a photo", "--store", store, "--library", str(tmp_path / "mlib")], caplog)
    assert "is damaged" in err and "running the same command again" not in err, err
    assert str(victim) in err or str(space) in err, err


@pytest.mark.parametrize("content", [b"", b"just some text\n", b"SQLite format 3\x00" + bytes(84)])
def test_a_file_at_the_store_path_is_not_a_milvus_lite_store(tmp_path, capfd, caplog, content) -> None:
    (tmp_path / "plain.db").write_bytes(content)
    err = _one_error_line(capfd, ["index", "stats", "--store", f"milvus-lite:{tmp_path}/plain.db", "--library",
                                  str(tmp_path / "mlib")], caplog)
    assert "not a milvus-lite store" in err and "running the same command again" not in err
    assert ("SQLite" in err) == content.startswith(b"SQLite")


@pytest.mark.parametrize("command", [["index", "stats"], ["search", "a photo"], ["tag", "--list"]])
def test_read_only_commands_create_no_store_at_a_mistyped_path(tmp_path, capfd, command) -> None:
    err = _one_error_line(capfd, [*command, "--store", f"milvus-lite:{tmp_path}/x/none.db", "--library",
                                  str(tmp_path / "mlib")])
    assert err.startswith("error: no library in") or "no library in" in err
    assert not (tmp_path / "x").exists()


def test_serve_without_create_creates_nothing_and_says_create(tmp_path) -> None:
    from clipforge.server.runner import ServeError, open_server_library

    with pytest.raises(ServeError, match="--create"):
        open_server_library(tmp_path / "mlib", store=f"milvus-lite:{tmp_path}/none.db", create=False)
    assert not (tmp_path / "none.db").exists()


def test_tag_top_k_over_the_milvus_capacity_is_said(tmp_path, images_factory, capsys) -> None:
    """`tag --top-k 20` kept 16 tags per image on Milvus without a word (the embedded store keeps 20)."""
    from clipforge.cli.main import main

    images_factory(tmp_path / "photos", 2)
    base = ["--store", f"milvus-lite:{tmp_path}/m.db", "--library", str(tmp_path / "mlib")]
    assert main(["index", "add", str(tmp_path / "photos"), *base, "--model", "test-vit-tiny", "--workers", "0",
                 "-q"]) == 0
    labels = ",".join(f"label{i}" for i in range(20))
    assert main(["tag", "--labels", labels, "--top-k", "20", "--templates", "simple", "-q", *base]) == 0
    assert "note: a Milvus library keeps 16 tags per image: top_k 20 was cut to 16" in capsys.readouterr().out
    assert main(["tag", "--labels", labels, "--top-k", "5", "--templates", "simple", "-q", *base]) == 0
    assert "keeps 16" not in capsys.readouterr().out


def test_no_grpc_fork_chatter_on_stderr(tmp_path, images_factory) -> None:
    """`index add --store milvus-lite:... --workers 1` printed gRPC core's INFO line "Other threads are currently
    calling into gRPC, skipping fork() handlers" on stderr as the decoding worker forked."""
    import os
    import subprocess
    import sys

    images_factory(tmp_path / "photos", 4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    run = subprocess.run([sys.executable, "-m", "clipforge", "index", "add", str(tmp_path / "photos"), "--model",
                          "test-vit-tiny", "--store", f"milvus-lite:{tmp_path}/m.db", "--library", str(tmp_path / "lib"),
                          "--workers", "1", "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "fork_posix" not in run.stderr and "skipping fork() handlers" not in run.stderr, run.stderr


def test_embedded_only_index_options_are_refused_on_milvus(tmp_path, images_factory, capsys) -> None:
    """`index add --index ivf --float16 --store milvus-lite:...` was accepted and both options ignored silently."""
    from clipforge.cli.main import main

    images_factory(tmp_path / "photos", 2)
    base = ["index", "add", str(tmp_path / "photos"), "--store", f"milvus-lite:{tmp_path}/m.db", "--library",
            str(tmp_path / "mlib"), "--model", "test-vit-tiny", "--workers", "0", "-q"]
    for extra in (["--index", "ivf"], ["--float16"]):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Milvus builds and keeps its own index" in err
    assert main(base) == 0
