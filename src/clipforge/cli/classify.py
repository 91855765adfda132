"""`clipforge classify IMG... --labels "cat,dog"`: zero-shot labels for image files.

An image that cannot be read is skipped with a line saying why; when none can be read the run is an error (one
``error:`` line after those, exit status 2, as `similarity` and every fixable error: it was 1).
"""

from __future__ import annotations

import argparse
import sys

from clipforge.cli.common import (
    FIGURE_TARGET_HELP,
    add_model_argument,
    add_output_arguments,
    add_speed_arguments,
    add_templates_argument,
    json_text,
)

DEFAULT_TEMPLATES = "simple"  # "a photo of a {}.", as the web app's classify


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify", help="zero-shot classify images among given labels",
        description="Classify image files among free-form labels with a CLIP model (no training). "
                    "Prompts default to the 'simple' set (\"a photo of a {}.\"; \"一张{}的照片\" for Chinese "
                    "labels).")
    parser.add_argument("images", nargs="+", metavar="IMG", help="image files or folders (walked like index add)")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", action="append",
                        help='class names separated by "," or the Chinese "，" and "、", e.g. "cat,dog,plane" or '
                             '"猫，狗、飞机" (repeatable: --labels cat --labels dog)')
    labels.add_argument("--labels-file", metavar="F",
                        help='file with one label per line (or a JSON list, or one line of labels separated by '
                             'the wide commas "，" "、"; an ASCII comma stays part of its label: "Washington, D.C.")')
    add_templates_argument(parser, DEFAULT_TEMPLATES)
    parser.add_argument("--template", dest="templates", help=argparse.SUPPRESS)  # old spelling of --templates
    parser.set_defaults(templates=None)  # unnamed: the default, fitted to the model's context (classify_files)
    parser.add_argument("--top-k", "-k", type=int, default=5, help="labels shown per image (default 5)")
    parser.add_argument("--plot", metavar="OUT.png",
                        help="write each image beside a bar chart of its top-k (a PNG; a folder, or a name ending in "
                             f"/ (created): classify.png in it); {FIGURE_TARGET_HELP}")
    add_model_argument(parser, device=True)
    parser.add_argument("--batch-size", type=int, default=32, help="images per model batch (default 32)")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="refuse images with more pixels (bomb guard; default 178956970, as index add)")
    add_speed_arguments(parser)
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipforge.api import resolve_device
    from clipforge.cli.common import (
        batch_settings_problem,
        expand_images,
        figure_target,
        indistinct_notice,
        model_spec,
        one_line,
    )
    from clipforge.errors import UsageError
    from clipforge.library.dbfile import display_path, path_text
    from clipforge.text.typed import check_argument
    from clipforge.zeroshot.files import classify_files, parse_labels, plot_classified, read_labels_file
    from clipforge.zeroshot.label_notices import label_notice

    if args.labels:  # before the model loads: bytes that are not UTF-8 (`text.typed`); the text it reads
        args.labels = [check_argument(value, "--labels") for value in args.labels]
    if args.templates and any(brace in args.templates for brace in "{}\uff5b\uff5d"):  # inline, not a file's name
        args.templates = check_argument(args.templates, "--templates")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    if args.max_pixels is not None and args.max_pixels < 1:  # index add's words for its own --max-pixels
        raise ValueError(f"--max-pixels must be a positive number of pixels (the bomb guard, e.g. 178956970), "
                         f"got {args.max_pixels}")
    if problem := batch_settings_problem(args):
        raise UsageError(problem)
    labels = parse_labels(",".join(args.labels)) if args.labels is not None else _distinct(
        read_labels_file(args.labels_file), args)
    images = expand_images(args.images)  # before the model loads: a typo costs one line
    if args.plot:
        args.plot = figure_target(args.plot, "classify.png",
                                  inputs=[*images.files, *filter(None, [args.labels_file])])
    device = str(resolve_device(args.device))
    out = classify_files(images.files, labels, model_spec(args), templates=args.templates, top_k=args.top_k,
                         plot=None, device=device, progress=not (args.json or args.quiet),
                         precision=args.precision, draft=not args.exact_decode, batch_size=args.batch_size,
                         workers=args.workers, max_pixels=args.max_pixels)
    # a folder's FIFOs, sockets and device files, never opened: skipped and named as the unreadable files are
    out["errors"] = [*({"image": path, "error": reason} for path, reason in images.rejected), *out["errors"]]
    # labels in a script the loaded model was not trained for (asked of the model, not of the --model string: a
    # checkpoint file's name says nothing of its language); after the model resolved; --quiet: none
    notice = out.pop("notice", None)
    if not args.quiet and notice:
        print(notice, file=sys.stderr)
    labels_notice = label_notice(labels, softmax=out.get("scoring", "softmax") == "softmax")
    for line in (labels_notice, out.pop("templates_notice", None), out.pop("cut_notice", None)):
        if line and not args.quiet:  # --quiet: no notices (cli.common.notice)
            print(line, file=sys.stderr)
    if not args.quiet and out.get("indistinct"):
        print(indistinct_notice(out["indistinct"], out["model"], out.get("context_length", 0), "labels"),
              file=sys.stderr)
    plot_failed = None
    try:  # a plot that cannot be written (a full disk) does not lose the results: printed, then the one error line
        if args.plot and out["results"]:
            out["plot"] = plot_classified(out["results"], args.plot)
    except (OSError, ValueError) as error:
        plot_failed, out["plot"] = error, None
    if args.json:  # names as `search --json` writes them: one that is not UTF-8 as b64:..., lossless
        print(json_text({**out, "results": [{**r, "image": path_text(r["image"])} for r in out["results"]],
                         "errors": [{**e, "image": path_text(e["image"])} for e in out["errors"]]}))
    else:
        for result in out["results"]:  # as `search` prints names: one line each, nothing a terminal acts on
            print(one_line(display_path(result["image"])))
            for name, p in zip(result["labels"], result["probabilities"], strict=True):
                print(f"  {p:7.2%}  {name}")
        if out.get("note"):
            print(f"note: {out['note']}")
        if out.get("plot"):
            print(f"plot written to {out['plot']}")
    for error in out["errors"]:
        print(f"skipped {one_line(display_path(error['image']))}: {error['error']}", file=sys.stderr)
    if out["errors"] and not out["results"]:  # nothing could be read: a fixable error, status 2 as in `similarity`
        from clipforge.cli.main import report_error

        return report_error(f"none of the {len(out['errors'])} image(s) could be read (each named above): "
                            "nothing to classify")
    if plot_failed is not None:
        raise plot_failed
    return 0


def _distinct(labels: list[str], args: argparse.Namespace) -> list[str]:
    """A labels file's labels, each once (as `--labels` keeps them): a repeated line split the probability
    between its copies ("cat 31.51%" printed twice). The file reader keeps repeats for evaluations, whose
    class i is line i. A text file of one line holding labels separated by a Chinese input method's "，" or "、"
    ("猫，狗、鸟") gives them, said in a notice: classifying among one label is always 100%. An ASCII comma splits
    nothing here: one line may be one label ("Washington, D.C."), and a JSON list in a .txt file stays whole."""
    import re

    from clipforge.text.labels import LABEL_SEPARATORS, label_key

    wide = "".join(sep for sep in LABEL_SEPARATORS if not sep.isascii())  # "，" and "、": never inside a label
    line = labels[0] if len(labels) == 1 else ""
    parts = [part.strip() for part in re.split(f"[{re.escape(wide)}]", line) if part.strip()]
    if len(parts) > 1 and not str(args.labels_file).lower().endswith(".json"):
        if not args.quiet:
            print(f"notice: {args.labels_file} holds one line; its labels separated by "
                  f"{', '.join(repr(sep) for sep in wide[:-1])} or {wide[-1]!r} are read as {len(parts)} labels",
                  file=sys.stderr)
        labels = parts
    first = {}  # one label per Unicode NFKC form, its first spelling (as `--labels` keeps them: `split_labels`)
    for label in labels:
        first.setdefault(label_key(label), label)
    kept = list(first.values())
    if len(kept) < len(labels) and not args.quiet:
        keys = [label_key(label) for label in labels]
        repeated = sorted({first[key] for key in keys if keys.count(key) > 1})
        print(f"notice: {args.labels_file} repeats {len(labels) - len(kept)} label(s) ({', '.join(repeated[:5])}"
              f"{', ...' if len(repeated) > 5 else ''}); each is scored once", file=sys.stderr)
    return kept
