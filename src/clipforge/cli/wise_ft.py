"""`clipforge wise-ft`: weight-space interpolation of a zero-shot and a fine-tuned model."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "wise-ft", help="interpolate zero-shot and fine-tuned weights (WiSE-FT): (1-alpha)*A + alpha*B",
        description="Robust fine-tuning by weight-space ensembling (Wortsman et al., 2022): write a checkpoint "
                    "whose every weight is (1-alpha) times the zero-shot model's plus alpha times the fine-tuned "
                    "model's. Both models must have the same architecture; the result loads with --model OUT.")
    parser.add_argument("--zeroshot", required=True, help="model A, any --model spec (ViT-B/32, clipforge-tiny, a "
                                                          "checkpoint file): the zero-shot model")
    parser.add_argument("--finetuned", required=True, help="model B, any --model spec: the fine-tuned model")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the fine-tuned model, in [0, 1] (default 0.5)")
    parser.add_argument("--out", required=True, help="output .safetensors path")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Failures (a bad spec, different architectures, alpha out of range) reach the CLI's one error edge."""
    import os
    from pathlib import Path

    from clipforge.train.weight_interpolation import wise_ft

    if args.out.endswith(("/", os.sep)) or Path(args.out).is_dir():  # the suffix advice named a sibling file
        raise ValueError(f"--out {args.out} is a folder; name the file to write, e.g. "
                         f"{Path(args.out) / 'wise-ft.safetensors'}")
    if Path(args.out).suffix.lower() != ".safetensors":  # a safetensors file named .pt fooled torch.load
        raise ValueError(f"--out {args.out}: the interpolated weights are written as safetensors; name the file "
                         f"{Path(args.out).with_suffix('.safetensors').name}")
    path = wise_ft(args.zeroshot, args.finetuned, args.alpha, args.out)
    print(f"wrote {path} (alpha={args.alpha})")
    return 0
