"""`embed --out` resuming a folder written by the Dec-6 release (audit 60, upgrader finding 2).

That release (c04ae83) wrote job.json and the three files of each partition, but no `files_stamp` in the stats
files; HEAD wrote every such partition again (hours for a large job) while saying that "files in them changed
since". Here a job is built with this code and `files_stamp` is stripped from its stats files to play the old
release: verified by hand that this stripped form (JSON with indent 2, UTF-8, a final newline) is byte for byte
what c04ae83 writes for the same photos (and its npy, parquet and job.json equal this code's too). A partition so
written is kept and stamped when its records name exactly its files, none is newer than it, and each row's recorded
sha256 is that of its file's bytes now (a swapped folder or a retargeted symlink keeps old times); else it is written
again with a true reason, counted apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipforge.library.export import export_embeddings, read_export

SHARD = 2  # 6 photos: 3 partitions
LEGACY = "written by an earlier clipforge without file stamps"


def _files(out: Path, folder: str) -> list[Path]:
    return sorted((out / folder).iterdir())


def _export(photos: Path, out: Path, encoder):
    return export_embeddings([photos], out, encoder, shard_size=SHARD, progress=False, workers=0)


def _legacy_job(tmp_path: Path, images_factory, encoder) -> tuple[Path, Path, dict[str, bytes]]:
    """Photos, and an export of them as the Dec-6 release leaves it (no `files_stamp`); with the bytes of every
    output file as this code wrote them (stamps included)."""
    photos = tmp_path / "photos"
    images_factory(photos, 3 * SHARD)
    out = tmp_path / "out"
    assert _export(photos, out, encoder).written == [0, 1, 2]
    written = {f"{p.parent.name}/{p.name}": p.read_bytes() for d in ("img_emb", "metadata", "stats")
               for p in _files(out, d)}
    for path in _files(out, "stats"):
        stats = json.loads(path.read_text(encoding="utf-8"))
        del stats["files_stamp"]
        path.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return photos, out, written


def _partition_of(photos: Path, photo: Path) -> int:
    return sorted(map(str, photos.iterdir())).index(str(photo)) // SHARD


def _states(report) -> dict[str, list[int]]:
    data = report.to_dict()
    return {key: data[key] for key in
            ("written", "skipped", "stamped", "changed", "legacy_changed", "legacy_unlisted", "unreadable")}


def test_a_legacy_job_is_kept_whole_and_stamped(tmp_path, images_factory, tiny_encoder) -> None:
    photos, out, written = _legacy_job(tmp_path, images_factory, tiny_encoder)
    resumed = _export(photos, out, tiny_encoder)
    assert (resumed.written, resumed.images) == ([], 0)  # was [0, 1, 2], 6: "files in them changed since"
    assert _states(resumed) == {"written": [], "skipped": [0, 1, 2], "stamped": [0, 1, 2], "changed": [],
                                "legacy_changed": [], "legacy_unlisted": [], "unreadable": []}
    assert resumed.summary_line().startswith(
        f"wrote 0 of 3 partitions (3 already done, 3 of them {LEGACY}, checked and stamped now), 0 embeddings, "
        "0 failed in ")
    # vectors and rows untouched; each stats file now as this release writes it, stamp included
    assert {f"{p.parent.name}/{p.name}": p.read_bytes() for d in ("img_emb", "metadata", "stats")
            for p in _files(out, d)} == written
    assert (out / "manifest.json").exists()
    again = _export(photos, out, tiny_encoder)
    assert again.stamped == [] and again.skipped == [0, 1, 2] and again.written == []
    assert again.summary_line().startswith("wrote 0 of 3 partitions (3 already done), 0 embeddings")


def test_a_file_newer_than_its_legacy_partition_writes_that_one_again(tmp_path, images_factory,
                                                                      tiny_encoder) -> None:
    """A touched photo (a newer mtime), and a photo replaced by other bytes whose old mtime was put back (as
    `cp -p` / `rsync -t` do: only its status-change time says so): both partitions written again, the third kept."""
    photos, out, _ = _legacy_job(tmp_path, images_factory, tiny_encoder)
    names = sorted(photos.iterdir())
    touched, replaced = names[0], names[2]
    vectors_before, _ = read_export(out)
    later = (out / "img_emb" / "img_emb_0.npy").stat().st_mtime_ns + 10**9
    os.utime(touched, ns=(later, later))
    other = images_factory(tmp_path / "other", 1, seed=7, formats=(replaced.suffix[1:],))[0]
    info = replaced.stat()
    shutil.copyfile(other, replaced)
    os.utime(replaced, ns=(info.st_atime_ns, info.st_mtime_ns))  # mtime as before: older than the partition
    resumed = _export(photos, out, tiny_encoder)
    assert resumed.written == [0, 1]  # was [0, 1, 2]
    assert _states(resumed) == {"written": [0, 1], "skipped": [2], "stamped": [2], "changed": [],
                                "legacy_changed": [0, 1], "legacy_unlisted": [], "unreadable": []}
    assert resumed.images == 4
    line = resumed.summary_line()
    assert (f"(1 already done, 1 of them {LEGACY}, checked and stamped now; 2 written again, as they were "
            f"{LEGACY}, and files in them changed since)") in line
    assert "size or modification time" not in line  # no stamp was compared
    vectors, rows = read_export(out)
    k = next(i for i, r in enumerate(rows) if r["image_path"] == str(replaced))
    assert rows[k]["sha256"] == hashlib.sha256(replaced.read_bytes()).hexdigest()
    assert not np.array_equal(vectors[k], vectors_before[k])  # its new content embedded
    j = next(i for i, r in enumerate(rows) if r["image_path"] == str(touched))
    np.testing.assert_array_equal(vectors[j], vectors_before[j])  # same bytes, same vector
    # the rewritten partitions carry stamps: a further resume is a plain one
    assert _states(_export(photos, out, tiny_encoder))["skipped"] == [0, 1, 2]


def test_a_legacy_partition_naming_other_files_is_never_trusted(tmp_path, images_factory, tiny_encoder) -> None:
    """Partition 1's metadata names a file of partition 0 in place of its own (the job's list is the same, so
    job.json passes): its vectors cannot be the partition's, so it is written again, with that reason."""
    photos, out, _ = _legacy_job(tmp_path, images_factory, tiny_encoder)
    meta = out / "metadata" / "metadata_1.parquet"
    table = pq.read_table(meta)
    paths = table.column("image_path").to_pylist()
    own = paths[0]
    paths[0] = str(sorted(photos.iterdir())[0])
    pq.write_table(table.set_column(0, "image_path", pa.array(paths, pa.string())), meta)
    resumed = _export(photos, out, tiny_encoder)
    assert resumed.written == [1]  # was [0, 1, 2]
    assert _states(resumed) == {"written": [1], "skipped": [0, 2], "stamped": [0, 2], "changed": [],
                                "legacy_changed": [], "legacy_unlisted": [1], "unreadable": []}
    assert (f"; 1 written again, as they were {LEGACY}, and their records do not name exactly their files now)"
            in resumed.summary_line())
    assert pq.read_table(meta).column("image_path").to_pylist()[0] == own
    assert "files_stamp" in json.loads((out / "stats" / "stats_1.json").read_text(encoding="utf-8"))


def test_a_legacy_partition_whose_counts_disagree_or_a_broken_stats_file(tmp_path, images_factory,
                                                                        tiny_encoder) -> None:
    """Stats saying 3 files for a partition of 2 vouch for no list; a stats file that is not JSON is said so (it
    was "files in them changed since")."""
    photos, out, _ = _legacy_job(tmp_path, images_factory, tiny_encoder)
    stats_path = out / "stats" / "stats_0.json"
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    stats["files"] = 3
    stats_path.write_text(json.dumps(stats), encoding="utf-8")
    (out / "stats" / "stats_2.json").write_text("{not json", encoding="utf-8")
    resumed = _export(photos, out, tiny_encoder)
    assert "as their stats or metadata files could not be read" in resumed.summary_line()  # was "files changed"
    assert _states(resumed) == {"written": [0, 2], "skipped": [1], "stamped": [1], "changed": [],
                                "legacy_changed": [], "legacy_unlisted": [0], "unreadable": [2]}
    assert resumed.summary_line().startswith(
        f"wrote 2 of 3 partitions (1 already done, 1 of them {LEGACY}, checked and stamped now; 1 written again, as "
        f"they were {LEGACY}, and their records do not name exactly their files now; 1 written again, as their "
        "stats or metadata files could not be read), 4 embeddings, 0 failed in ")


def _old_times(files: list[Path], before: int) -> None:
    for path in files:
        os.utime(path, ns=(before, before))


def test_a_folder_swapped_for_another_version_is_embedded_again(tmp_path, images_factory, tiny_encoder) -> None:
    """Review 60 defect 2: ``mv photos photos_v1; mv photos_v2 photos`` where photos_v2 holds other photos under the
    same names, made (and dated back) before the embed run. Renaming a folder changes no time of its files, so every
    file looks older than its partition; only the recorded sha256 of each row shows the bytes are others. Was: all
    three kept and stamped, so the old photos' vectors stood for the new ones for good."""
    v2 = images_factory(tmp_path / "photos_v2", 3 * SHARD, seed=7)
    _old_times(v2, v2[0].stat().st_mtime_ns - 60 * 10**9)  # its ctime stays its creation: before the export
    photos, out, _ = _legacy_job(tmp_path, images_factory, tiny_encoder)
    assert [p.name for p in sorted(photos.iterdir())] == [p.name for p in v2]
    photos.rename(tmp_path / "photos_v1")
    (tmp_path / "photos_v2").rename(photos)
    resumed = _export(photos, out, tiny_encoder)
    assert _states(resumed) == {"written": [0, 1, 2], "skipped": [], "stamped": [], "changed": [],
                                "legacy_changed": [0, 1, 2], "legacy_unlisted": [], "unreadable": []}
    assert resumed.summary_line().startswith(
        f"wrote 3 of 3 partitions (0 already done; 3 written again, as they were {LEGACY}, and files in them "
        "changed since), 6 embeddings, 0 failed in ")
    vectors, rows = read_export(out)
    assert [r["sha256"] for r in rows] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(
        photos.iterdir())]
    assert _export(photos, tmp_path / "fresh", tiny_encoder).written == [0, 1, 2]
    fresh, fresh_rows = read_export(tmp_path / "fresh")
    assert [r["image_path"] for r in rows] == [r["image_path"] for r in fresh_rows]
    np.testing.assert_array_equal(vectors, fresh)  # the swapped-in photos' own vectors


def test_a_retargeted_symlink_writes_only_its_partition_again(tmp_path, images_factory, tiny_encoder) -> None:
    """The photos are symlinks (``os.stat`` follows them); one is pointed at an older file of other bytes. Its
    partition is written again; the others are hashed, shown the same bytes, and kept."""
    store = images_factory(tmp_path / "store", 3 * SHARD)
    other = images_factory(tmp_path / "other", 1, seed=7, formats=(store[3].suffix[1:],))[0]
    photos = tmp_path / "photos"
    photos.mkdir()
    for target in store:
        (photos / target.name).symlink_to(target)
    out = tmp_path / "out"
    assert _export(photos, out, tiny_encoder).written == [0, 1, 2]
    for path in _files(out, "stats"):
        stats = json.loads(path.read_text(encoding="utf-8"))
        del stats["files_stamp"]
        path.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    vectors_before, _ = read_export(out)
    link = photos / store[3].name
    link.unlink()
    link.symlink_to(other)
    resumed = _export(photos, out, tiny_encoder)
    assert _states(resumed) == {"written": [1], "skipped": [0, 2], "stamped": [0, 2], "changed": [],
                                "legacy_changed": [1], "legacy_unlisted": [], "unreadable": []}
    vectors, rows = read_export(out)
    assert rows[3]["sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    assert not np.array_equal(vectors[3], vectors_before[3])
    np.testing.assert_array_equal(vectors[[0, 1, 2, 4, 5]], vectors_before[[0, 1, 2, 4, 5]])


def test_a_legacy_row_without_a_recorded_sha256_proves_nothing(tmp_path, images_factory, tiny_encoder) -> None:
    """A metadata row whose sha256 is null (not as any clipforge writes it): its partition is written again."""
    photos, out, _ = _legacy_job(tmp_path, images_factory, tiny_encoder)
    meta = out / "metadata" / "metadata_2.parquet"
    table = pq.read_table(meta)
    shas = table.column("sha256").to_pylist()
    shas[1] = None
    pq.write_table(table.set_column(1, "sha256", pa.array(shas, pa.string())), meta)
    resumed = _export(photos, out, tiny_encoder)
    assert _states(resumed) == {"written": [2], "skipped": [0, 1], "stamped": [0, 1], "changed": [],
                                "legacy_changed": [], "legacy_unlisted": [], "unreadable": [2]}
    assert pq.read_table(meta).column("sha256").to_pylist()[1] == hashlib.sha256(
        sorted(photos.iterdir())[5].read_bytes()).hexdigest()
