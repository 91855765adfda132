"""`embed --out` resume (audit 61 chaos, finding 4) and `index rebuild` that cannot save (finding 5).

A partition whose npy or parquet was emptied or cut short (a copy stopped midway, a disk problem) was kept by a
resume as "already done" (rc 0, manifest complete) and then failed to load (`EOFError: No data left in file`,
`ArrowInvalid: Parquet file size is 0 bytes`): only its stats file's stamp was compared. Now its npy header,
parquet footer and recorded sizes are checked, and a damaged partition is written again, counted and said. A
partition written by the release before the sizes were recorded is checked by header and footer and kept, never
embedded again. `index rebuild` that could not save its index said "keeping it in memory only" and exited 0.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from clipforge.cli.main import main
from clipforge.library.export import export_embeddings, read_export

SHARD = 2  # 6 photos: 3 partitions
TINY = ["--model", "test-vit-tiny", "--device", "cpu", "--workers", "0", "-q"]
DAMAGED = "written again, as their vectors or metadata files were damaged (emptied, cut short, or not as their stats record)"


def _export(photos: Path, out: Path, encoder):
    return export_embeddings([photos], out, encoder, shard_size=SHARD, progress=False, workers=0)


def _job(tmp_path: Path, images_factory, encoder) -> tuple[Path, Path, np.ndarray]:
    photos = tmp_path / "photos"
    images_factory(photos, 3 * SHARD)
    out = tmp_path / "out"
    assert _export(photos, out, encoder).written == [0, 1, 2]
    return photos, out, read_export(out)[0]


def _outputs(out: Path) -> dict[str, bytes]:
    return {f"{p.parent.name}/{p.name}": p.read_bytes() for d in ("img_emb", "metadata", "stats")
            for p in sorted((out / d).iterdir())}


def _cut(path: Path, size: int) -> None:
    os.truncate(path, size)


def _npy_size(out: Path, name: str = "1") -> int:
    return (out / "img_emb" / f"img_emb_{name}.npy").stat().st_size


@pytest.mark.parametrize(("damage", "said"), [
    (lambda out: _cut(out / "img_emb" / "img_emb_1.npy", 0), "img_emb/img_emb_1.npy is empty"),
    (lambda out: _cut(out / "metadata" / "metadata_1.parquet", 0), "metadata/metadata_1.parquet is empty"),
    (lambda out: _cut(out / "img_emb" / "img_emb_1.npy", 60),
     "img_emb/img_emb_1.npy has no readable npy header (EOF: reading array header, expected 118 bytes got 50)"),
    (lambda out: _cut(out / "img_emb" / "img_emb_1.npy", 200), "img_emb/img_emb_1.npy is cut short (200 of its 256 bytes)"),
    (lambda out: _cut(out / "metadata" / "metadata_1.parquet", (out / "metadata" / "metadata_1.parquet").stat().st_size // 2),
     "metadata/metadata_1.parquet has no parquet footer at its end (cut short, or not a parquet file)"),
    (lambda out: (out / "img_emb" / "img_emb_1.npy").open("ab").write(b"\0" * 32),
     "img_emb/img_emb_1.npy holds 32 bytes after its vectors"),
], ids=["npy-empty", "parquet-empty", "npy-cut-in-header", "npy-cut-in-vectors", "parquet-cut-in-half",
        "npy-extended"])
def test_a_damaged_partition_is_written_again_and_said(tmp_path, images_factory, tiny_encoder, damage, said) -> None:
    photos, out, before = _job(tmp_path, images_factory, tiny_encoder)
    assert _npy_size(out) == 128 + 2 * 32 * 2  # the header and 2 float16 vectors of the test model's 32 dims
    whole = _outputs(out)
    damage(out)
    resumed = _export(photos, out, tiny_encoder)
    assert (resumed.written, resumed.skipped, resumed.damaged, resumed.damage) == ([1], [0, 2], [1], [said])
    assert (resumed.changed, resumed.unreadable, resumed.images) == ([], [], 2)  # was: [], 0 ("10 already done")
    assert resumed.summary_line().startswith(
        f"wrote 1 of 3 partitions (2 already done; 1 {DAMAGED}: {said}), 2 embeddings, 0 failed in ")
    assert resumed.to_dict()["damage"] == [said]
    vectors, rows = read_export(out)  # loads again: was EOFError / ArrowInvalid
    np.testing.assert_array_equal(vectors, before)
    assert len(rows) == 6
    assert _outputs(out) == whole  # the same bytes as the first run wrote (its sizes recorded alike)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["ranks"][0]["damaged"] == [1]
    assert _export(photos, out, tiny_encoder).summary_line().startswith("wrote 0 of 3 partitions (3 already done), 0 ")


def test_sizes_are_recorded_and_a_parquet_of_another_size_is_written_again(tmp_path, images_factory,
                                                                          tiny_encoder) -> None:
    """A parquet rewritten with the same rows (its footer reads, its count is right) but not the bytes written: only
    the recorded size shows it."""
    photos, out, _ = _job(tmp_path, images_factory, tiny_encoder)
    stats = json.loads((out / "stats" / "stats_2.json").read_text(encoding="utf-8"))
    meta = out / "metadata" / "metadata_2.parquet"
    assert list(stats)[-1] == "output_bytes"
    assert stats["output_bytes"] == {"img_emb": _npy_size(out, "2"), "metadata": meta.stat().st_size}
    written = meta.stat().st_size
    pq.write_table(pq.read_table(meta), meta, compression="none")
    now = meta.stat().st_size
    assert now != written
    resumed = _export(photos, out, tiny_encoder)
    said = f"metadata/metadata_2.parquet is {now} bytes, where it was {written} when written"
    assert (resumed.written, resumed.damaged, resumed.damage) == ([2], [2], [said])


def test_two_damaged_partitions_are_counted_with_the_first_said(tmp_path, images_factory, tiny_encoder) -> None:
    photos, out, before = _job(tmp_path, images_factory, tiny_encoder)
    _cut(out / "img_emb" / "img_emb_0.npy", 0)
    _cut(out / "metadata" / "metadata_2.parquet", 0)
    resumed = _export(photos, out, tiny_encoder)
    assert (resumed.written, resumed.skipped, resumed.damaged) == ([0, 2], [1], [0, 2])
    assert resumed.summary_line().startswith(
        f"wrote 2 of 3 partitions (1 already done; 2 {DAMAGED}, e.g. img_emb/img_emb_0.npy is empty), 4 embeddings")
    np.testing.assert_array_equal(read_export(out)[0], before)


def _as_previous_release(out: Path) -> None:
    """The stats files as the release before this one wrote them: a stamp, no `output_bytes`."""
    for path in sorted((out / "stats").iterdir()):
        stats = json.loads(path.read_text(encoding="utf-8"))
        del stats["output_bytes"]
        path.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def test_partitions_of_the_previous_release_are_kept_without_embedding(tmp_path, images_factory, tiny_encoder,
                                                                       monkeypatch) -> None:
    """No recorded sizes: header and footer checked, the whole partitions kept as they are (stats untouched), only the
    damaged one written again."""
    photos, out, before = _job(tmp_path, images_factory, tiny_encoder)
    _as_previous_release(out)
    kept = _outputs(out)
    import clipforge.library.export as export

    real, embedded = export._embed_partition, []

    def counting(encoder, files, *args, **kwargs):
        embedded.append(len(files))
        return real(encoder, files, *args, **kwargs)

    monkeypatch.setattr(export, "_embed_partition", counting)
    resumed = _export(photos, out, tiny_encoder)
    assert (resumed.written, resumed.skipped, resumed.damaged, embedded) == ([], [0, 1, 2], [], [])
    assert _outputs(out) == kept
    _cut(out / "metadata" / "metadata_0.parquet", 100)
    resumed = _export(photos, out, tiny_encoder)
    assert (resumed.written, resumed.damaged, embedded) == ([0], [0], [2])
    assert resumed.damage == ["metadata/metadata_0.parquet has no parquet footer at its end (cut short, or not a "
                              "parquet file)"]
    np.testing.assert_array_equal(read_export(out)[0], before)
    stats = json.loads((out / "stats" / "stats_0.json").read_text(encoding="utf-8"))
    assert "output_bytes" in stats  # written again by this release: its sizes recorded


def test_a_damaged_partition_of_an_unstamped_release_is_said_as_damaged(tmp_path, images_factory,
                                                                        tiny_encoder) -> None:
    """A partition of the Dec-6 release (no stamp, no sizes) with its npy emptied: damaged, not "unreadable" nor
    "changed"; the other two are proven by their sha256s and stamped, their sizes recorded with the stamp."""
    photos, out, before = _job(tmp_path, images_factory, tiny_encoder)
    for path in sorted((out / "stats").iterdir()):
        stats = json.loads(path.read_text(encoding="utf-8"))
        del stats["files_stamp"], stats["output_bytes"]
        path.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _cut(out / "img_emb" / "img_emb_2.npy", 0)
    resumed = _export(photos, out, tiny_encoder)
    assert (resumed.written, resumed.stamped, resumed.damaged, resumed.unreadable, resumed.legacy_changed) == (
        [2], [0, 1], [2], [], [])
    assert resumed.damage == ["img_emb/img_emb_2.npy is empty"]
    np.testing.assert_array_equal(read_export(out)[0], before)
    stats = json.loads((out / "stats" / "stats_0.json").read_text(encoding="utf-8"))
    assert list(stats)[-1] == "output_bytes" and "files_stamp" in stats
    assert stats["output_bytes"]["img_emb"] == _npy_size(out, "0")


def test_the_cli_resume_says_it(tmp_path, images_factory, capsys) -> None:
    photos = tmp_path / "photos"
    images_factory(photos, 3)
    out = tmp_path / "out"
    assert main(["embed", str(photos), "--out", str(out), *TINY, "--shard-size", "2"]) == 0
    _cut(out / "img_emb" / "img_emb_1.npy", 0)
    capsys.readouterr()
    assert main(["embed", str(photos), "--out", str(out), *TINY, "--shard-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote 1 of 2 partitions (1 already done; 1 {DAMAGED}: img_emb/img_emb_1.npy is "
                              "empty), 1 embeddings, 0 failed in ")
    assert len(read_export(out)[1]) == 3


# -- index rebuild that cannot save (finding 5) -----------------------------------------------------------------------


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


def _library(tmp_path: Path, images_factory, encoder, count: int) -> Path:
    """A library of `count` photos whose index file is gone (so that a rebuild has one to write)."""
    from clipforge.library import Library

    images_factory(tmp_path / "photos", count)
    with Library(tmp_path / "lib", encoder) as library:
        library.add([tmp_path / "photos"], workers=0, progress=False)
    for path in (tmp_path / "lib" / "index").glob("*"):
        path.unlink()
    return tmp_path / "lib"


def test_index_rebuild_that_cannot_save_the_index_fails_in_one_line(tmp_path, images_factory, tiny_encoder,
                                                                   capsys) -> None:
    """Under a file-size limit of 36 KiB, what opening the database writes fits (SQLite's -shm file is 32 KiB) but
    the index of 320 vectors of 32 dims (~44 KB) does not: exit 2 (was 0), one line naming the file and the cause,
    nothing half-written left. Without the limit the same command saves it."""
    library = _library(tmp_path, images_factory, tiny_encoder, 320)
    import clipforge

    env = {**os.environ, "PYTHONPATH": str(Path(clipforge.__file__).resolve().parents[1])}  # the code under test
    run = subprocess.run([sys.executable, "-m", "clipforge", "index", "rebuild", "--library", str(library)],
                         capture_output=True, text=True, env=env, preexec_fn=_limit_file_size(36 * 1024), timeout=120)
    assert run.returncode == 2, run.stderr  # was 0, with "keeping it in memory only"
    assert list((library / "index").iterdir()) == []  # nothing half-written left
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: could not write the index {library}/index/"), lines
    assert lines[0].endswith(".faiss: the file reached this process's file-size limit (`ulimit -f`); the index was "
                             "not saved (searches still work meanwhile, each building it in memory): raise the limit "
                             "and run `clipforge index rebuild` again")
    assert run.stdout == ""
    assert main(["index", "rebuild", "--library", str(library)]) == 0
    assert capsys.readouterr().out.startswith("rebuilt the flat index of 320 vectors in ")
    saved = list((library / "index").iterdir())
    assert len(saved) == 1 and saved[0].suffix == ".faiss" and saved[0].stat().st_size > 36 * 1024


def _unwritable_index_folder(library: Path) -> None:
    """The index folder replaced by a file: no index can be written there (what a read-only folder does, as a test
    run by root cannot make one)."""
    (library / "index").rmdir()
    (library / "index").write_bytes(b"")


def test_index_rebuild_that_cannot_write_the_index_for_another_reason_fails_too(tmp_path, images_factory,
                                                                                tiny_encoder, capsys) -> None:
    library = _library(tmp_path, images_factory, tiny_encoder, 4)
    _unwritable_index_folder(library)
    assert main(["index", "rebuild", "--library", str(library)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: could not write the index {library}/index/")
    assert err[0].endswith(f".faiss: {library}/index is a file where a folder is expected; the index was not saved "
                           "(searches still work meanwhile, each building it in memory): move that file aside and run "
                           "`clipforge index rebuild` again")


def test_a_search_that_cannot_save_the_index_warns_and_answers(tmp_path, images_factory, tiny_encoder,
                                                               caplog) -> None:
    """A search rebuilds the index on the way: its answers are right from memory, so a save that fails is a warning
    (the next run saves the index), never a failed search."""
    from clipforge.library import Library

    library = _library(tmp_path, images_factory, tiny_encoder, 4)
    _unwritable_index_folder(library)
    with Library(library, tiny_encoder) as opened, caplog.at_level("WARNING"):
        hits = opened.search("a photo", top_k=2)
    assert len(hits) == 2
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and warned[0].startswith(f"could not save index {library}/index/")
    assert warned[0].endswith(f".faiss ({library}/index is a file where a folder is expected); keeping it in memory "
                              "only")
