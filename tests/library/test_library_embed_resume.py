"""`embed` resumes only its own job: another model, other settings or another file list into the same --out are
refused before anything is touched; --overwrite replaces the old job without ever leaving a mix; a run killed
with SIGKILL at any point resumes; the files that failed are named."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipforge.cli.main import main
from clipforge.library.export import ExportMismatch, export_embeddings, read_export

MODEL, OTHER = "test-vit-tiny", "test-rn-tiny"  # seeded random weights: two fingerprints


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` with its bytes and mtime: what "untouched" means."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _stats(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "stats").glob("stats_*.json"))]


def _export(photos: Path, out: Path, model: object = MODEL, **kwargs):
    kwargs.setdefault("shard_size", 2)
    return export_embeddings([photos], out, model, progress=False, workers=0, **kwargs)


def _killed(script: str, tmp_path: Path) -> None:
    """Run `script` in a fresh interpreter that SIGKILLs itself where the script says; it must die of it."""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def test_cli_resume_with_another_model_is_refused_without_touching_out(tmp_path, images_factory, capsys):
    images_factory(tmp_path / "photos", 5)
    out = tmp_path / "out"
    base = ["embed", str(tmp_path / "photos"), "--out", str(out), "--shard-size", "2", "--workers", "0", "-q"]
    assert main([*base, "--model", MODEL]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main([*base, "--model", OTHER]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {out} holds another embed job")
    job = json.loads((out / "job.json").read_text())
    assert f"model {MODEL} (fingerprint {job['model_fingerprint'][:12]}) there, {OTHER}" in err
    assert "--overwrite" in err
    assert _snapshot(out) == before  # manifest included: not rewritten for a run that did not happen
    # The same job resumes: every partition is already done.
    assert main([*base, "--model", MODEL]) == 0
    assert capsys.readouterr().out.startswith("wrote 0 of 3 partitions (3 already done)")  # no "rank 0/1: " alone


def test_resume_after_a_photo_was_added_is_refused_and_the_manifest_keeps_its_count(tmp_path, images_factory,
                                                                                      tiny_encoder):
    images_factory(tmp_path / "photos", 4)
    out = tmp_path / "out"
    _export(tmp_path / "photos", out, tiny_encoder)
    before = _snapshot(out)
    images_factory(tmp_path / "photos", 1, seed=9, prefix="new")
    with pytest.raises(ExportMismatch, match=r"a list of 4 files there, 5 files now"):
        _export(tmp_path / "photos", out, tiny_encoder)
    assert _snapshot(out) == before
    manifest = json.loads((out / "manifest.json").read_text())
    vectors, _ = read_export(out)
    assert manifest["files"] == len(vectors) == 4
    # A renamed photo keeps the count but not the list.
    (tmp_path / "photos" / "new000.png").unlink()
    (tmp_path / "photos" / "img000.png").rename(tmp_path / "photos" / "img000-renamed.png")
    with pytest.raises(ExportMismatch, match=r"a list of 4 files there, other 4 files now"):
        _export(tmp_path / "photos", out, tiny_encoder)
    assert _snapshot(out) == before


@pytest.mark.parametrize(("change", "said"), [
    ({"precision": "bf16"}, "--precision fp32 there, bf16 now"),
    ({"draft": False}, "draft decode there, --exact-decode now"),
    ({"dtype": "float32"}, "float16 vectors there, float32 now"),
    ({"shard_size": 3}, "--shard-size 2 there, 3 now"),
    ({"max_pixels": 10_000}, "max_pixels"),
])
def test_a_setting_that_changes_the_partitions_is_refused(tmp_path, images_factory, change, said):
    images_factory(tmp_path / "photos", 3)
    out = tmp_path / "out"
    _export(tmp_path / "photos", out)
    before = _snapshot(out)
    with pytest.raises(ExportMismatch, match=said) as refused:
        _export(tmp_path / "photos", out, **change)
    assert "use --overwrite" in str(refused.value) and _snapshot(out) == before


def test_a_resume_may_change_the_rank_split_and_batch_size(tmp_path, images_factory, tiny_encoder):
    """How the work is spread decides neither which file lands where nor its vector: not part of the job."""
    images_factory(tmp_path / "photos", 5)
    out = tmp_path / "out"
    first = _export(tmp_path / "photos", out, tiny_encoder, rank=0, world_size=2, batch_size=1)
    assert first.written == [0, 2] and not (out / "manifest.json").exists()
    rest = _export(tmp_path / "photos", out, tiny_encoder, rank=0, world_size=1, batch_size=7)
    assert (rest.written, rest.skipped) == ([1], [0, 2])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == len(read_export(out)[0]) == 5
    assert manifest["job"] == json.loads((out / "job.json").read_text())


def test_overwrite_replaces_every_partition_of_the_old_job(tmp_path, images_factory, tiny_encoder):
    images_factory(tmp_path / "photos", 5)
    out = tmp_path / "out"
    _export(tmp_path / "photos", out, tiny_encoder)  # 3 partitions: img_emb_0, _1, _2
    (out / "notes.txt").write_text("mine\n")  # not the export's: --overwrite leaves it
    report = _export(tmp_path / "photos", out, OTHER, shard_size=10, overwrite=True)
    assert report.written == [0] and report.skipped == []
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == ["img_emb_0.npy"]
    assert sorted(p.name for p in (out / "stats").iterdir()) == ["stats_0.json"]
    assert (out / "notes.txt").read_text() == "mine\n"
    job = json.loads((out / "job.json").read_text())
    assert job["model"] == OTHER and all(s["model_fingerprint"] == job["model_fingerprint"] for s in _stats(out))
    assert len(read_export(out)[0]) == json.loads((out / "manifest.json").read_text())["files"] == 5


def test_partitions_without_a_job_record_are_refused(tmp_path, images_factory, tiny_encoder):
    """An export from before job.json (or an overwrite killed while clearing) says nothing of its job."""
    images_factory(tmp_path / "photos", 3)
    out = tmp_path / "out"
    _export(tmp_path / "photos", out, tiny_encoder)
    (out / "job.json").unlink()
    before = _snapshot(out)
    with pytest.raises(ExportMismatch, match=r"holds embed partitions with no job.json"):
        _export(tmp_path / "photos", out, tiny_encoder)
    assert _snapshot(out) == before
    assert _export(tmp_path / "photos", out, tiny_encoder, overwrite=True).written == [0, 1]


def test_overwrite_under_ranks_without_a_rendezvous_is_refused(tmp_path, images_factory, monkeypatch):
    """Without a barrier one rank would clear partitions another rank has just written."""
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    images_factory(tmp_path / "photos", 3)
    with pytest.raises(ExportMismatch, match="MASTER_ADDR"):
        _export(tmp_path / "photos", tmp_path / "out", rank=1, world_size=2, overwrite=True)
    assert not (tmp_path / "out").exists()


_KILL_AFTER_WRITES = """
import os, signal
from clipforge.library import export
real = export._write_partition
done = []
def write_then_die(*args, **kwargs):
    if len(done) == {after}:
        os.kill(os.getpid(), signal.SIGKILL)
    real(*args, **kwargs)
    done.append(1)
export._write_partition = write_then_die
export.export_embeddings(["photos"], "out", {model!r}, shard_size=2, workers=0, progress=False,
                         overwrite={overwrite})
"""


@pytest.mark.parametrize("after", [0, 1])
def test_a_first_run_killed_midway_resumes(tmp_path, images_factory, monkeypatch, after):
    """SIGKILL before the first partition or after it: the job record is already there, so the rerun resumes."""
    images_factory(tmp_path / "photos", 5)
    monkeypatch.chdir(tmp_path)  # the killed run was given relative paths: so is the rerun (same file list)
    _killed(_KILL_AFTER_WRITES.format(after=after, model=MODEL, overwrite=False), tmp_path)
    out = Path("out")
    assert (out / "job.json").is_file() and len(_stats(out)) == after
    report = _export(Path("photos"), out)
    assert report.skipped == list(range(after)) and report.written == list(range(after, 3))
    vectors, rows = read_export(out)
    assert len(vectors) == 5 and len({r["image_path"] for r in rows}) == 5


def test_an_overwrite_killed_midway_never_leaves_a_mix(tmp_path, images_factory, monkeypatch):
    images_factory(tmp_path / "photos", 5)
    monkeypatch.chdir(tmp_path)
    out = Path("out")
    _export(Path("photos"), out, MODEL)
    old = json.loads((out / "job.json").read_text())["model_fingerprint"]
    # Killed while clearing the old job (at its first partition file): no record, so a plain rerun is refused.
    _killed("import os, signal, pathlib\n"
            "real = pathlib.Path.unlink\n"
            "def unlink(self, *a, **k):\n"
            "    if self.name.startswith('stats_'):\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    real(self, *a, **k)\n"
            "pathlib.Path.unlink = unlink\n"
            "from clipforge.library.export import export_embeddings\n"
            f"export_embeddings(['photos'], 'out', {OTHER!r}, shard_size=2, workers=0, progress=False, "
            "overwrite=True)\n", tmp_path)
    assert len(_stats(out)) == 3  # the old partitions are still there ...
    for model in (MODEL, OTHER):  # ... and pass for no job
        with pytest.raises(ExportMismatch, match="no job.json"):
            _export(Path("photos"), out, model)
    # Killed after the new job's first partition: the rerun continues the new job only.
    _killed(_KILL_AFTER_WRITES.format(after=1, model=OTHER, overwrite=True), tmp_path)
    assert len(_stats(out)) == 1
    with pytest.raises(ExportMismatch, match=f"model {OTHER}"):
        _export(Path("photos"), out, MODEL)
    report = _export(Path("photos"), out, OTHER)
    assert (report.skipped, report.written) == ([0], [1, 2])
    fingerprints = {s["model_fingerprint"] for s in _stats(out)}
    assert len(fingerprints) == 1 and old not in fingerprints
    assert np.isfinite(read_export(out)[0]).all()


def test_cli_names_the_files_that_failed(tmp_path, images_factory, capsys):
    images_factory(tmp_path / "photos", 2)
    for i in range(23):
        (tmp_path / "photos" / f"junk{i:02d}.jpg").write_text("not a picture\n")
    out = tmp_path / "out"
    assert main(["embed", str(tmp_path / "photos"), "--out", str(out), "--model", MODEL, "--workers", "0",
                 "-q"]) == 0
    captured = capsys.readouterr()
    assert "2 embeddings, 23 failed" in captured.out
    lines = captured.err.rstrip("\n").splitlines()
    assert len(lines) == 21
    assert lines[0] == f"  failed: {tmp_path / 'photos' / 'junk00.jpg'}: not an image (unrecognised or unsupported format)"
    assert all(line.startswith("  failed: ") and "junk" in line for line in lines[:20])
    assert lines[20] == f"  ... and 3 more (see {out}/stats/stats_*.json)"
