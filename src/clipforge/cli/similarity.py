"""`clipforge similarity`: the image x text probability table, optionally as a heatmap.

`--max-pixels N` is the pixel limit of `index add`, `embed` and `serve` (the bomb guard), through the same
`clipforge.data.files.with_max_pixels`: a photo over the default limit is skipped with a reason that says
`--max-pixels` allows more, and this command had no such flag.
"""

from __future__ import annotations

import argparse
import copy
import sys

from clipforge.cli.common import (
    FIGURE_TARGET_HELP,
    add_model_argument,
    add_output_arguments,
    add_speed_arguments,
    json_text,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "similarity", help="image x text similarity table and heatmap",
        description="For each image, the probability of each text (softmax of the cosine similarities at the "
                    "model's logit scale), as in OpenAI's introductory notebook; --plot draws the cosine heatmap.")
    # "*", checked in `run`: with "+", `--text A B photo.jpg` (texts first) read the photo as a text and argparse
    # could only say that IMG was missing
    parser.add_argument("images", nargs="*", metavar="IMG", help="image files or folders (walked like index add)")
    parser.add_argument("--text", nargs="+", action="extend", required=True,
                        help="texts to compare with each image (--text A B, or --text A --text B)")
    add_model_argument(parser, device=True)
    parser.add_argument("--plot", metavar="OUT.png",
                        help="write the cosine-similarity heatmap to this PNG (a folder, or a name ending in / "
                             f"(created): similarity.png in it); {FIGURE_TARGET_HELP}")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="refuse images with more pixels (bomb guard; default 178956970, as index add)")
    add_speed_arguments(parser, workers=False)
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipforge.cli.common import expand_images, figure_target, indistinct_notice, load_cli_model, one_line
    from clipforge.cli.main import report_error
    from clipforge.data.files import with_max_pixels
    from clipforge.library.dbfile import display_path, path_text
    from clipforge.similarity import compute_similarity, plot_similarity
    from clipforge.text.typed import check_argument

    # before the model loads: bytes that are not UTF-8, or nothing visible (`text.typed`); the text it reads
    args.text = [check_argument(text, "--text", words=True) for text in args.text]
    if args.max_pixels is not None and args.max_pixels < 1:  # index add's words for its own --max-pixels
        raise ValueError(f"--max-pixels must be a positive number of pixels (the bomb guard, e.g. 178956970), "
                         f"got {args.max_pixels}")
    if not args.images:
        raise ValueError(_no_images(args.text))
    images = expand_images(args.images)  # before the model loads: a typo costs one line
    args.images = images.files
    if args.plot:
        args.plot = figure_target(args.plot, "similarity.png", inputs=args.images)
    loaded = load_cli_model(args)
    preprocess = loaded.preprocess
    if args.exact_decode:
        preprocess = copy.copy(preprocess)
        preprocess.draft = False
    preprocess = with_max_pixels(preprocess, args.max_pixels)  # a copy when it changes the limit
    skipped = list(images.rejected)  # a folder's FIFOs, sockets and device files, never opened

    def say_skipped() -> None:  # as `classify` says it: the table has no row for these
        for path, reason in skipped:
            print(f"skipped {one_line(display_path(path))}: {reason}", file=sys.stderr)

    table = compute_similarity(loaded.model, preprocess, args.images, args.text, precision=args.precision)
    skipped += [(str(bad.path), bad.reason) for bad in table.skipped]
    from clipforge.text.context_cut import same_after_cut
    from clipforge.zeroshot.languages import text_notices

    # a script the model was not trained for; each text its context cut
    for notice in [] if args.quiet else text_notices(args.text, loaded, loaded.name, loaded.tokenizer, "text",
                                                     "read"):
        print(notice, file=sys.stderr)
    if not args.quiet and len(set(args.text)) == 1 and str(getattr(loaded.model, "scoring", "softmax")) == "softmax":
        print(f"notice: one text ({args.text[0]!r}): a softmax over one text is always 1.0000; give the texts it "
              "competes with, e.g. --text \"a dog\" \"a cat\" (the cosine is in --json)", file=sys.stderr)
    context = int(getattr(loaded.model, "context_length", 77))
    if not args.quiet and (same := same_after_cut(loaded.tokenizer, {text: [text] for text in args.text})):
        print(indistinct_notice(same, loaded.name, context, "texts"), file=sys.stderr)
    plot, plot_failed = None, None
    try:  # a plot that cannot be written (a full disk) does not lose the table: printed, then the one error line
        plot = str(plot_similarity(table, None, args.plot)) if args.plot and table.image_paths else None
    except (OSError, ValueError) as error:
        plot_failed = error
    say_skipped()
    if args.json:  # names as `search --json` writes them: one that is not UTF-8 as b64:..., lossless
        print(json_text({"model": loaded.name, "weights": loaded.weights,
                         "images": [path_text(path) for path in table.image_paths], "texts": table.texts,
                         "probabilities": table.probabilities.tolist(), "cosine": table.cosine.tolist(),
                         "plot": plot, "errors": [{"image": path_text(path), "error": reason}
                                                  for path, reason in skipped]}))
    elif table.image_paths:  # no row, no table: the error line below says why
        print(table.format(shown=lambda name: one_line(display_path(name))))  # as `search` prints paths
        if plot:
            print(f"plot written to {plot}")
    if not table.image_paths:  # none could be read: every file named above, then one line and status 2 (`classify`)
        return report_error(f"none of the {len(skipped)} image(s) could be read (each named above): nothing to "
                            "compare")
    if plot_failed is not None:
        raise plot_failed
    return 0


def _no_images(texts: list[str]) -> str:
    """The one-line error for a command line without images, naming a path that went into --text."""
    from pathlib import Path

    swallowed = next((t for t in texts if Path(t).exists()), None)
    if swallowed is not None:
        return (f"no IMG given: {swallowed!r} was read as a --text; put the images first "
                "(clipforge similarity IMG... --text T...)")
    return "no IMG given: expected image files or folders (clipforge similarity IMG... --text T...)"
