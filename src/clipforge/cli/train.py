"""`clipforge train`: contrastive fine-tuning or pretraining from a recipe plus overrides.

Multi-process: `torchrun --nproc_per_node N -m clipforge.train --recipe ...` (same arguments,
defined with the trainer in `clipforge.train.command`).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from clipforge.train.command import add_arguments, run

    parser = subparsers.add_parser("train", help="fine-tune or pretrain a CLIP (recipes + overrides; torchrun for DDP)",
                                   description="Contrastive training from a recipe (--list-recipes) plus overrides. "
                                               "Multi-process: torchrun --nproc_per_node N -m clipforge.train ...")
    add_arguments(parser)
    parser.set_defaults(func=run)
