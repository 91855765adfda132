"""`clipforge embed PATH... --out DIR`: image embeddings in clip-retrieval's npy + parquet layout.

Runs as one process or under `torchrun --nproc_per_node N` (or any launcher setting RANK and
WORLD_SIZE), each rank embedding a disjoint set of partitions on its own GPU when there is one.
A rerun into the same --out resumes the same job and refuses another (`clipforge.library.export`), and writes
again the partitions holding a photo edited since; the files that failed (entries that are not regular files
among them: a FIFO or device named ``x.jpg``) are named on stderr as `index add` names them. In the files and in
--json a name that is not UTF-8 is written as ``b64:`` + the base64 of its bytes (lossless:
`clipforge.library.dbfile.path_text`); the lines on stderr show it with ``\\xNN`` escapes, for people. A setting out of range
(`--shard-size 0`, `--batch-size -1`, `--workers -1`, `--max-pixels 0`), an --out that would hide the photos
(the input folder itself, or a folder holding it) or PATHs holding no image file at all is one line and exit
status 2 before the model loads or a file is written: an export of nothing used to exit 0 leaving
``job.json`` (a job of 0 files) in --out, so the next export into it was refused as another job.
While a run writes --out it holds ``--out/.clipforge-embed.lock`` (`clipforge.library.export_lock.embed_lock`): a second
`embed` there (a resume, another job, --overwrite) is one line naming the running job and exit status 2, before the
model loads or a file in --out is touched; the ranks of one torchrun job share it, and a killed run's lock dies with it.
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
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="refuse images with more pixels (bomb guard; default 178956970, as index add)")
    parser.add_argument("--float32", action="store_true", help="write float32 (default float16, as clip-retrieval)")
    parser.add_argument("--recursive", "-r", action=argparse.BooleanOptionalAction, default=True,
                        help="descend into sub-folders (default: yes; --no-recursive for the top level only)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the embeddings DIR holds (its partitions, manifest and job record; nothing "
                             "else in DIR) instead of resuming them; without it a rerun resumes only the same job "
                             "(model, --precision, --exact-decode, --float32, --shard-size, files) and refuses "
                             "any other")
    add_output_arguments(parser)
    parser.set_defaults(func=run, files_ahead=files_ahead,
                        stop_note="every partition written before it is kept, nothing lost; run the same command "
                                  "again to resume")


def files_ahead(args: argparse.Namespace) -> tuple[str, Callable[[], list[str]]] | None:
    """What `clipforge.data.prefetch` may decode before the model is loaded: the files `export_embeddings`
    will read (its own discovery), under a hint key of what decides their preprocessing; None (nothing
    decoded ahead) for a run that `run` will refuse."""
    from clipforge.library.scan import discover_files

    if _check_arguments(args) is not None:
        return None
    # --max-pixels decides the pixel key too (as in index add's); named only when given, so the hints that runs
    # without it saved still match
    where = [args.max_pixels] if args.max_pixels is not None else []
    key = json.dumps(["embed", args.model or "", bool(args.exact_decode), *where])
    return key, lambda: discover_files(args.paths, recursive=args.recursive, exclude=[args.out], notify=False)


def _check_arguments(args: argparse.Namespace) -> str | None:
    """The first bad run setting, as one line naming its flag (as `index add` checks its own; the library says
    the same of its parameters, `clipforge.library.export.check_export_settings`). It imports nothing heavy:
    `files_ahead` calls it before torch loads."""
    if args.shard_size < 1:
        return f"--shard-size must be at least 1 (images per output partition), got {args.shard_size}"
    if args.max_pixels is not None and args.max_pixels < 1:  # index add's words for its own --max-pixels
        return f"--max-pixels must be a positive number of pixels (the bomb guard, e.g. 178956970), got {args.max_pixels}"
    from clipforge.cli.common import batch_settings_problem

    return batch_settings_problem(args)


def run(args: argparse.Namespace) -> int:
    from clipforge.api import resolve_device
    from clipforge.cli.common import model_spec
    from clipforge.cli.main import report_error
    from clipforge.library.dbfile import display_path
    from clipforge.library.export import check_output_apart, export_embeddings

    problem = _check_arguments(args)
    if problem is not None:  # before the default-model notice, the model and any file in --out
        return report_error(problem)
    check_output_apart(args.paths, args.out, recursive=args.recursive)  # a UsageError: one line, status 2
    nothing = _nothing_to_embed(args)
    if nothing is not None:  # before the model loads and before --out (or its job.json) exists
        return report_error(nothing)
    # a run beside it on --out is one line, before the model loads (`embed_lock`, OutputInUse)
    report = export_embeddings(args.paths, args.out, model_spec(args), recursive=args.recursive,
                               shard_size=args.shard_size, batch_size=args.batch_size, workers=args.workers,
                               dtype="float32" if args.float32 else "float16", overwrite=args.overwrite,
                               progress=not (args.json or args.quiet), precision=args.precision,
                               draft=not args.exact_decode, device=str(resolve_device(args.device)),
                               max_pixels=args.max_pixels)
    if args.json:
        print(json_text(report.to_dict()))
    else:
        print(report.summary_line())
        print_failures(report.failures, f"{args.out}/stats/stats_*.json")  # as `index add` names them
    if report.failed and not report.images and not report.skipped and report.world_size == 1:
        # a script's `set -e` went on with an empty img_emb_0.npy; a resume finishing a job whose earlier
        # partitions hold vectors is not this, nor one rank's share of a torchrun job (review 62)
        return report_error(f"no file could be embedded: all {report.failed} failed (the reasons are in "
                            f"{display_path(args.out)}/stats/stats_*.json)")
    return 0


def _nothing_to_embed(args: argparse.Namespace) -> str | None:
    """The error for PATHs holding no image file (found as the export will find them, `discover_files`), naming
    them as `index add` names them in its notice; None when there is something to embed. An export of zero
    files is refused rather than run: it wrote a job of 0 files into --out (so the next real export there
    was "another embed job") and a manifest of nothing, and exited 0 having done nothing.
    The export walks the PATHs again: the warning of a folder this walk could not read is kept for the export's
    walk to give (it was said twice), and given here only when there is nothing to embed (it may be why)."""
    import warnings

    from clipforge.library.dbfile import display_path
    from clipforge.library.scan import scan_paths

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        found = scan_paths(args.paths, recursive=args.recursive, exclude=[args.out])
    if found.files or found.rejected:  # a FIFO named x.jpg is embed's to report as failed, as index add does
        return None
    for warning in said:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    where = ", ".join(map(display_path, args.paths))
    looked = "top-level files" if not args.recursive else "files"
    return (f"no image files in {where} (looked for {looked} with image extensions): nothing to embed, "
            f"nothing written to {display_path(args.out)}")
