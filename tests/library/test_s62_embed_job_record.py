"""An embed job record holding a number written as a string (audit 62, fuzzer 11; review 62 #4): the refusal said
"--shard-size 3 there, 3 now", "max_pixels 178956970 there, 178956970 now", "a list of 3 files there, 3 files
now" or the same model twice (a string "dim"), contradicting itself. Every field of the record whose type is not
the one clipforge writes is now named as malformed, its value quoted as recorded."""

from __future__ import annotations

import json

import pytest

from clipforge.library.export import ExportMismatch, export_embeddings


@pytest.mark.parametrize("field", ["shard_size", "max_pixels", "files", "dim"])
def test_a_number_recorded_as_a_string_is_named_as_malformed(tmp_path, images_factory, tiny_encoder,
                                                             field: str) -> None:
    images_factory(tmp_path / "photos", 3)
    out = tmp_path / "out"
    export_embeddings([tmp_path / "photos"], out, tiny_encoder, progress=False, workers=0, shard_size=3,
                      max_pixels=178956970)
    job = json.loads((out / "job.json").read_text())
    assert (job["shard_size"], job["max_pixels"], job["files"], job["dim"]) == (3, 178956970, 3, 32)
    (out / "job.json").write_text(json.dumps({**job, field: str(job[field])}))
    with pytest.raises(ExportMismatch) as refused:
        export_embeddings([tmp_path / "photos"], out, tiny_encoder, progress=False, workers=0, shard_size=3,
                          max_pixels=178956970)
    assert str(refused.value) == (f"{out} holds another embed job (a malformed record: its {field} is "
                                  f"{str(job[field])!r}, a str where clipforge writes an int): use --overwrite to "
                                  "replace it, or another --out")


def test_a_real_difference_is_still_said_as_there_and_now(tmp_path, images_factory, tiny_encoder) -> None:
    """Positive control: a well-formed record of another pixel limit gives both numbers."""
    images_factory(tmp_path / "photos", 3)
    out = tmp_path / "out"
    export_embeddings([tmp_path / "photos"], out, tiny_encoder, progress=False, workers=0, shard_size=3,
                      max_pixels=1000)
    with pytest.raises(ExportMismatch) as refused:
        export_embeddings([tmp_path / "photos"], out, tiny_encoder, progress=False, workers=0, shard_size=3,
                          max_pixels=2000)
    assert str(refused.value) == (f"{out} holds another embed job (max_pixels 1000 there, 2000 now): use --overwrite "
                                  "to replace it, or another --out")
