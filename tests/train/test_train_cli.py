"""`clipforge train` (recipes, overrides, the CUB smoke run), `clipforge wise-ft`, and a
2-process DDP run of the trainer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.cli.main import main
from clipforge.train.config import TrainConfigError, build_config, list_recipes, load_recipe, parse_override

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_recipes_are_data_with_the_source_hyperparameters():
    assert {"finetune-cub", "finetune-cars", "pretrain"} <= set(list_recipes())
    for name in ("finetune-cub", "finetune-cars"):
        r = load_recipe(name)
        assert (r["model"], r["batch_size"], r["lr"], r["betas"], r["eps"], r["weight_decay"]) == \
            ("ViT-L/14", 64, 1e-6, [0.9, 0.98], 1e-6, 0.2)
        assert r["templates"] == ["A photo of a {}."]
    assert load_recipe("pretrain")["data"] == "webdataset"
    assert load_recipe("pretrain")["model"] == "random:ViT-B/32"  # random weights are asked for by name
    with pytest.raises(TrainConfigError, match="finetune-cub"):
        load_recipe("no-such-recipe")


def test_overrides_are_typed():
    assert parse_override("lr=3e-4") == ("lr", 3e-4)
    assert parse_override("lock_image=true") == ("lock_image", True)
    assert parse_override("templates=[\"a {}\", \"b {}\"]") == ("templates", ["a {}", "b {}"])
    assert parse_override("model=ViT-B/32") == ("model", "ViT-B/32")
    cfg = build_config("finetune-cars", ["micro_batch=16", "epochs=2"], lr=1e-5)
    assert (cfg.micro_batch, cfg.epochs, cfg.lr, cfg.dataset) == (16, 2, 1e-5, "cars")
    with pytest.raises(ValueError, match="unknown config field"):
        parse_override("learning_rate=1")


def test_cub_smoke_run_writes_a_checkpoint_clipforge_load_reads(tmp_path, capsys):
    cub = SHARED / "cub200_2011_mini"
    if not cub.exists():
        pytest.skip(f"real data {cub} is absent")
    out = tmp_path / "cub"
    code = main(["train", "--recipe", "finetune-cub", "--model", "test-vit-tiny", "--root", str(cub),
                 "--split", "test", "--steps", "2", "--out", str(out), "--set", "val_max_samples=16",
                 "--set", "tensorboard=false",
                 "--set", "batch_size=8"])
    assert code == 0
    weights = sorted((out / "checkpoints").glob("*.safetensors"))
    assert len(weights) == 1  # the final checkpoint is named with its zero-shot accuracy
    assert re.fullmatch(r"model-step-2_acc-[01]\.\d{4}\.safetensors", weights[0].name)
    import clipforge

    model, preprocess = clipforge.load(str(weights[0]), device="cpu")
    assert model.visual.input_resolution == 32 and model.embed_dim == 32
    assert (out / "log.jsonl").is_file() and (out / "loss.png").is_file()
    # the same command again started from scratch and appended to this run's log, its checkpoints beside
    # these: refused now, the first run's files untouched
    log = (out / "log.jsonl").read_bytes()
    again = main(["train", "--recipe", "finetune-cub", "--model", "test-vit-tiny", "--root", str(cub),
                  "--split", "test", "--steps", "2", "--out", str(out)])
    assert again == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"error: --out {out} already holds a run (a log (log.jsonl), 1 checkpoint(s)): continue it with "
                   "--resume latest, or give this run another --out (a new run there would mix its curves and "
                   "checkpoints with the old one's)")
    assert (out / "log.jsonl").read_bytes() == log and sorted((out / "checkpoints").glob("*.safetensors")) == weights


def test_wise_ft_interpolates_exactly_and_checks_architecture(tmp_path, tiny_vit, tiny_rn):
    from clipforge.models import create_model_from_config, get_config
    from clipforge.weights import load_state_dict, save_safetensors

    torch.manual_seed(1)
    other = create_model_from_config(get_config("test-vit-tiny"))
    a, b = save_safetensors(tiny_vit, tmp_path / "a.safetensors"), save_safetensors(other, tmp_path / "b.safetensors")
    out = tmp_path / "mix.safetensors"
    assert main(["wise-ft", "--zeroshot", str(a), "--finetuned", str(b), "--alpha", "0.25", "--out", str(out)]) == 0
    mixed = load_state_dict(out)
    sa, sb = tiny_vit.state_dict(), other.state_dict()
    for key in sa:
        expected = (0.75 * sa[key].double() + 0.25 * sb[key].double()).float()
        torch.testing.assert_close(mixed[key], expected, rtol=0, atol=0)
    rn = save_safetensors(tiny_rn, tmp_path / "rn.safetensors")
    assert main(["wise-ft", "--zeroshot", str(a), "--finetuned", str(rn), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert not (tmp_path / "x.safetensors").exists()
    # safetensors bytes in a file named .pt made torch.load fail later: the name is refused before any work
    assert main(["wise-ft", "--zeroshot", str(a), "--finetuned", str(b), "--out", str(tmp_path / "mix.pt")]) == 2
    assert not (tmp_path / "mix.pt").exists()


def test_two_process_ddp_trainer_matches_one_process(tmp_path):
    """torchrun-style 2-rank run (gloo, batch 2 per rank) == 1 process with batch 4: same loss curve."""
    import torch.multiprocessing as mp

    from clipforge.train.logs import read_log
    from clipforge.train.selfcheck import free_port, trainer_worker
    from clipforge.train.trainer import Trainer

    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    for c in range(4):
        (root / f"caption_{c}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"caption_{c}" / f"{i}.png")
    common = dict(model="test-vit-tiny", data="folder", root=str(root), steps=3, lr=1e-3, precision="fp32",
                  log_every=1, seed=0, device="cpu", local_loss=True, tensorboard=False)
    mp.spawn(trainer_worker, args=(2, free_port(), {**common, "batch_size": 2, "out_dir": str(tmp_path / "ddp")}),
             nprocs=2, join=True)
    from clipforge.train.config import TrainConfig

    Trainer(TrainConfig(**common, batch_size=4, out_dir=str(tmp_path / "one"))).fit()
    ddp = [r["loss"] for r in read_log(tmp_path / "ddp") if r["kind"] == "train"]
    one = [r["loss"] for r in read_log(tmp_path / "one") if r["kind"] == "train"]
    assert len(ddp) == len(one) == 3
    np.testing.assert_allclose(ddp, one, rtol=0, atol=1e-5)
    # 8 images / (2 ranks x 2) = 2 steps per epoch: the epoch-1 checkpoint and the final one, written once
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").glob("*.safetensors")) == \
        ["model-1.safetensors", "model-step-3.safetensors"]


def test_a_run_refused_under_torchrun_leaves_no_process_group(tmp_path):
    """The group is joined inside `Trainer()`, before its data is read: a run refused there (no images) left it
    initialized, to be torn down at the interpreter's exit, where gloo can abort the process."""
    import torch.multiprocessing as mp
    from torch.multiprocessing import ProcessRaisedException

    from clipforge.train.selfcheck import free_port, trainer_worker

    (tmp_path / "empty").mkdir()
    config = dict(model="test-vit-tiny", data="folder", root=str(tmp_path / "empty"), steps=1, batch_size=2,
                  precision="fp32", device="cpu", tensorboard=False, out_dir=str(tmp_path / "run"))
    with pytest.raises(ProcessRaisedException) as raised:
        mp.spawn(trainer_worker, args=(2, free_port(), config), nprocs=2, join=True)
    assert "no images" in str(raised.value) and "still initialized" not in str(raised.value), str(raised.value)[-600:]


def test_pretrain_recipe_streams_webdataset_shards(tmp_path, capsys):
    """Two shards named as WebDataset's `a.tar::b.tar` list (the CLI's input check refused it as one missing
    path); a list naming a shard that does not exist is one line naming that shard, before any model loads."""
    import io
    import tarfile

    rng = np.random.default_rng(2)
    for s in range(2):
        with tarfile.open(tmp_path / f"shard-00{s}.tar", "w") as tar:
            for i in range(4):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(buf, format="JPEG")
                for ext, data in (("jpg", buf.getvalue()), ("txt", f"picture number {s}{i}".encode())):
                    info = tarfile.TarInfo(f"{s}{i:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    shards = f"{tmp_path / 'shard-000.tar'}::{tmp_path / 'shard-001.tar'}"
    out = tmp_path / "pretrain"
    args = ["train", "--recipe", "pretrain", "--model", "test-vit-tiny", "--steps", "3", "--batch-size", "4",
            "--out", str(out), "--set", "samples_per_epoch=8", "--set", "workers=0", "--set", "warmup_steps=1",
            "--set", "precision=fp32", "--set", "tensorboard=false"]
    assert main([*args, "--root", f"{shards}::{tmp_path / 'shard-009.tar'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"shard '{tmp_path / 'shard-009.tar'}'" in err, err
    assert "of the '::' list does not exist" in err and not out.exists(), err
    code = main([*args, "--root", shards])
    assert code == 0
    from clipforge.train.logs import read_log

    train = [r for r in read_log(out) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [3] and np.isfinite(train[0]["loss"])
    assert (out / "checkpoints" / "model-step-3.safetensors").is_file()
