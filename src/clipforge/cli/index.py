"""`clipforge index add|remove|list|prune|stats|rebuild|drop-space|set-default|copy`: build and maintain an image
library.

`add`, `remove`, `list` and `prune` run here; `stats`, `drop-space`, `set-default`, `copy` and `rebuild` in
`index_upkeep`; the `--library` / `--model` arguments every library subcommand (index, search, tag) spells the same
way in `library_args`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from clipforge.cli.common import batch_settings_problem, json_text, one_line, print_failures
from clipforge.cli.index_upkeep import run_copy, run_drop_space, run_rebuild, run_set_default, run_stats
from clipforge.cli.library_args import (
    STORE_HELP,
    add_library_arguments,
    count_noun,
    display_path,
    fail,
    open_library,
    user_errors,
)

__all__ = ["STORE_HELP", "add_library_arguments", "count_noun", "display_path", "fail", "open_library", "register",
           "space_notice", "user_errors"]


def register(subparsers: argparse._SubParsersAction) -> None:
    from clipforge.cli.common import add_speed_arguments

    parser = subparsers.add_parser("index", help="build and maintain an image library",
                                   description="Index photos into a library (SQLite + FAISS) for search and tagging.")
    sub = parser.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    add = sub.add_parser("add", help="index image files and folders (incremental, resumable)",
                         description="Embed image files and folders into the library. Incremental: unchanged files "
                                     "are skipped without reading them; safe to interrupt (even kill -9) and run "
                                     "again. Bad files are recorded with their reason (see `index stats`).")
    add.add_argument("paths", nargs="*", metavar="PATH",
                     help="image files or folders (none: fill --model's space with every file the library knows)")
    add.add_argument("--recursive", "-r", action=argparse.BooleanOptionalAction, default=True,
                     help="descend into sub-folders (default: yes; --no-recursive for the top level only)")
    add.add_argument("--batch-size", type=int, default=64, help="images per model batch and per commit (default 64)")
    add.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPU count - 1, max 8)")
    add_speed_arguments(add, workers=False)
    add.add_argument("--retry-failed", action="store_true", help="re-read files that failed before even if unchanged")
    add.add_argument("--rehash", action="store_true",
                     help="read and hash every file named, also those whose size and time are unchanged, and "
                          "re-embed those whose bytes changed (photos that swapped names, or were edited keeping "
                          "their size and time: `cp -p`, `rsync -t`, `exiftool -P`); files that failed are read "
                          "again too. Slower: every file is read")
    add.add_argument("--max-pixels", type=int, default=None, help="refuse images with more pixels (bomb guard)")
    add.add_argument("--index", choices=["flat", "ivf", "hnsw", "auto"], default=None,
                     help="vector index kind to keep (default: as before, initially exact flat)")
    add.add_argument("--float16", action="store_true", help="store vectors as float16 (new libraries only)")
    add.add_argument("--json", action="store_true", help="print the report as JSON")
    add.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_library_arguments(add)
    add.set_defaults(func=run_add, files_ahead=files_ahead,  # stopped: `clipforge.cli.main._stopped`'s line
                     stop_note="every batch indexed before it is kept, nothing lost; run the same command again to "
                               "resume")

    remove = sub.add_parser("remove", help="forget images by id, file or folder (files are not deleted)",
                            description="Forget images by id, file path, or every image under a folder. The files "
                                        "themselves are not touched; an id or path the library does not know is "
                                        "an error, and then nothing is removed.")
    remove.add_argument("items", nargs="+", metavar="ID_OR_PATH")
    add_library_arguments(remove, model=False)
    remove.set_defaults(func=run_remove)

    listing = sub.add_parser("list", help="the indexed files with their ids (what `index remove` takes)",
                             description="List the library's files, oldest first: id and path, and a failed file's "
                                         "reason, whichever model spaces hold them. The ids are what "
                                         "`index remove ID` takes.")
    listing.add_argument("--failed", action="store_true", help="only the files that failed, with their reasons")
    listing.add_argument("--json", action="store_true",
                         help="print JSON Lines: one record a line, not one document (a large library streams); "
                              "nothing for an empty library")
    add_library_arguments(listing, model=False)
    listing.set_defaults(func=run_list)

    prune = sub.add_parser("prune", help="forget images whose files no longer exist",
                           description="Forget every image whose file no longer exists on disk.")
    add_library_arguments(prune, model=False)
    prune.set_defaults(func=run_prune)

    stats = sub.add_parser("stats", help="counts, model, index state, tags, recent failures",
                           description="Show what the library holds: image counts, its model, the vector index's "
                                       "state, tag counts and the most recent failures with their reasons.")
    stats.add_argument("--json", action="store_true", help="print JSON")
    add_library_arguments(stats, model=False)
    stats.set_defaults(func=run_stats)

    drop = sub.add_parser("drop-space", help="forget one model's vectors and tags (its model space)",
                          description="Forget the vectors and tags of one model (a model space, named by model name "
                                      "or fingerprint prefix as `index stats` lists them). Files and other spaces "
                                      "are not touched; the default space goes only when it is the last.")
    drop.add_argument("space", metavar="MODEL_OR_FINGERPRINT")
    add_library_arguments(drop, model=False)
    drop.set_defaults(func=run_drop_space)

    default = sub.add_parser("set-default", help="make another model space the library's default",
                             description="Make one model space (named by model name or fingerprint prefix as `index "
                                         "stats` lists them) the library's default: the one plain `search`, `tag` and "
                                         "`index stats` use. After a model's new build (`index add --model M` filled "
                                         "its space), make it the default, then `index drop-space` the old one.")
    default.add_argument("space", metavar="MODEL_OR_FINGERPRINT")
    add_library_arguments(default, model=False)
    default.set_defaults(func=run_set_default)

    copy = sub.add_parser("copy", help="copy a library (records, vectors, tags) into another store, e.g. Milvus",
                          description="Copy every model space of a library - file records (failed ones with their "
                                      "reason), vectors, tags and tag vocabularies, and which space is the default - "
                                      "into another store, without loading a model or reading an image: an "
                                      "embedded library to a Milvus server (--to milvus://HOST:PORT/COLLECTION) or "
                                      "milvus-lite (--to milvus-lite:PATH.db), or a Milvus store to an embedded "
                                      "library (--to-library PATH). Writes are keyed by path: safe to interrupt "
                                      "(even kill -9) and run again, which finishes the copy; a later `index add` "
                                      "on the destination skips the unchanged files.")
    copy.add_argument("--library", metavar="PATH", default=None,
                      help="the source library folder (default $CLIPFORGE_LIBRARY, else $XDG_DATA_HOME/clipforge/"
                           "library)")
    copy.add_argument("--store", metavar="STORE", default=None,
                      help="the source when it is a Milvus store (milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db); "
                           "$CLIPFORGE_STORE is not read here: a copy names both of its ends")
    target = copy.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="STORE", default=None,
                        help="the destination Milvus store: milvus://HOST:PORT/COLLECTION (token as for --store) or "
                             "milvus-lite:PATH.db")
    target.add_argument("--to-library", metavar="PATH", default=None,
                        help="the destination: an embedded (SQLite + FAISS) library folder")
    copy.add_argument("--space", metavar="MODEL_OR_FINGERPRINT", default=None,
                      help="copy only this model space (a model name or fingerprint prefix as `index stats` lists "
                           "them; default: every space)")
    copy.add_argument("--batch-size", type=int, default=1000, help="files per write (default 1000, at most 1000000)")
    copy.add_argument("--json", action="store_true", help="print the report as JSON")
    copy.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    copy.set_defaults(func=run_copy, stop_note="every batch copied before it is kept, nothing lost; run the same "
                                               "command again to finish the copy")

    rebuild = sub.add_parser("rebuild", help="rebuild the vector index (optionally as another kind)",
                             description="Rebuild the FAISS index from the database, optionally as another kind "
                                         "(flat = exact; ivf/hnsw = approximate, tuned to the target recall).")
    rebuild.add_argument("--index", choices=["flat", "ivf", "hnsw", "auto"], default=None)
    rebuild.add_argument("--nlist", type=int, default=None, help="IVF cells (default ~2*sqrt(n))")
    rebuild.add_argument("--nprobe", type=int, default=None, help="IVF cells scanned (default: tuned for recall)")
    rebuild.add_argument("--target-recall", type=float, default=None, help="recall@10 to tune for (default 0.95)")
    rebuild.add_argument("--json", action="store_true", help="print what was built as JSON")
    add_library_arguments(rebuild)
    rebuild.set_defaults(func=run_rebuild)


def _check_add_arguments(args: argparse.Namespace) -> str | None:
    """The first bad run setting, as one line (a setting is never recorded as a photo's failure)."""
    if args.max_pixels is not None and args.max_pixels < 1:
        return f"--max-pixels must be a positive number of pixels (the bomb guard, e.g. 178956970), got {args.max_pixels}"
    return batch_settings_problem(args, "images per model batch and per commit")


def files_ahead(args: argparse.Namespace) -> tuple[str, Callable[[], list[str]]] | None:
    """What `clipforge.data.prefetch` may decode before the model is loaded: the named files (in the order
    `Library.add`'s scan finds them), under a hint key of what decides their preprocessing. None without paths."""
    if not args.paths:
        return None
    from clipforge.library.scan import discover_files

    where = ["", ""] if args.model else [args.library or "", args.store or ""]  # the library's model, without --model
    key = json.dumps(["index add", args.model or "", *where, bool(args.exact_decode), args.max_pixels])
    return key, lambda: discover_files(args.paths, recursive=args.recursive, notify=False)


def run_add(args: argparse.Namespace) -> int:
    problem = _check_add_arguments(args)
    if problem:
        return fail(problem)
    try:
        from clipforge.inference.encoder import check_precision

        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (args.store or "").startswith("milvus"):
            raise ValueError("under torchrun each rank writes its share of the files into one Milvus collection: "
                             "pass --store milvus://HOST:PORT/COLLECTION (the embedded store has one writer)")
        if not args.paths and not args.model:
            raise ValueError("name the image files or folders to index (or --model M with no paths to fill M's "
                             "model space with every file the library knows)")
        missing = [path for path in args.paths if not os.path.lexists(path)]
        if missing:  # before the library is opened: a typo must not create an empty one
            raise FileNotFoundError(f"no such file or folder: {', '.join(map(display_path, missing))}")
        library = open_library(args, index=args.index, max_pixels=args.max_pixels,
                               vector_dtype="float16" if args.float16 else "float32",
                               precision=check_precision(args.precision), draft=not args.exact_decode,
                               new_space=bool(args.model), towers=("image",))  # the text tower only if it tags
        with library, warnings.catch_warnings():
            from clipforge.library.library_writes import FilledSpaceNotice

            warnings.simplefilter("ignore", FilledSpaceNotice)  # said below, with the space it filled
            report = library.add(args.paths or None, recursive=args.recursive, batch_size=args.batch_size,
                                 workers=args.workers, retry_failed=args.retry_failed,
                                 progress=not (args.quiet or args.json), rehash=args.rehash)
            tagged = getattr(library, "last_tagged", 0)  # the embedded store tags new photos on add
            space = space_notice(library, args.model, report, fill=not args.paths)
    except user_errors() as exc:
        return fail(exc)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args.saved = _saved(report)  # said if the report cannot be written (`cli.main`: a full disk under `> report`)
    if args.json:
        print(json_text(report.to_dict()))
    else:
        print((f"rank {os.environ.get('RANK', '0')}/{world}: " if world > 1 else "") + report.summary_line())
        if args.paths and not (report.added or report.updated or report.relinked or report.touched or report.unchanged
                               or report.failed):
            print(f"notice: no image files in {', '.join(map(display_path, args.paths))} (looked for "
                  f"{'' if args.recursive else 'top-level '}files with image extensions)", file=sys.stderr)
        if tagged:
            print(f"tagged {count_noun(tagged, 'new image')} with the library's labels (see `clipforge tag --list`)")
        print_failures(report.failures, "`clipforge index list --failed`")
    if space:
        print(space, file=sys.stderr)
    usable = report.added + report.updated + report.relinked + report.touched + report.unchanged - report.known_failed
    if report.failed and not usable and world == 1:  # not one rank's share of a torchrun job (as `embed`)
        # every file this run tried failed and none it names is indexed: status 2 as embed, classify and similarity
        # (a cron `index add /mnt/camera` of a wrong mount looked like success to `set -e`; audit 66)
        return fail(f"no file could be indexed: all {report.failed} failed (`clipforge index list --failed` lists "
                    "them with their reasons)")
    return 0


def _saved(report: Any) -> str:
    """What an add left in the library, for the error line when its report cannot be written to stdout: a script
    that retries on that error must know the photos were indexed (it read "error: [Errno 28] No space left on
    device" alone). A failed file is recorded too, with its reason."""
    if not (report.added or report.updated or report.relinked or report.touched or report.failed):
        return "the library was already up to date (nothing added, updated or relinked)"
    return (f"the library was updated all the same ({count_noun(report.added, 'file')} added, {report.updated} "
            f"updated, {report.relinked} relinked, {report.failed} failed)")


def space_notice(library: Any, model: str | None, report: Any, fill: bool = False) -> str | None:
    """One line when an add wrote into a model space other than the library's default (plain `search` and `tag`
    do not read it: `index add 照片 --model clipforge-tiny-zh` on a clipforge-tiny library went on to search
    clipforge-tiny's space, the new photos not in it, without a word), or filled a space with the photos the
    library already held (`Library.last_filled`); None otherwise. `fill`: the add named no path (`index add
    --model M`, every file the library holds): the embedded store counts the held files it read into the space as
    touched, not added, and the notice was left out of exactly the command README gives for a second space (a run
    that embedded nothing only re-read files whose time changed: no fill). With paths (`index add 照片 --model M`,
    zh-CN.md's second model), the held files of those paths read into the space are the touched ones embedded
    beyond the new and changed contents (they had gone without a word)."""
    from clipforge.library.library_writes import filled_sentence

    beyond_new = max(0, int(report.embedded) - int(report.added) - int(report.updated))
    held = int(report.touched) if fill and report.embedded else min(int(report.touched), beyond_new)
    filled = int(getattr(library, "last_filled", 0) or 0) + held
    name = library.encoder.name or model
    if not model or not (filled or report.added or report.updated or report.relinked):
        return f"notice: {filled_sentence(name, filled)}" if filled else None
    default = next((s for s in library.spaces() if s.get("default")), None)
    if default is None or default["fingerprint"] == library.encoder.fingerprint:
        return f"notice: {filled_sentence(name, filled)}" if filled else None
    what = filled_sentence(name, filled) if filled else f"indexed into model space {name}"
    if default["name"] and default["name"] == name:  # one name, two builds: "use the default model X: pass --model X"
        target, new, old = library_target(library), library.encoder.fingerprint[:12], default["fingerprint"][:12]
        labelled = f"{name} ({new})"
        what = filled_sentence(labelled, filled) if filled else f"indexed into model space {labelled}"
        return (f"notice: {what}; the library's default is still an older build of {name} ({old}): make this one the "
                f"default with `clipforge index set-default {target} {new}`, then forget the old one with `clipforge "
                f"index drop-space {target} {old}`")
    return (f"notice: {what}; it is not the library's default: plain `search` and `tag` use the default model "
            f"{default['name'] or '(object)'}: pass `--model {model}` to search or tag this space")


def library_target(library: Any) -> str:
    """The arguments that name `library` in a command a message gives: `--store S` for a Milvus store, else
    `--library L`."""
    import shlex

    spec = getattr(library, "spec", None)
    if spec is not None:
        from clipforge.library.backend import store_argument

        return f"--store {store_argument(spec)}"
    return f"--library {shlex.quote(str(library.paths.root))}"


def run_remove(args: argparse.Namespace) -> int:
    items = [int(i) if i.isdigit() else i for i in args.items]
    try:
        with open_library(args, create=False) as library:
            removed = library.remove(items, missing_ok=False)
    except user_errors() as exc:
        return fail(exc)
    print(f"removed {count_noun(removed, 'image')}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Every file and its id, a page at a time (`iter_images`: a file removed meanwhile by another process shifts
    no later one out of the listing)."""
    status = "failed" if args.failed else None
    try:
        with open_library(args, create=False) as library:
            for record in library.iter_images(status=status):
                if args.json:
                    print(json_text(record.to_dict(), indent=None))  # one line a record; escaped as every --json
                    continue
                failed = f"  (failed: {one_line(record.error or '')})" if record.status == "failed" else ""
                print(f"{record.id:>6}  {one_line(display_path(record.path))}{failed}")
    except BrokenPipeError:  # `index list | head`: the CLI's quiet exit for a closed pipe, not "error: [Errno 32]"
        raise
    except user_errors() as exc:
        return fail(exc)
    return 0


def run_prune(args: argparse.Namespace) -> int:
    try:
        with open_library(args, create=False) as library:
            pruned = library.prune()
    except user_errors() as exc:
        return fail(exc)
    print(f"pruned {count_noun(pruned, 'image')} whose files are gone")
    return 0
