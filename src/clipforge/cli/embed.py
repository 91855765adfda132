"""`clipforge embed PATH... --out DIR`: image embeddings in clip-retrieval's npy + parquet layout.

Runs as one process or under `torchrun --nproc_per_node N` (or any launcher setting RANK and
WORLD_SIZE), each rank embedding a disjoint set of partitions.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed", help="export image embeddings (img_emb/*.npy + metadata/*.parquet), shardable",
        description="Embed every image under PATH into OUT/img_emb/img_emb_{i}.npy and "
                    "OUT/metadata/metadata_{i}.parquet. Under torchrun each rank takes partitions i % WORLD_SIZE.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (walked recursively)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--model", default=None, help="model name, checkpoint path, or test config")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default cpu, or cuda:LOCAL_RANK)")
    parser.add_argument("--shard-size", type=int, default=100_000, help="images per output partition")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="decoding processes per rank")
    parser.add_argument("--float32", action="store_true", help="write float32 (default float16, as clip-retrieval)")
    parser.add_argument("--no-recursive", action="store_true", help="only the top level of folders")
    parser.add_argument("--overwrite", action="store_true", help="redo partitions that already exist")
    parser.add_argument("--json", action="store_true", help="print this rank's report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from clipforge.cli.index import user_errors
    from clipforge.library.encoder import default_model_name, resolve_encoder
    from clipforge.library.export import export_embeddings

    device = args.device
    if device is None and "LOCAL_RANK" in os.environ:
        import torch

        device = f"cuda:{os.environ['LOCAL_RANK']}" if torch.cuda.is_available() else "cpu"
    try:
        encoder = resolve_encoder(args.model or default_model_name(), device=device)
        report = export_embeddings(args.paths, args.out, encoder, recursive=not args.no_recursive,
                                   shard_size=args.shard_size, batch_size=args.batch_size, workers=args.workers,
                                   dtype="float32" if args.float32 else "float16", overwrite=args.overwrite,
                                   progress=not args.json)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary_line())
    return 0
