"""`clipforge similarity`: the image x text probability table, optionally as a heatmap."""

from __future__ import annotations

import argparse

from clipforge.cli.common import add_model_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("similarity", help="image x text similarity table and heatmap")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--text", nargs="+", required=True, help="texts to compare with each image")
    add_model_argument(parser, device=True)
    parser.add_argument("--plot", metavar="OUT.png", help="write the cosine-similarity heatmap to this PNG")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipforge.cli.common import load_cli_model
    from clipforge.similarity import compute_similarity, plot_similarity

    loaded = load_cli_model(args)
    table = compute_similarity(loaded.model, loaded.preprocess, args.images, args.text)
    print(table.format())
    if args.plot:
        print(f"heatmap written to {plot_similarity(table, args.images, args.plot)}")
    return 0
