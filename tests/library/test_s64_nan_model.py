"""A model whose logit scale or weights are not finite, in the commands audit 64 found letting it through.

`similarity` multiplied exp(logit_scale) without the check `classify` makes: a table of ``nan`` with exit status 0
and ``--json`` of ``NaN`` (not JSON); a SigLIP's NaN logit bias the same. `export onnx` of a NaN model ended in a
RuntimeError traceback ("differs from PyTorch by nan"). `embed` of a NaN model wrote no partition but left its
``job.json``, which refused the rerun with a fixed model as "another embed job".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import clipforge
from clipforge.cli.main import main

from .conftest import tiny_checkpoint_with, write_images

TINY = Path(clipforge.__file__).resolve().parent / "pretrained" / "clipforge-tiny" / "model.safetensors"
QUIET = ["--workers", "0", "-q"]
WHY = "(its weights hold NaN or inf, as a diverged training run leaves them)"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    return {"nan": tiny_checkpoint_with(folder / "nan.safetensors", **{"visual.attnpool.c_proj.weight": float("nan")}),
            "inf_scale": tiny_checkpoint_with(folder / "inf_scale.safetensors", logit_scale=float("inf")),
            "big_scale": tiny_checkpoint_with(folder / "big_scale.safetensors", logit_scale=100.0)}


def _refused(capsys, argv: list[str]) -> tuple[str, str]:
    """Runs `argv`, which must exit 2 with one error line and no traceback; returns (that line, stdout)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err
    assert "Traceback" not in captured.err
    return errors[0], captured.out


def _nan_line(model: Path) -> str:
    return f"error: model {model} produced NaN or infinite embeddings {WHY}; no embedding was written"


def _scale_line(model: Path, raw: str) -> str:
    return (f"error: model {model} has a logit scale of inf (exp of its logit_scale {raw}), not a finite number, so "
            f"every score would be NaN or infinite {WHY}; no score was given")


@pytest.mark.parametrize("name, raw", [("inf_scale", "inf"), ("big_scale", "100")])
def test_similarity_refuses_an_infinite_logit_scale_as_classify_does(tmp_path, checkpoints, capsys, name, raw):
    photo = write_images(tmp_path / "photos", 1)[0]
    model = checkpoints[name]
    line, out = _refused(capsys, ["classify", str(photo), "--labels", "cat,dog", "--model", str(model), *QUIET])
    assert line == _scale_line(model, raw)
    plot = tmp_path / "heat.png"
    for extra in ([], ["--json"], ["--plot", str(plot)]):
        argv = ["similarity", str(photo), "--text", "a cat", "--text", "a dog", "--model", str(model), "-q", *extra]
        assert _refused(capsys, argv) == (line, "")  # the same line; no table of nan, no NaN in JSON
    assert not plot.exists()


def test_similarity_refuses_a_siglip_logit_bias_that_is_not_finite(tmp_path, capsys) -> None:
    from tests.families.family_fixtures import save_family_checkpoint

    photo = write_images(tmp_path / "photos", 1)[0]
    weights = save_family_checkpoint(tmp_path / "siglip", "test-siglip-tiny")
    tiny_checkpoint_with(weights, source=weights, logit_bias=float("nan"))
    line, _ = _refused(capsys, ["classify", str(photo), "--labels", "cat,dog", "--model", str(weights), *QUIET])
    assert line == (f"error: model {weights} has a logit bias of nan, not a finite number, so every score would be "
                    f"NaN or infinite {WHY}; no score was given")
    argv = ["similarity", str(photo), "--text", "a cat", "--text", "a dog", "--model", str(weights), "-q", "--json"]
    assert _refused(capsys, argv) == (line, "")


def test_similarity_of_a_sound_model_still_scores(tmp_path, capsys) -> None:
    photo = write_images(tmp_path / "photos", 1)[0]
    argv = ["similarity", str(photo), "--text", "a cat", "--text", "a dog", "--model", "clipforge-tiny", "-q",
            "--json"]
    assert main(argv) == 0
    probabilities = json.loads(capsys.readouterr().out)["probabilities"]
    assert len(probabilities) == 1 and sum(probabilities[0]) == pytest.approx(1.0, abs=1e-5)


def test_export_onnx_of_a_nan_model_is_the_nan_line_and_leaves_nothing(tmp_path, checkpoints, capsys) -> None:
    model = checkpoints["nan"]
    out = tmp_path / "deep" / "onnx"
    line, _ = _refused(capsys, ["export", "onnx", "--model", str(model), "--out", str(out)])
    assert line == _nan_line(model)
    assert list(tmp_path.iterdir()) == []  # neither --out nor the folder made for it
    existing = tmp_path / "kept"
    (existing / "notes.txt").parent.mkdir()
    (existing / "notes.txt").write_text("mine")
    assert _refused(capsys, ["export", "onnx", "--model", str(model), "--out", str(existing), "--no-verify"])[0] == (
        _nan_line(model))  # refused without the parity check too: a graph of NaN is no export
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_embed_of_a_nan_model_leaves_no_job_record_and_the_rerun_works(tmp_path, checkpoints, capsys) -> None:
    write_images(tmp_path / "photos", 3)
    out = tmp_path / "out"
    model = checkpoints["nan"]
    argv = ["embed", str(tmp_path / "photos"), "--out", str(out), *QUIET]
    assert _refused(capsys, [*argv, "--model", str(model)])[0] == _nan_line(model)
    assert not out.exists()  # no job.json (nor an empty --out) left to refuse the next run as "another embed job"
    kept = tmp_path / "kept"
    (kept / "notes.txt").parent.mkdir()
    (kept / "notes.txt").write_text("mine")
    kept_argv = ["embed", str(tmp_path / "photos"), "--out", str(kept), *QUIET]
    assert _refused(capsys, [*kept_argv, "--model", str(model)])[0] == _nan_line(model)
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]  # a folder that was there stays, as it was
    assert main([*argv, "--model", "clipforge-tiny"]) == 0
    capsys.readouterr()
    assert json.loads((out / "job.json").read_text())["model"] == "clipforge-tiny"
    assert len(list(out.glob("img_emb/*.npy"))) == 1


def test_embed_of_a_nan_model_keeps_a_job_record_that_was_there(tmp_path, checkpoints, capsys) -> None:
    """A record an earlier run of the same job wrote (killed before its first partition) is not this run's."""
    from clipforge.library import resolve_encoder
    from clipforge.library.export import job_identity
    from clipforge.library.scan import discover_files

    photos = tmp_path / "photos"
    write_images(photos, 3)
    out = tmp_path / "out"
    out.mkdir()
    model = checkpoints["nan"]
    files = sorted(discover_files([str(photos)], recursive=True, exclude=[str(out)], notify=False))
    job = job_identity(resolve_encoder(str(model), towers=("image",)), files, shard_size=100_000, dtype="float16",
                       max_pixels=None)
    from clipforge.image import DEFAULT_MAX_PIXELS

    job["max_pixels"] = DEFAULT_MAX_PIXELS
    record = json.dumps(job)
    (out / "job.json").write_text(record)
    argv = ["embed", str(photos), "--out", str(out), "--model", str(model), *QUIET]
    assert _refused(capsys, argv)[0] == _nan_line(model)  # not "another embed job": the record is this job's
    assert (out / "job.json").read_text() == record


def test_export_onnx_of_nan_rows_its_examples_miss_is_the_nan_line_at_the_parity_check(tmp_path, capsys) -> None:
    """NaN in token-embedding rows the export's own example prompt does not use (it holds ids 0, 320, 49406 and
    49407) passes the first check; the parity check's random prompts meet them and say the NaN line, not
    "differs from PyTorch by nan" in a traceback (review 64)."""
    model = tmp_path / "nan_rows.safetensors"
    model.write_bytes(TINY.read_bytes())
    state = load_file(str(model))
    with safe_open(str(model), "pt") as handle:
        metadata = handle.metadata()
    kept = torch.tensor([0, 320, 49406, 49407])
    rows = state["token_embedding.weight"]
    saved = rows[kept].clone()
    rows[:] = float("nan")
    rows[kept] = saved
    save_file(state, str(model), metadata=metadata)
    line, _ = _refused(capsys, ["export", "onnx", "--model", str(model), "--out", str(tmp_path / "onnx")])
    assert line == _nan_line(model)
    assert not (tmp_path / "onnx").exists()
