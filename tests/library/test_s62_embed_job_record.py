"""An embed job record whose shard size is a string (audit 62, fuzzer 11): the refusal said "--shard-size 3 there,
3 now", contradicting itself; the recorded value is now shown as recorded ('3')."""

from __future__ import annotations

import json

import pytest

from clipforge.library.export import ExportMismatch, export_embeddings


def test_a_string_shard_size_in_job_json_is_shown_as_a_string(tmp_path, images_factory, tiny_encoder):
    images_factory(tmp_path / "photos", 3)
    out = tmp_path / "out"
    export_embeddings([tmp_path / "photos"], out, tiny_encoder, progress=False, workers=0, shard_size=3)
    job = json.loads((out / "job.json").read_text())
    assert job["shard_size"] == 3
    (out / "job.json").write_text(json.dumps({**job, "shard_size": "3"}))
    with pytest.raises(ExportMismatch) as refused:
        export_embeddings([tmp_path / "photos"], out, tiny_encoder, progress=False, workers=0, shard_size=3)
    assert str(refused.value) == (f"{out} holds another embed job (--shard-size '3' there, 3 now): use --overwrite "
                                  "to replace it, or another --out")
