"""A model whose weights hold NaN (a diverged training run) is refused in one line (audit 62, fuzzer 1 and 4).

Every vector such a model makes is NaN. `classify` printed `nan%  cat`, `embed --out` wrote all-NaN partitions,
`eval zeroshot` reported top-1 100% (exit 0 each), and `index add` committed the NaN vectors, then blamed the
library: "library database ... is damaged: vector 1 holds NaN ... nothing was changed", and that model space could
no longer be searched. The one encoder (`clipforge.inference.encoder.BatchEncoder`) now refuses non-finite
embeddings before anything is written, and the zero-shot logits refuse a non-finite logit scale.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from clipforge.cli.main import main

from .conftest import tiny_checkpoint_with, write_images

QUIET = ["--workers", "0", "-q"]
WHY = "(its weights hold NaN or inf, as a diverged training run leaves them)"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    return {"nan": tiny_checkpoint_with(folder / "nan.safetensors", **{"visual.attnpool.c_proj.weight": float("nan")}),
            "nan_text": tiny_checkpoint_with(folder / "nan_text.safetensors", text_projection=float("nan")),
            "inf_scale": tiny_checkpoint_with(folder / "inf_scale.safetensors", logit_scale=float("inf"))}


def _refused(capsys, argv: list[str]) -> str:
    """Runs `argv`, which must exit 2 with one error line; returns that line."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err
    assert "Traceback" not in captured.err and "nan%" not in captured.out
    return errors[0]


def _line(model: Path) -> str:
    return f"error: model {model} produced NaN or infinite embeddings {WHY}; no embedding was written"


def test_classify_refuses_nan_embeddings_of_either_tower(tmp_path, checkpoints, capsys) -> None:
    photo = write_images(tmp_path / "photos", 1)[0]
    for name in ("nan", "nan_text"):  # the image vectors, then the class (text) vectors
        model = checkpoints[name]
        assert _refused(capsys, ["classify", str(photo), "--labels", "cat,dog", "--model", str(model)]) == _line(model)


def test_classify_refuses_an_infinite_logit_scale(tmp_path, checkpoints, capsys) -> None:
    photo = write_images(tmp_path / "photos", 1)[0]
    model = checkpoints["inf_scale"]
    assert _refused(capsys, ["classify", str(photo), "--labels", "cat,dog", "--model", str(model)]) == (
        f"error: model {model} has a logit scale of inf (exp of its logit_scale inf), not a finite number, so every "
        f"score would be NaN or infinite {WHY}; no score was given")


def test_embed_writes_no_partition_of_nan_vectors(tmp_path, checkpoints, capsys) -> None:
    write_images(tmp_path / "photos", 3)
    out = tmp_path / "out"
    model = checkpoints["nan"]
    argv = ["embed", str(tmp_path / "photos"), "--out", str(out), "--model", str(model), *QUIET]
    assert _refused(capsys, argv) == _line(model)
    assert not list(out.glob("img_emb/*.npy")) and not list(out.glob("metadata/*"))


def test_index_add_commits_no_nan_vector_and_the_library_stays_usable(tmp_path, checkpoints, capsys) -> None:
    write_images(tmp_path / "photos", 3)
    library = tmp_path / "lib"
    model = checkpoints["nan"]
    argv = ["index", "add", str(tmp_path / "photos"), "--library", str(library), "--model", str(model), *QUIET]
    assert _refused(capsys, argv) == _line(model)
    database = library / "library.sqlite3"
    if database.exists():
        with sqlite3.connect(database) as db:
            assert db.execute("select count(*) from embeddings").fetchone() == (0,)
    # not "library database ... is damaged": the same photos index and search with a sound model
    assert main(["index", "add", str(tmp_path / "photos"), "--library", str(library), "--model", "clipforge-tiny",
                 *QUIET]) == 0
    capsys.readouterr()
    assert main(["search", "a photo", "--library", str(library), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3


def test_eval_zeroshot_refuses_instead_of_reporting_100_percent(tmp_path, checkpoints, colour_folder, capsys) -> None:
    out = tmp_path / "out"
    model = checkpoints["nan"]
    argv = ["eval", "zeroshot", "--model", str(model), "--dataset", "folder", "--root", str(colour_folder),
            "--workers", "0", "--out", str(out), "--quiet"]
    assert _refused(capsys, argv) == _line(model)
    assert not list(out.glob("*.json"))  # no report; the log of the stopped run ends with why
    log = next(out.glob("*.log")).read_text(encoding="utf-8")
    assert log.rstrip().endswith(f"run stopped before its report was written: {_line(model)[len('error: '):]}")


def test_eval_retrieval_refuses_instead_of_reporting_recall(tmp_path, checkpoints, capsys) -> None:
    photos = write_images(tmp_path / "images", 2, formats=("png",))
    (tmp_path / "captions.csv").write_text("image,caption\n" + "".join(f"{p.name},a photo {i}\n"
                                                                      for i, p in enumerate(photos)))
    out = tmp_path / "out"
    for name in ("nan", "nan_text"):  # the images' features, then the captions'
        model = checkpoints[name]
        argv = ["eval", "retrieval", "--model", str(model), "--captions", str(tmp_path / "captions.csv"),
                "--images", str(tmp_path / "images"), "--workers", "0", "--out", str(out), "--quiet"]
        assert _refused(capsys, argv) == _line(model)
    assert not list(out.glob("*.json"))


@pytest.fixture()
def colour_folder(tmp_path) -> Path:
    """An image-folder dataset: two classes of two photos."""
    for seed, name in enumerate(("cat", "dog")):
        write_images(tmp_path / "classes" / name, 2, seed=seed)
    return tmp_path / "classes"
