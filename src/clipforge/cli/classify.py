"""`clipforge classify IMG... --labels "cat,dog"`: zero-shot labels for image files."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify", help="zero-shot classify images among given labels",
        description="Classify image files among free-form labels with a CLIP model (no training).")
    parser.add_argument("images", nargs="+", metavar="IMG", help="image files")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help='comma-separated class names, e.g. "cat,dog,plane"')
    labels.add_argument("--labels-file", metavar="F", help="file with one label per line (or a JSON list)")
    templates = parser.add_mutually_exclusive_group()
    templates.add_argument("--template", help='one prompt template with {} for the label (default "a photo of a {}.")')
    templates.add_argument("--templates", help="template set name (imagenet, imagenet7, cifar10, ...) or a file")
    parser.add_argument("--top-k", type=int, default=5, help="labels shown per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--plot", metavar="OUT.png", help="write each image beside a bar chart of its top-k")
    parser.add_argument("--model", default=None,
                        help="registry name, checkpoint path, or config for random weights "
                             "(default: ViT-B/32 when downloaded, else the shipped clipforge-tiny)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipforge.cli.eval import user_errors
    from clipforge.zeroshot.files import classify_files, parse_labels, read_labels_file

    try:
        labels = parse_labels(args.labels) if args.labels is not None else read_labels_file(args.labels_file)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    templates = args.template or args.templates or "simple"
    model = args.model
    if model is None:
        from clipforge.resolve import default_model

        model, notice = default_model()
        if notice:
            print(notice, file=sys.stderr)
    try:
        out = classify_files(args.images, labels, model, templates=templates, top_k=args.top_k,
                             plot=args.plot, device=args.device, progress=not args.json)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        for result in out["results"]:
            print(result["image"])
            for name, p in zip(result["labels"], result["probabilities"], strict=True):
                print(f"  {p:7.2%}  {name}")
        if out.get("plot"):
            print(f"plot written to {out['plot']}")
    for error in out["errors"]:
        print(f"skipped {error['image']}: {error['error']}", file=sys.stderr)
    return 1 if out["errors"] and not out["results"] else 0
