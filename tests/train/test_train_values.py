"""Training values and model specs a new user gets wrong (issues 21.15, 21.10, 20.1, 20.2): each is
one line naming the field and exit status 2 before anything is built, a NaN loss stops the run,
`ViT-B/32` means OpenAI's weights (offline: no training from noise), training normalises with the
weights' own preprocessing and every checkpoint records it, recipes say what they are for."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.cli.main import main
from clipforge.train.config import TrainConfig, TrainConfigError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MAXED = {"embed_dim": 32768, "image_resolution": 8192, "vision_layers": 1024, "vision_width": 32768,
         "vision_patch_size": 1, "context_length": 65536, "vocab_size": 2_000_000, "transformer_width": 32768,
         "transformer_heads": 1024, "transformer_layers": 1024}


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("captions")
    rng = np.random.default_rng(4)
    for name in ["a red cat", "a green ship", "a blue dog", "a grey truck"]:
        (root / name.replace(" ", "_")).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                root / name.replace(" ", "_") / f"{i}.png")
    return root


def _common(root: Path, out: Path) -> dict:
    return dict(model="random:test-vit-tiny", data="folder", root=str(root), steps=2, batch_size=4, lr=1e-3,
                precision="fp32", tensorboard=False, log_every=1, device="cpu", out_dir=str(out))


@pytest.mark.parametrize(("setting", "field"), [
    ("batch_size=0", "batch_size"), ("log_every=0", "log_every"), ("crop_scale=[]", "crop_scale"),
    ("crop_scale=[0.5]", "crop_scale"), ("crop_scale=[1.0,0.5]", "crop_scale"), ("threads=100000", "threads"),
    ("lr=1e400", "lr"), ("lr=0", "lr"), ("eps=0", "eps"), ("weight_decay=NaN", "weight_decay"),
    ("betas=[0.9,1.0]", "betas"), ("device=cuda:99", "device"), ("device=tpu", "device"),
    ('model_config={"embed_dim": 8}', "model_config"), ("workers=-1", "workers"), ("seed=-1", "seed"),
    ("micro_batch=0", "micro_batch"), ("precision=fp8", "precision"),
])
def test_bad_training_values_are_one_line_and_exit_2_before_anything_is_built(setting, field, capsys):
    started = time.perf_counter()
    assert main(["train", "--model", "random:test-vit-tiny", "--root", ".", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: config field '{field}'") and err.count("\n") == 1, err
    assert time.perf_counter() - started < 10  # refused up front, not after building or reading anything


def test_a_model_config_with_every_field_at_its_maximum_is_refused_without_allocating(capsys):
    import tracemalloc

    tracemalloc.start()
    try:
        assert main(["train", "--root", ".", "--set", "model_config=" + json.dumps(MAXED)]) == 2
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert "error: config field 'model_config'" in err and "parameters and buffers" in err and "GB" in err
    assert peak < 50_000_000


def test_a_model_config_larger_than_free_memory_is_refused_for_training():
    from clipforge.models import ConfigError, get_config
    from clipforge.models.validate import check_fits_memory, estimate_elements

    config = get_config("ViT-B/32")
    assert check_fits_memory(config, "inference", available=10**12) == estimate_elements(config) * 4
    with pytest.raises(ConfigError, match=r"needs about 2\.4 GB for training .* only 1\.0 GB of memory"):
        check_fits_memory(config, "training", available=10**9)


@pytest.mark.parametrize("arch", ["ViT-B/32", "ViT-L/14", "test-vit-tiny", "ViT-H-14", "RN50", "RN50x64",
                                  "test-rn-tiny"])
def test_the_size_estimate_matches_the_built_model(arch):
    from clipforge.models import create_model_from_config, get_config
    from clipforge.models.validate import estimate_elements

    config = get_config(arch)
    with torch.device("meta"):
        model = create_model_from_config(config)
    real = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    estimate = estimate_elements(config)  # from the config alone, nothing built
    assert estimate == real


def test_a_non_finite_loss_stops_the_run_with_exit_2(captions, tmp_path, capsys, monkeypatch):
    from clipforge.train import trainer

    monkeypatch.setattr(trainer.Trainer, "_train_step", lambda self, batch, size=None: float("nan"))
    code = main(["train", "--model", "random:test-vit-tiny", "--root", str(captions), "--set", "data=folder",
                 "--steps", "3", "--batch-size", "4", "--out", str(tmp_path / "nan"), "--set", "tensorboard=false",
                 "--set", "device=cpu", "--set", "precision=fp32"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: training stopped at step 1: the loss is nan") and "lower the lr" in err
    assert not list((tmp_path / "nan" / "checkpoints").glob("*.safetensors"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_vit_b32_means_openai_weights_in_train_too_and_offline_never_trains(captions, tmp_path, capsys,
                                                                             monkeypatch):
    from clipforge.weights import registry

    entry = registry.PRETRAINED[("ViT-B/32", "openai")]
    dead = f"http://127.0.0.1:{_closed_port()}/{entry.sha256}/ViT-B-32.pt"
    monkeypatch.setitem(registry.PRETRAINED, ("ViT-B/32", "openai"), dataclasses.replace(entry, url=dead))
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIPFORGE_ALLOW_UNPINNED", raising=False)
    started = time.perf_counter()
    code = main(["train", "--model", "ViT-B/32", "--root", str(captions), "--set", "data=folder", "--steps", "1",
                 "--out", str(tmp_path / "run")])
    assert code == 2 and time.perf_counter() - started < 10
    err = capsys.readouterr().err
    assert "could not download the ViT-B/32:openai weights" in err and "ViT-B-32.pt" in err
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_training_normalises_with_the_weights_preprocessing_and_checkpoints_record_it(captions, tmp_path):
    from clipforge.models import create_model_from_config, get_config
    from clipforge.train.trainer import Trainer
    from clipforge.weights import load_checkpoint, save_safetensors

    torch.manual_seed(0)
    inception = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    start = save_safetensors(create_model_from_config(get_config("test-vit-tiny")), tmp_path / "start.safetensors",
                             preprocess=inception)
    trainer = Trainer(TrainConfig(**{**_common(captions, tmp_path / "ft"), "model": str(start), "steps": 1}))
    transform = trainer.dataset.transform
    assert transform._normalizer.mean == (0.5, 0.5, 0.5) and transform._normalizer.std == (0.5, 0.5, 0.5)
    result = trainer.fit()
    saved = load_checkpoint(result["checkpoint"]).preprocess
    assert (saved["mean"], saved["std"]) == (inception["mean"], inception["std"])
    random_run = Trainer(TrainConfig(**{**_common(captions, tmp_path / "random"), "steps": 1})).fit()  # OpenAI's
    assert load_checkpoint(random_run["checkpoint"]).preprocess["mean"][0] == pytest.approx(0.48145466)


def test_list_recipes_says_what_each_is_for(capsys):
    assert main(["train", "--list-recipes"]) == 0
    out = capsys.readouterr().out
    for name in ("finetune-cub", "finetune-cars", "pretrain", "cifar10-from-scratch"):
        assert f"\n{name}\n" in f"\n{out}"
    assert "ViT-L/14 with OpenAI's weights" in out and "expect:" in out and "below 50,000,000 parameters lr 0.001" in out


def test_a_recipe_used_with_a_much_smaller_model_scales_its_lr_and_says_so(captions, tmp_path):
    from clipforge.train.checks import build_run_config
    from clipforge.train.trainer import Trainer

    fields = dict(model="clipforge-tiny", root=str(captions), steps=1, out_dir=str(tmp_path / "r"), batch_size=4)
    overrides = ["data=folder", "dataset=null", "val_dataset=null", "precision=fp32", "tensorboard=false",
                 "device=cpu"]
    config = build_run_config("finetune-cub", overrides, **fields)
    assert config.lr == 1e-6 and config.lr_by_size
    with pytest.warns(UserWarning, match=r"lr 1e-06 is for larger models; this one has 8,806,705 parameters, "
                                         r"so lr 0\.001 is used"):
        trainer = Trainer(config)
    assert trainer.config.lr == 1e-3 and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    own = build_run_config("finetune-cub", overrides, **{**fields, "lr": 1e-5})  # the user's lr is kept
    assert own.lr == 1e-5 and own.lr_by_size is None


def test_a_missing_split_lists_the_splits_that_exist():
    cub = SHARED / "cub200_2011_mini"
    if not cub.exists():
        pytest.skip(f"real data {cub} is absent")
    from clipforge.train.data import open_split

    with pytest.raises(TrainConfigError, match=r"no samples for split 'train'; splits with samples there: "
                                               r"test \(250 samples\), all \(250 samples\)"):
        open_split("cub", str(cub), "train")


def test_checks_accept_every_packaged_recipe():
    from clipforge.train.checks import check_config
    from clipforge.train.config import build_config, list_recipes

    for name in list_recipes():
        check_config(build_config(name))
    assert math.isfinite(TrainConfig().lr)
