"""`clipforge models`: what can be loaded, how big it is, and whether it is already here."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list architectures: parameters, input size, embed dim, cached")
    parser.add_argument("--all", action="store_true", help="include the tiny test configs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from clipforge.models.summary import summarize_models

    rows = summarize_models(include_test=args.all)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<18}{'params':>10}{'image':>10}{'text':>10}{'input':>7}{'embed':>7}  cached")
    for r in rows:
        print(f"{r['name']:<18}{r['params'] / 1e6:>9.1f}M{r['image_params'] / 1e6:>9.1f}M"
              f"{r['text_params'] / 1e6:>9.1f}M{r['input_size']:>7}{r['embed_dim']:>7}  "
              f"{'yes' if r['cached'] else 'no'}")
    return 0
