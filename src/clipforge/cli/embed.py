"""`clipforge embed PATH... --out DIR`: image embeddings in clip-retrieval's npy + parquet layout.

Runs as one process or under `torchrun --nproc_per_node N` (or any launcher setting RANK and
WORLD_SIZE), each rank embedding a disjoint set of partitions on its own GPU when there is one.
A rerun into the same --out resumes the same job and refuses another (`clipforge.library.export`);
the files that failed are named on stderr as `index add` names them. A setting out of range
(`--shard-size 0`, `--batch-size -1`, `--workers -1`) or an --out that would hide the photos (the input
folder itself, or a folder holding it) is one line and exit status 2 before the model loads or a file is written.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from clipforge.cli.common import (
    add_model_argument,
    add_output_arguments,
    add_speed_arguments,
    json_text,
    print_failures,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed", help="export image embeddings (img_emb/*.npy + metadata/*.parquet), shardable",
        description="Embed every image under PATH into OUT/img_emb/img_emb_{i}.npy and "
                    "OUT/metadata/metadata_{i}.parquet. Under torchrun each rank takes partitions i % WORLD_SIZE.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_model_argument(parser, device=True)
    parser.add_argument("--shard-size", type=int, default=100_000, help="images per output partition")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model batch (default 64)")
    add_speed_arguments(parser)
    parser.add_argument("--float32", action="store_true", help="write float32 (default float16, as clip-retrieval)")
    parser.add_argument("--recursive", "-r", action=argparse.BooleanOptionalAction, default=True,
                        help="descend into sub-folders (default: yes; --no-recursive for the top level only)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the embeddings DIR holds (its partitions, manifest and job record; nothing "
                             "else in DIR) instead of resuming them; without it a rerun resumes only the same job "
                             "(model, --precision, --exact-decode, --float32, --shard-size, files) and refuses "
                             "any other")
    add_output_arguments(parser)
    parser.set_defaults(func=run, files_ahead=files_ahead)


def files_ahead(args: argparse.Namespace) -> tuple[str, Callable[[], list[str]]] | None:
    """What `clipforge.data.prefetch` may decode before the model is loaded: the files `export_embeddings`
    will read (its own discovery), under a hint key of what decides their preprocessing; None (nothing
    decoded ahead) for a run that `run` will refuse."""
    from clipforge.library.scan import discover_files

    if _check_arguments(args) is not None:
        return None
    key = json.dumps(["embed", args.model or "", bool(args.exact_decode)])
    return key, lambda: discover_files(args.paths, recursive=args.recursive, exclude=[args.out])


def _check_arguments(args: argparse.Namespace) -> str | None:
    """The first bad run setting, as one line naming its flag (as `index add` checks its own; the library says
    the same of its parameters, `clipforge.library.export.check_export_settings`). It imports nothing heavy:
    `files_ahead` calls it before torch loads."""
    if args.shard_size < 1:
        return f"--shard-size must be at least 1 (images per output partition), got {args.shard_size}"
    from clipforge.cli.common import batch_settings_problem

    return batch_settings_problem(args)


def run(args: argparse.Namespace) -> int:
    from clipforge.api import resolve_device
    from clipforge.cli.common import model_spec
    from clipforge.cli.main import report_error
    from clipforge.library.export import check_output_apart, export_embeddings

    problem = _check_arguments(args)
    if problem is not None:  # before the default-model notice, the model and any file in --out
        return report_error(problem)
    check_output_apart(args.paths, args.out, recursive=args.recursive)  # a UsageError: one line, status 2
    report = export_embeddings(args.paths, args.out, model_spec(args), recursive=args.recursive,
                               shard_size=args.shard_size, batch_size=args.batch_size, workers=args.workers,
                               dtype="float32" if args.float32 else "float16", overwrite=args.overwrite,
                               progress=not (args.json or args.quiet), precision=args.precision,
                               draft=not args.exact_decode, device=str(resolve_device(args.device)))
    if args.json:
        print(json_text(report.to_dict()))
        return 0
    print(report.summary_line())
    print_failures(report.failures, f"{args.out}/stats/stats_*.json")  # as `index add` names them
    return 0
