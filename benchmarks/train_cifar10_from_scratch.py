"""Train clipforge-tiny with the product's trainer, measure it the public way, plot, ship.

    .venv/bin/python benchmarks/train_cifar10_from_scratch.py --nproc 2 --save-model

A thin caller, no training code of its own:
1. `torchrun --nproc_per_node N -m clipforge.train --recipe cifar10-from-scratch` (N=1: plain
   `python -m clipforge.train`); the recipe holds every hyperparameter and the budget;
2. `clipforge eval zeroshot --dataset cifar10 --root test_jpeg.zip --model <checkpoint>`, i.e.
   `clipforge.load` + `ZeroShotClassifier` with the 18 CLIP-paper templates;
3. the curve (per-epoch zero-shot accuracy of the validation hook, training loss) as a PNG
   and the numbers as JSON in benchmarks/results/;
4. with --save-model, and only when the new model scores at least what the shipped one scores
   by the same command, fp16 weights + config + recipe record into
   src/clipforge/pretrained/clipforge-tiny/ (its README is written by hand from the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "cifar10_jpeg"
RESULTS = REPO / "benchmarks" / "results"
PRETRAINED = REPO / "src" / "clipforge" / "pretrained" / "clipforge-tiny"
BIN = Path(sys.executable).parent


def train_command(out: Path, nproc: int, extra: list[str]) -> list[str]:
    """Global batch 128 whatever the process count (the recipe's batch_size is per rank)."""
    args = ["--recipe", "cifar10-from-scratch", "--root", str(DATA / "train_jpeg.zip"), "--out", str(out),
            "--batch-size", str(128 // nproc), *extra]
    launcher = ([str(BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1"]
                if nproc > 1 else [sys.executable])
    return [*launcher, "-m", "clipforge", "train", *args]


def zero_shot(model: str) -> dict:
    """The public measurement: what `clipforge eval zeroshot` reports on the 10,000 test images."""
    cmd = [str(BIN / "clipforge"), "eval", "zeroshot", "--dataset", "cifar10", "--root", str(DATA / "test_jpeg.zip"),
           "--model", model, "--workers", "0", "--json", "--quiet"]
    with tempfile.TemporaryDirectory() as reports:  # the eval's own report files are not results here
        report = json.loads(subprocess.run([*cmd, "--out", reports], check=True, capture_output=True,
                                           text=True).stdout)
    return {"top1": report["metrics"]["top1"], "command": " ".join(["clipforge", *cmd[1:]])}


def plot(records: list[dict], result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clipforge.atomic import atomic_path

    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval" and "val_top1" in r]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot([r["epoch"] for r in train], [r["loss"] for r in train], color="tab:blue", lw=1, label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("contrastive loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot([r["epoch"] for r in evals], [100 * r["val_top1"] for r in evals], "s-", color="tab:red")
    ax2.set_ylabel("zero-shot top-1 on CIFAR-10 test (%)", color="tab:red")
    ax2.axhline(80, color="tab:red", ls=":", lw=1)
    ax1.set_title(f"clipforge train --recipe cifar10-from-scratch: {100 * result['zero_shot_top1']:.2f}% "
                  f"zero-shot ({result['epochs']:.1f} epochs)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def save_model(checkpoint: Path, result: dict) -> None:
    """fp16 storage (loaders return fp32) keeps the shipped file under 20 MB."""
    from clipforge.atomic import write_json_atomic
    from clipforge.weights import load_checkpoint, save_safetensors

    state, config = load_checkpoint(checkpoint)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    save_safetensors(half, PRETRAINED / "model.safetensors", config=config)
    write_json_atomic(PRETRAINED / "config.json", config)
    write_json_atomic(PRETRAINED / "recipe.json", result)
    print(f"saved {PRETRAINED / 'model.safetensors'} ({(PRETRAINED / 'model.safetensors').stat().st_size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2, help="training processes (torchrun, gloo), 1 thread each")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "cifar10-from-scratch")
    p.add_argument("--skip-train", action="store_true", help="only measure, plot and ship an existing run")
    p.add_argument("--save-model", action="store_true", help="replace clipforge-tiny if at least as good")
    p.add_argument("--shipped-top1", type=float, help="the shipped model's top-1 by the same command, if already "
                                                      "measured (skips measuring it again)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if not (DATA / "train_jpeg.zip").is_file():
        sys.exit(f"{DATA / 'train_jpeg.zip'} not found: this benchmark needs ../shared/data/cifar10_jpeg")
    command = train_command(args.out, args.nproc, [x for o in args.overrides for x in ("--set", o)])
    if not args.skip_train:
        subprocess.run(command, check=True)
    from clipforge.train.logs import read_log

    latest = json.loads((args.out / "checkpoints" / "latest.json").read_text())
    checkpoint = args.out / "checkpoints" / f"{latest['name']}.safetensors"
    records = read_log(args.out)
    evals = [r for r in records if r["kind"] == "eval" and "val_top1" in r]
    measured = zero_shot(str(checkpoint))
    from clipforge.train.config import load_recipe

    result = {"recipe": "cifar10-from-scratch", "checkpoint": checkpoint.name, "nproc": args.nproc,
              "train_command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(command)),
              "zero_shot_top1": measured["top1"], "measured_with": measured["command"],
              "steps": latest["step"], "epochs": evals[-1]["epoch"] if evals else None,
              "train_seconds": evals[-1].get("train_s") if evals else None,
              "recipe_fields": load_recipe("cifar10-from-scratch"),
              "history": [{k: r.get(k) for k in ("epoch", "step", "train_s", "val_top1")} for r in evals],
              "load_average_at_end": os.getloadavg(),
              "script": "benchmarks/train_cifar10_from_scratch.py"}
    print(json.dumps({k: v for k, v in result.items() if k not in ("history", "recipe_fields")}, indent=1))
    from clipforge.atomic import write_json_atomic

    write_json_atomic(RESULTS / "train_cifar10_from_scratch.json", result)
    plot(records, result, RESULTS / "train_cifar10_from_scratch.png")
    if args.save_model:
        shipped = args.shipped_top1 if args.shipped_top1 is not None else zero_shot("clipforge-tiny")["top1"]
        if measured["top1"] < shipped:
            print(f"not shipping: {measured['top1']:.4f} < the shipped model's {shipped:.4f}")
            return 1
        save_model(checkpoint, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
