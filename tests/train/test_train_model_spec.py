"""`clipforge train --model` takes what every command takes: a checkpoint file (architecture
inferred from its tensors) or the shipped clipforge-tiny, fine-tunes it, alone and on 2 ranks;
bad input is one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.cli.main import main
from clipforge.train.logs import read_log


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("captions")
    rng = np.random.default_rng(4)
    for c, name in enumerate(["a red cat", "a green ship", "a blue dog", "a grey truck"]):
        (root / name.replace(" ", "_")).mkdir()
        for i in range(2):
            pixels = rng.integers(0, 90, (32, 32, 3), dtype=np.uint8)
            pixels[..., c % 3] += 150
            Image.fromarray(pixels).save(root / name.replace(" ", "_") / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from clipforge.models import create_model_from_config, get_config
    from clipforge.weights import save_safetensors

    torch.manual_seed(5)
    model = create_model_from_config(get_config("test-vit-tiny"))
    return save_safetensors(model, tmp_path_factory.mktemp("ckpt") / "start.safetensors")


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--root", str(root), "--set", "data=folder", "--steps", "2", "--batch-size", "4",
            "--lr", "1e-6", "--out", str(out), "--set", "precision=fp32", "--set", "tensorboard=false",
            "--set", "log_every=1", "--set", "device=cpu", *extra]


def _latest(out: Path) -> Path:
    import json

    return out / "checkpoints" / (json.loads((out / "checkpoints" / "latest.json").read_text())["name"] + ".safetensors")


def _max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest change of a parameter (BatchNorm running statistics move with any forward pass)."""
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a
               if a[k].is_floating_point() and "running_" not in k)


def test_model_checkpoint_file_is_fine_tuned_from_its_weights(captions, checkpoint, tmp_path):
    import clipforge
    from clipforge.weights import load_state_dict

    out = tmp_path / "ft"
    assert main(_args(captions, out, "--model", str(checkpoint))) == 0
    weights = _latest(out)
    model, _ = clipforge.load(str(weights), device="cpu")
    assert model.embed_dim == 32 and model.visual.input_resolution == 32  # inferred from the tensors
    start, end = load_state_dict(checkpoint), load_state_dict(weights)
    assert 0 < _max_gap(start, end) < 1e-3  # moved a little from the checkpoint, not from a fresh init
    torch.manual_seed(0)
    from clipforge.models import create_model_from_config, get_config

    assert _max_gap(start, create_model_from_config(get_config("test-vit-tiny")).state_dict()) > 1e-2
    losses = [r["loss"] for r in read_log(out) if r["kind"] == "train"]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_model_clipforge_tiny_is_fine_tuned(captions, tmp_path):
    from clipforge.api import load_model
    from clipforge.weights import load_state_dict

    out = tmp_path / "tiny"
    assert main(_args(captions, out, "--model", "clipforge-tiny")) == 0
    shipped = load_model("clipforge-tiny", device="cpu").model.state_dict()
    tuned = load_state_dict(_latest(out))
    assert 0 < _max_gap(shipped, tuned) < 1e-3
    assert all(np.isfinite(r["loss"]) for r in read_log(out) if r["kind"] == "train")


def test_bad_model_and_bad_values_are_one_line_and_exit_2(captions, tmp_path, capsys):
    assert main(_args(captions, tmp_path / "x", "--model", str(tmp_path / "missing.safetensors"))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.safetensors" in err and err.count("\n") == 1
    assert main(["train", "--set", "lr=abc"]) == 2
    assert capsys.readouterr().err == "error: config field 'lr' must be a number, got 'abc'\n"


def test_two_ranks_fine_tune_a_checkpoint_as_one_process_does(captions, checkpoint, tmp_path):
    """torchrun-style 2 gloo ranks (batch 2 each) with --model <checkpoint> == 1 process, batch 4."""
    import torch.multiprocessing as mp

    from clipforge.train.config import TrainConfig
    from clipforge.train.selfcheck import free_port, trainer_worker
    from clipforge.train.trainer import Trainer

    common = dict(model=str(checkpoint), data="folder", root=str(captions), steps=2, lr=1e-3, precision="fp32",
                  log_every=1, seed=0, device="cpu", local_loss=True, tensorboard=False)
    mp.spawn(trainer_worker, args=(2, free_port(), {**common, "batch_size": 2, "out_dir": str(tmp_path / "ddp")}),
             nprocs=2, join=True)
    Trainer(TrainConfig(**common, batch_size=4, out_dir=str(tmp_path / "one"))).fit()
    ddp = [r["loss"] for r in read_log(tmp_path / "ddp") if r["kind"] == "train"]
    one = [r["loss"] for r in read_log(tmp_path / "one") if r["kind"] == "train"]
    assert len(ddp) == 2
    np.testing.assert_allclose(ddp, one, rtol=0, atol=1e-5)
    import clipforge

    model, _ = clipforge.load(str(_latest(tmp_path / "ddp")), device="cpu")
    assert model.embed_dim == 32


def test_the_training_package_never_imports_the_cli():
    """The training package never imports the CLI (an upward import): `clipforge train`'s arguments
    live in clipforge.cli.train like every command's, and torchrun runs `-m clipforge train`."""
    import ast

    import clipforge.train

    package = Path(clipforge.train.__file__).parent
    upward = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            upward += [f"{path.name}: {n}" for n in names if n == "clipforge.cli" or n.startswith("clipforge.cli.")]
    assert upward == []
    assert len(list(package.glob("*.py"))) > 10  # the scan saw the package


def test_wise_ft_takes_model_specs_like_every_command(tmp_path, capsys):
    from clipforge.api import load_model
    from clipforge.weights import load_state_dict, save_safetensors

    tiny = load_model("clipforge-tiny", device="cpu").model
    shifted = {k: (v + 0.5 if v.is_floating_point() else v) for k, v in tiny.state_dict().items()}
    from clipforge.weights.save import model_config

    tuned = save_safetensors(shifted, tmp_path / "tuned.safetensors", config=model_config(tiny))
    out = tmp_path / "mid.safetensors"
    assert main(["wise-ft", "--zeroshot", "clipforge-tiny", "--finetuned", str(tuned), "--alpha", "0.5",
                 "--out", str(out)]) == 0
    mid = load_state_dict(out)
    key = "text_projection"
    torch.testing.assert_close(mid[key], tiny.state_dict()[key] + 0.25, rtol=0, atol=1e-6)
    assert main(["wise-ft", "--zeroshot", "clipforge-tiny", "--finetuned", str(tmp_path / "nope.pt"),
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1  # the one error edge's line
