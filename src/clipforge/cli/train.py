"""`clipforge train`: contrastive fine-tuning or pretraining from a recipe plus overrides.

Multi-process: `torchrun --nproc_per_node N -m clipforge.train --recipe ...` (same arguments).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", help="packaged recipe (finetune-cub, finetune-cars, pretrain) or a JSON file")
    parser.add_argument("--list-recipes", action="store_true", help="print the packaged recipes and exit")
    parser.add_argument("--model", help="architecture (e.g. ViT-B/32, test-vit-tiny); drops the recipe's "
                                        "pretrained weights unless --pretrained is given")
    parser.add_argument("--pretrained", help="initial weights: a name (ViT-B/32) or a checkpoint path")
    parser.add_argument("--root", help="dataset root / caption CSV / caption folder / shard pattern")
    parser.add_argument("--split", help="dataset split to train on")
    parser.add_argument("--steps", type=int, help="stop after this many optimiser steps")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--out", dest="out_dir", help="run folder (logs, checkpoints, curves)")
    parser.add_argument("--resume", help="'latest', 'best' or a checkpoint path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set lock_image=true --set micro_batch=16")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="fine-tune or pretrain a CLIP (recipes + overrides; torchrun for DDP)")
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from clipforge.train.config import build_config, list_recipes

    if args.list_recipes:
        print("\n".join(list_recipes()))
        return 0
    fields = {k: getattr(args, k) for k in ("model", "pretrained", "root", "split", "steps", "epochs", "batch_size",
                                             "lr", "out_dir", "resume")}
    try:
        config = build_config(args.recipe, args.overrides, **fields)
        if args.model and not args.pretrained and not any(o.startswith("pretrained=") for o in args.overrides):
            config.pretrained = None  # the recipe's weights belong to its own architecture
        from clipforge.train.trainer import train

        result = train(config)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"clipforge train: {err}", file=sys.stderr)
        return 2
    import os

    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        summary = {k: (str(v) if k == "checkpoint" else v) for k, v in result.items() if k != "losses"}
        print(json.dumps(summary, indent=1))
    return 0
