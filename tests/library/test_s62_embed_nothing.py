"""`embed` of files none of which could be embedded exits 2; an archive is said to be one (audit 62, switcher 5).

A clip-retrieval user hands `embed` a webdataset shard (`shard0.tar`) or a zip of photos: each was "not an image
(unrecognised or unsupported format)", an empty partition was written and the command exited 0, so a script's
`set -e` went on with an empty `img_emb_0.npy`.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.image.loading import ImageLoadError, load_image

from .conftest import write_images

UNPACK = "not an image (archives are not read: unpack it first)"


def _archives(folder: Path, photo: Path) -> dict[str, str]:
    """One archive of each kind holding `photo`, named as people name them; file name -> what it is said to be."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "shard0.tar", "w") as tar:
        tar.add(photo, arcname="0000.jpg")
    with zipfile.ZipFile(folder / "photos.zip", "w") as archive:
        archive.write(photo, "0000.jpg")
    (folder / "shard1.tar.gz").write_bytes(gzip.compress((folder / "shard0.tar").read_bytes()))
    return {"shard0.tar": "a tar archive", "photos.zip": "a zip archive", "shard1.tar.gz": "a gzip file"}


def test_an_archive_is_said_to_be_one(tmp_path) -> None:
    photo = write_images(tmp_path / "photos", 1)[0]
    for name, kind in _archives(tmp_path / "archives", photo).items():
        path = tmp_path / "archives" / name
        for source in (path, path.read_bytes(), io.BytesIO(b"xx" + path.read_bytes())):
            if isinstance(source, io.BytesIO):
                source.seek(2)  # a stream read from where it stands, not from its start
            with pytest.raises(ImageLoadError) as refused:
                load_image(source)
            assert refused.value.reason == f"{kind}, {UNPACK}", name
    (tmp_path / "notes.jpg").write_bytes(b"just some text, not a photo\n" * 20)
    with pytest.raises(ImageLoadError) as refused:
        load_image(tmp_path / "notes.jpg")
    assert refused.value.reason == "not an image (unrecognised or unsupported format)"


@pytest.mark.parametrize("json_output", [False, True])
def test_embed_of_nothing_it_could_read_exits_2(tmp_path, capsys, json_output) -> None:
    photo = write_images(tmp_path / "photos", 1)[0]
    _archives(tmp_path / "archives", photo)
    shard = tmp_path / "archives" / "shard0.tar"
    out = tmp_path / "out"
    args = ["embed", str(shard), "--out", str(out), "--model", "clipforge-tiny", "--workers", "0", "-q"]
    assert main([*args, *(["--json"] if json_output else [])]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"error: no file could be embedded: all 1 failed (the reasons are in {out}/stats/stats_*.json)"
    if not json_output:
        assert err[0] == f"  failed: {shard}: a tar archive, {UNPACK}"

    assert main(["embed", str(photo), str(shard), "--out", str(tmp_path / "some"), "--model", "clipforge-tiny",
                 "--workers", "0", "-q"]) == 0  # one photo embedded: the failures are counted, as ever
    assert "1 embeddings, 1 failed" in capsys.readouterr().out


def test_a_resume_whose_last_partition_all_failed_finishes_the_job(tmp_path, capsys) -> None:
    """A job whose first partition holds a vector, stopped before its second was finished (its one file fails): the
    resume writes that partition and exits 0, as the same job run whole does (review 62: it said "no file could be
    embedded" about a job that holds embeddings)."""
    photos = tmp_path / "photos"
    write_images(photos, 1)
    (photos / "zz.jpg").write_bytes(b"not a photo at all\n" * 10)  # sorted last: the second partition
    out = tmp_path / "out"
    args = ["embed", str(photos), "--out", str(out), "--model", "clipforge-tiny", "--workers", "0", "-q",
            "--shard-size", "1"]
    assert main(args) == 0  # the whole job: one embedding, one failure
    assert "1 embeddings, 1 failed" in capsys.readouterr().out
    (out / "stats" / "stats_1.json").unlink()  # the second partition unfinished, as a kill leaves it
    assert main(args) == 0
    assert "wrote 1 of 2 partitions (1 already done" in capsys.readouterr().out
