"""Embedding export: clip-retrieval layout, read back, and a 2-rank run covering every file once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

from clipforge.library.export import export_embeddings, partition_name, rank_partitions, read_export


def test_export_layout_reads_back(tmp_path, tiny_encoder, images_factory, bad_files_factory):
    from clipforge.image import load_image

    good = images_factory(tmp_path / "photos", 7, formats=("png", "jpg"))
    bad_files_factory(tmp_path / "photos" / "bad", good[0])
    out = tmp_path / "out"
    report = export_embeddings([tmp_path / "photos"], out, tiny_encoder, shard_size=4, progress=False)
    # 11 files in 4-file partitions: 3 partitions, bad files counted per partition, not embedded.
    assert report.partitions == 3 and report.written == [0, 1, 2]
    assert (report.images, report.failed) == (7, 4)
    for i in range(3):
        assert (out / "img_emb" / f"img_emb_{i}.npy").is_file()
        meta = pq.read_table(out / "metadata" / f"metadata_{i}.parquet")
        assert meta.num_rows == len(np.load(out / "img_emb" / f"img_emb_{i}.npy"))
        assert meta.column_names[0] == "image_path"
    vectors, rows = read_export(out)
    assert vectors.shape == (7, 32) and np.load(out / "img_emb" / "img_emb_0.npy").dtype == np.float16
    assert sorted(r["image_path"] for r in rows) == sorted(str(p) for p in good)
    direct = tiny_encoder.encode_images([load_image(r["image_path"]) for r in rows])
    np.testing.assert_allclose(vectors, direct, atol=2e-3)
    stats = [json.loads((out / "stats" / f"stats_{i}.json").read_text()) for i in range(3)]
    assert sum(s["failed"] for s in stats) == 4 and all(s["model_fingerprint"] == tiny_encoder.fingerprint
                                                        for s in stats)
    assert json.loads((out / "manifest.json").read_text())["partitions"] == 3
    # Re-running skips finished partitions (resume after a crash).
    again = export_embeddings([tmp_path / "photos"], out, tiny_encoder, shard_size=4, progress=False)
    assert again.written == [] and again.skipped == [0, 1, 2]


def test_partition_naming_and_assignment():
    assert [partition_name(i, 12) for i in (0, 3, 11)] == ["00", "03", "11"]
    assert partition_name(0, 1) == "0"
    assert rank_partitions(5, 0, 2) == [0, 2, 4] and rank_partitions(5, 1, 2) == [1, 3]


def test_two_ranks_give_a_disjoint_complete_cover(tmp_path, images_factory):
    good = images_factory(tmp_path / "photos", 9, formats=("png", "jpg"))
    out = tmp_path / "out"
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
        env.update(RANK=str(rank), WORLD_SIZE="2")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "clipforge", "embed", str(tmp_path / "photos"), "--out", str(out),
             "--model", "test-vit-tiny", "--shard-size", "2", "--json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    reports = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr.decode()
        reports.append(json.loads(stdout))
    # 9 files in 2-file partitions = 5 partitions: rank 0 takes 0, 2, 4 and rank 1 takes 1, 3.
    assert [r["written"] for r in reports] == [[0, 2, 4], [1, 3]]
    assert [r["images"] for r in reports] == [5, 4]
    vectors, rows = read_export(out)
    paths = [r["image_path"] for r in rows]
    assert len(paths) == len(set(paths)) == 9 and set(paths) == {str(p) for p in good}
    assert vectors.shape == (9, 32)
    for i in range(5):
        assert json.loads((out / "stats" / f"stats_{i}.json").read_text())["rank"] == i % 2


def test_embed_writes_its_metadata_without_importing_pandas(tmp_path, images_factory):
    """pyarrow's `pa.array(list)` imports pandas (where installed) to look for pandas objects: a quarter of a
    second of every `embed` on a 2-core machine. The columns are built from buffers; the schema and the
    values, non-ASCII paths included, are what `pa.array` would give."""
    import pyarrow as pa
    import pytest

    from clipforge.library.export import _int32s, _strings

    pytest.importorskip("pandas")  # without pandas there is nothing to avoid importing
    for values in (["a", "bé/猫.jpg", ""], []):
        assert _strings(values).equals(pa.array(values, pa.string()))
    assert _int32s([3, 0, 2**31 - 1]).equals(pa.array([3, 0, 2**31 - 1], pa.int32()))
    images_factory(tmp_path / "ph猫", 3)
    script = ("import sys\nfrom clipforge.cli.main import main\n"
              f"assert main(['embed', {str(tmp_path / 'ph猫')!r}, '--out', {str(tmp_path / 'out')!r}, '--model', "
              "'test-vit-tiny', '--quiet', '--workers', '0']) == 0\nprint('pandas' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
    table = pq.read_table(tmp_path / "out" / "metadata" / "metadata_0.parquet")
    assert table.schema.types == [pa.string(), pa.string(), pa.int32(), pa.int32()]
    assert sorted(table.column("image_path").to_pylist()) == sorted(str(p) for p in (tmp_path / "ph猫").iterdir())
