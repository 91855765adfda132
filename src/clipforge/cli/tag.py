"""`clipforge tag --labels "cat,dog,car"`: zero-shot tag a whole library (stored, filterable).

`clipforge tag --list` shows the tags that exist. The labels are remembered: photos added later
are tagged with them as they are added.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from clipforge.cli.common import add_output_arguments, json_text
from clipforge.cli.index import add_library_arguments, fail, open_library, user_errors


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
    parser.set_defaults(func=run)


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
    try:
        with open_library(args, create=False) as library:
            choice = None  # the default: one whose prompts keep every label in the model's context
            if args.templates is None:
                choice = _default_templates(args.labels, library.encoder)
            report = library.classify(",".join(args.labels), templates=choice.templates if choice else args.templates,
                                      top_k=args.top_k, progress=not (args.json or args.quiet))
            from clipforge.zeroshot.label_notices import label_notice
            from clipforge.zeroshot.languages import query_notice  # as classify and search say it

            notices = [] if args.quiet else [  # --quiet: no notices (cli.common.notice)
                query_notice(", ".join(report.labels), library.encoder, "labels"),
                label_notice(report.labels, softmax=report.scoring == "softmax", every_photo=True),
                choice.notice if choice else None, _prompts_cut_notice(report, library.encoder, choice)]
    except user_errors() as exc:
        return fail(exc)
    for notice in notices:
        if notice:
            print(notice, file=sys.stderr)
    print(json_text(report.to_dict()) if args.json else report.summary_line())
    if report.note and not args.json:
        print(f"note: {report.note}")
    return 0


def _default_templates(labels: list[str], encoder: Any) -> Any:
    """`tag`'s templates when --templates is not given (a `prompt_fit.TemplateChoice`), with the notice when they
    are not the usual ``imagenet`` (``zh-imagenet`` for Chinese labels): clipforge-tiny-zh reads 16 tokens, which
    cut the label out of 126 of the 780 prompts zh-imagenet makes for the ten CIFAR-10 labels (71 of 100 CIFAR-10
    photos tagged right; 82 with zh-cifar10, which it takes instead). A --templates the user named is never
    replaced."""
    from clipforge.library.tagging import parse_labels
    from clipforge.text.families import tokenizer_of
    from clipforge.zeroshot.prompt_fit import choose_templates

    model = getattr(encoder, "model", None)
    tokenizer = tokenizer_of(model) if model is not None and hasattr(model, "context_length") else None
    return choose_templates("imagenet", parse_labels(",".join(labels)), tokenizer,
                            getattr(encoder, "name", None) or "")


def _prompts_cut_notice(report: Any, encoder: Any, choice: Any = None) -> str | None:
    """`classify`'s line when the model's context cuts the labels out of the prompts the photos were tagged with
    (clipforge-tiny-zh reads 16 tokens: Chinese labels take the 80 ``zh-imagenet`` templates, most of which put
    the label late, so those prompts score every label alike), said here too: `tag` had said nothing. A default
    `choice` counted them already: its line is said, not counted again (1,000 labels: 80,000 prompts)."""
    from clipforge.text.families import tokenizer_of
    from clipforge.zeroshot.prompt_fit import templates_cut_notice

    model = getattr(encoder, "model", None)
    if model is None or not hasattr(model, "context_length"):
        return None
    if choice is not None and choice.templates == report.templates:
        return choice.cut_notice
    return templates_cut_notice(report.templates, report.labels, tokenizer_of(model),
                                getattr(encoder, "name", None) or "")[1]
