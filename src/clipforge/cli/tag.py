"""`clipforge tag --labels "cat,dog,car"`: zero-shot tag a whole library (stored, filterable).

`clipforge tag --list` shows the tags that exist. The labels are remembered: photos added later
are tagged with them as they are added.
"""

from __future__ import annotations

import argparse
import sys

from clipforge.cli.common import add_output_arguments, json_text
from clipforge.cli.library_args import add_library_arguments, fail, open_library, user_errors


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tag", help="zero-shot tag every library image with labels you choose",
        description="Classify every image of a library among LABELS (no image is decoded again: the stored "
                    "vectors are reused). Tags are stored and usable as `clipforge search --tag LABEL`; the "
                    "labels are remembered, and photos added later are tagged with them. --list shows the "
                    "tags that exist.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--labels", action="append",
                      help='comma-separated labels, e.g. "cat,dog,car" (repeatable: --labels cat --labels dog)')
    what.add_argument("--list", action="store_true",
                      help="list the library's tags with how many photos have each as their top tag")
    parser.add_argument("--templates", default=None,
                        help="prompt template set (imagenet, imagenet7, simple, ...), a template with {}, "
                             "or a file (default imagenet: OpenAI's 80, zh-imagenet for Chinese labels; when the "
                             "model's context would cut labels out of those prompts, the largest shipped set that "
                             "keeps them, said in a notice)")
    parser.add_argument("--top-k", "-k", type=int, default=5, help="labels kept per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_output_arguments(parser, json=False)
    add_library_arguments(parser)
    parser.set_defaults(func=run, stop_note="run the same command again to finish tagging")


def run_list(args: argparse.Namespace) -> int:
    try:
        with open_library(args, create=False) as library:
            counts = library.tag_counts()
    except user_errors() as exc:
        return fail(exc)
    if args.json:
        print(json_text({"tags": counts}))
    elif not counts:
        print('no tags yet: tag the library with `clipforge tag --labels "cat, dog, car"`')
    else:
        from clipforge.text.width import display_width, pad

        width = max(display_width(label) for label in counts)  # columns: a Chinese label takes two a character
        for label, count in counts.items():
            print(f"{pad(label, width)}  {count}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return run_list(args)
    if args.top_k < 1:
        return fail(f"--top-k must be at least 1 (labels kept per image), got {args.top_k}")
    from clipforge.text.typed import check_argument

    try:  # before the library opens: bytes that are not UTF-8 (`text.typed`) failed in SQLite once all was embedded
        args.labels = [check_argument(value, "--labels") for value in args.labels]
        if args.templates and any(brace in args.templates for brace in "{}\uff5b\uff5d"):  # inline, not a file
            args.templates = check_argument(args.templates, "--templates")
    except ValueError as exc:
        return fail(exc)
    try:
        with open_library(args, create=False) as library:
            # --templates unnamed (None): the default, fitted to the model's context (`tagging.tag_templates`)
            report = library.classify(",".join(args.labels), templates=args.templates, top_k=args.top_k,
                                      progress=not (args.json or args.quiet))
            from clipforge.zeroshot.label_notices import label_notice
            from clipforge.zeroshot.languages import query_notice  # as classify and search say it

            notices = [n for n in report.notices if n.startswith("warning:")] if args.quiet else [
                query_notice(", ".join(report.labels), library.encoder, "labels"),  # --quiet: no notices
                label_notice(report.labels, softmax=report.scoring == "softmax", every_photo=True),
                *report.notices]  # (cli.common.notice), but a warning (`tagging.old_tags_kept`) still
    except user_errors() as exc:
        return fail(exc)
    for notice in notices:
        if notice:
            print(notice, file=sys.stderr)
    print(json_text(report.to_dict()) if args.json else report.summary_line())
    if report.note and not args.json:
        print(f"note: {report.note}")
    return 0
