"""The `clipforge train` command line: its arguments and what running it does.

It lives in the training package (not in `clipforge.cli`) so that both entry points import
downwards: `clipforge train` (`clipforge.cli.train` registers it) and
`python -m clipforge.train` / `torchrun --nproc_per_node N -m clipforge.train` (`__main__`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", help="packaged recipe (see --list-recipes) or a JSON file")
    parser.add_argument("--list-recipes", action="store_true", help="print the packaged recipes and exit")
    parser.add_argument("--model", help="what to train: an architecture name (ViT-B/32, test-vit-tiny: random "
                                        "init), or weights to fine-tune, as every command takes them (a checkpoint "
                                        "file, clipforge-tiny, ARCH:TAG); replaces the recipe's model, "
                                        "model_config and pretrained unless --pretrained is given")
    parser.add_argument("--pretrained", help="initial weights for the recipe's architecture: any model spec (a registry name, "
                             "ARCH:TAG, clipforge-tiny, a checkpoint file)")
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


def _message(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split("\n")[:1]) or type(err).__name__


def run(args: argparse.Namespace) -> int:
    """Build the config (recipe < flags < --set), train, print a JSON summary (rank 0)."""
    from clipforge.train.config import build_config, list_recipes
    from clipforge.weights.errors import UnsafeCheckpointError

    if args.list_recipes:
        print("\n".join(list_recipes()))
        return 0
    fields = {k: getattr(args, k) for k in ("model", "pretrained", "root", "split", "steps", "epochs", "batch_size",
                                             "lr", "out_dir", "resume")}
    try:
        config = build_config(args.recipe, args.overrides, **fields)
        explicit = {o.split("=", 1)[0].strip().replace("-", "_") for o in args.overrides}
        if args.model and not args.pretrained and "pretrained" not in explicit:
            config.pretrained = None  # the recipe's weights belong to its own architecture
        if args.model and "model_config" not in explicit:
            config.model_config = None
        from clipforge.train.trainer import train

        result = train(config)
    except (ValueError, KeyError, OSError, UnsafeCheckpointError) as err:
        print(f"clipforge train: {_message(err)}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        summary = {k: (str(v) if k == "checkpoint" else v) for k, v in result.items() if k != "losses"}
        print(json.dumps(summary, indent=1))
    return 0
