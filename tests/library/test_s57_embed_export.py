"""`embed` (audit 57): a resume writes again a partition whose photo was edited in place (its vectors and sha256
were kept, stale); a write the disk or `ulimit -f` refuses is one line naming the file and leaves no partition cut
short in place; names that are not UTF-8 are written losslessly (``b64:``); FIFOs and devices named like images
are failures with `index add`'s reason, not silently dropped."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from clipforge.cli.main import main
from clipforge.library.export import export_embeddings, read_export

TINY = ["--model", "test-vit-tiny", "--device", "cpu", "--workers", "0", "-q"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_photo_edited_in_place_is_embedded_again_on_resume(tmp_path, images_factory, tiny_encoder) -> None:
    photos = images_factory(tmp_path / "photos", 3)
    other = images_factory(tmp_path / "other", 1, seed=7)[0]
    out = tmp_path / "out"
    first = export_embeddings([tmp_path / "photos"], out, tiny_encoder, shard_size=2, progress=False, workers=0)
    assert first.written == [0, 1] and first.changed == []
    old_vectors, _ = read_export(out)
    edited = next(p for p in photos if p.suffix == other.suffix)  # same name, new content (and size)
    shutil.copyfile(other, edited)
    again = export_embeddings([tmp_path / "photos"], out, tiny_encoder, shard_size=2, progress=False, workers=0)
    part = sorted(map(str, photos)).index(str(edited)) // 2
    assert again.changed == [part] and again.written == [part] and again.skipped == [1 - part]
    assert "; 1 written again, as files in them changed since (size or modification time)" in again.summary_line()
    vectors, rows = read_export(out)
    row = next(k for k, r in enumerate(rows) if r["image_path"] == str(edited))
    assert rows[row]["sha256"] == _sha(edited)
    fresh = export_embeddings([other], tmp_path / "fresh", tiny_encoder, progress=False, workers=0)
    assert fresh.images == 1
    np.testing.assert_array_equal(vectors[row], read_export(tmp_path / "fresh")[0][0])
    assert not np.array_equal(vectors[row], old_vectors[row])
    # unchanged now: nothing is written again, and the manifest is back
    third = export_embeddings([tmp_path / "photos"], out, tiny_encoder, shard_size=2, progress=False, workers=0)
    assert third.written == [] and third.changed == [] and (out / "manifest.json").exists()


def test_a_same_size_edit_with_a_new_mtime_counts_too(tmp_path, images_factory, tiny_encoder) -> None:
    photo = images_factory(tmp_path / "photos", 1)[0]
    out = tmp_path / "out"
    export_embeddings([tmp_path / "photos"], out, tiny_encoder, progress=False, workers=0)
    info = photo.stat()
    os.utime(photo, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    again = export_embeddings([tmp_path / "photos"], out, tiny_encoder, progress=False, workers=0)
    assert again.changed == [0] and again.written == [0]


_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))
from clipforge.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_file_size_limit_is_one_line_naming_the_file_and_leaves_nothing_cut(tmp_path, images_factory) -> None:
    """40 vectors of 32 float16 are 2688 bytes of npy, over a 1500-byte `ulimit -f`: numpy's C writer cut the file
    at 1500 bytes without an error and it was renamed into place (a bigger one: "256000 requested and 153536
    written", nothing else)."""
    images_factory(tmp_path / "photos", 40)
    out = tmp_path / "out"
    args = ["embed", str(tmp_path / "photos"), "--out", str(out), *TINY]
    env = {**os.environ, "CLIPFORGE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", _LIMITED, *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    npy = out / "img_emb" / "img_emb_0.npy"
    assert done.stderr == (
        f"error: could not write {npy}: the file reached this process's file-size limit (`ulimit -f`); the "
        "partitions written before are kept: raise the limit and run the same command again to write the rest\n")
    assert not npy.exists() and not (out / "stats" / "stats_0.json").exists()
    assert [p.name for p in out.rglob("*") if p.is_file()] == ["job.json"]  # no temporary left either
    assert main(args) == 0  # the same command, without the limit, finishes
    vectors, rows = read_export(out)
    assert len(vectors) == len(rows) == 40


def test_names_that_are_not_utf8_are_written_losslessly(tmp_path, images_factory, capsys) -> None:
    src = images_factory(tmp_path / "src", 2, formats=("jpg",))
    photos = tmp_path / "nb"
    photos.mkdir()
    raw = os.fsencode(photos) + b"/bad_\xff\xfe_name.jpg"
    escaped = photos / "bad_\\xff\\xfe_name.jpg"  # a real file named with the backslash text
    shutil.copyfile(src[0], os.fsdecode(raw))
    shutil.copyfile(src[1], escaped)
    broken = os.fsencode(photos) + b"/broken_\xe9.jpg"
    Path(os.fsdecode(broken)).write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert main(["embed", str(photos), "--out", str(out), *TINY, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    paths = pq.read_table(out / "metadata" / "metadata_0.parquet").column("image_path").to_pylist()
    b64 = "b64:" + base64.b64encode(raw).decode("ascii")
    assert sorted(paths) == sorted([b64, str(escaped)])
    shas = dict(zip(paths, pq.read_table(out / "metadata" / "metadata_0.parquet").column("sha256").to_pylist(),
                    strict=True))
    assert shas[b64] == _sha(src[0]) and shas[str(escaped)] == _sha(src[1])
    failed = "b64:" + base64.b64encode(broken).decode("ascii")
    assert [f["path"] for f in report["failures"]] == [failed]
    stats = json.loads((out / "stats" / "stats_0.json").read_text())
    assert [f["path"] for f in stats["failures"]] == [failed]
    from clipforge.library.dbfile import path_text, text_path

    assert text_path(b64) == os.fsdecode(raw) and path_text(os.fsdecode(raw)) == b64
    assert text_path(str(escaped)) == str(escaped)
    # the line people read keeps the readable escapes
    assert main(["embed", str(photos), "--out", str(tmp_path / "out2"), *TINY]) == 0
    assert f"  failed: {photos}/broken_\\xe9.jpg: " in capsys.readouterr().err


def test_fifos_and_devices_named_like_images_are_failures_as_index_add_says(tmp_path, images_factory,
                                                                           capsys) -> None:
    photos = tmp_path / "h2"
    images_factory(photos, 1)
    os.mkfifo(photos / "pipe.jpg")
    os.symlink("/dev/zero", photos / "zero_dev.jpg")
    out = tmp_path / "out"
    assert main(["embed", str(photos), "--out", str(out), *TINY[:-1]]) == 0
    captured = capsys.readouterr()
    assert ", 1 embeddings, 2 failed in " in captured.out
    assert [line for line in captured.err.splitlines() if "failed:" in line] == [
        f"  failed: {photos}/pipe.jpg: not a regular file (a FIFO)",
        f"  failed: {photos}/zero_dev.jpg: not a regular file (a character device)",
    ]
    stats = json.loads((out / "stats" / "stats_0.json").read_text())
    assert (stats["files"], stats["embedded"], stats["failed"]) == (3, 1, 2)
    # index add says the same of them
    assert main(["index", "add", str(photos), "--library", str(tmp_path / "lib"), *TINY[:-1]]) == 0
    err = capsys.readouterr().err
    assert f"{photos}/pipe.jpg: not a regular file (a FIFO)" in err
    assert f"{photos}/zero_dev.jpg: not a regular file (a character device)" in err


def test_a_folder_holding_only_a_fifo_is_not_nothing_to_embed(tmp_path, capsys) -> None:
    photos = tmp_path / "only"
    photos.mkdir()
    os.mkfifo(photos / "pipe.png")
    assert main(["embed", str(photos), "--out", str(tmp_path / "out"), *TINY]) == 2  # every file failed (s62)
    assert capsys.readouterr().err == (f"  failed: {photos}/pipe.png: not a regular file (a FIFO)\nerror: no file "
                                       f"could be embedded: all 1 failed (the reasons are in {tmp_path}/out/stats/"
                                       "stats_*.json)\n")


def test_a_rewrite_stopped_between_its_two_files_never_reads_as_a_partition(tmp_path, images_factory, tiny_encoder,
                                                                              monkeypatch) -> None:
    """A rewrite killed between writing the new `img_emb_N.npy` and `metadata_N.parquet` left the new vectors
    beside the old rows (same count), and `read_export` returned the pair: rows describing the old picture (a
    review). The old files now go with the stats file when the rewrite starts, and a partition without its stats
    file (written last) is refused as unfinished."""
    import clipforge.library.export_layout as layout

    photos = images_factory(tmp_path / "photos", 3)
    other = images_factory(tmp_path / "other", 1, seed=7)[0]
    out = tmp_path / "out"
    export_embeddings([tmp_path / "photos"], out, tiny_encoder, shard_size=2, progress=False, workers=0)
    edited = next(p for p in photos if p.suffix == other.suffix)
    shutil.copyfile(other, edited)

    class Killed(BaseException):  # what kill -9 leaves: nothing after this point runs
        pass

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(pq, "write_table", killed)  # the new npy is written, its parquet never
    with contextlib.suppress(Killed):
        export_embeddings([tmp_path / "photos"], out, tiny_encoder, shard_size=2, progress=False, workers=0)
    monkeypatch.undo()
    part = layout.partition_name(sorted(map(str, photos)).index(str(edited)) // 2, 2)
    assert not (out / "metadata" / f"metadata_{part}.parquet").exists()  # the old rows went with the rewrite
    try:
        read_export(out)
        raise AssertionError("an unfinished partition was read")
    except (ValueError, FileNotFoundError) as refused:
        assert "not finished" in str(refused) or "metadata" in str(refused), refused
    export_embeddings([tmp_path / "photos"], out, tiny_encoder, shard_size=2, progress=False, workers=0)
    _, rows = read_export(out)
    assert next(r for r in rows if r["image_path"] == str(edited))["sha256"] == _sha(edited)
