"""What every subcommand spells the same way: `--model`, `--device`, `--templates`, `--precision`,
`--exact-decode`, `--workers`, `--json`, `--quiet`, and the one loader behind `--model` (`clipforge.api.load_model`).

A subcommand parses its arguments and calls one library function; this module is the only
place that prints the default-model notice, so it reads the same in every command.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

# clipforge.api's defaults, named here because importing it loads torch and `clipforge --help` must
# stay fast (tests/core/test_cli_language.py keeps the two equal).
PREFERRED_DEFAULT = "ViT-B/32"
OFFLINE_DEFAULT = "clipforge-tiny"

MODEL_HELP = (f"model: registry name ({PREFERRED_DEFAULT}, ViT-B-32, RN50, ...), ARCH:TAG, a checkpoint file or "
              f"Hugging Face folder, or random weights (random:ViT-B/32, test-vit-tiny); default: "
              f"{PREFERRED_DEFAULT} when downloaded, else the shipped {OFFLINE_DEFAULT}")
DEVICE_HELP = "cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)"


def add_model_argument(parser: argparse.ArgumentParser, device: bool = False) -> None:
    """`--model` (and `--device`), with one help text and one default for every command."""
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    if device:
        parser.add_argument("--device", default=None, help=DEVICE_HELP)


def add_templates_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """`--templates`: a packaged set name, one template with {}, or a file; the default is stated."""
    parser.add_argument("--templates", default=default, metavar="SET_OR_TEMPLATE",
                        help=f"prompt template set (imagenet, imagenet7, simple, cifar10, ...), one template with "
                             f"{{}} for the label, or a file of templates (default: {default})")


def add_speed_arguments(parser: argparse.ArgumentParser, workers: bool = True) -> None:
    """`--precision`, `--exact-decode` (and `--workers`): how the one files-to-embeddings path runs."""
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="inference precision: fp32 (default) or bf16 (faster where the CPU multiplies bf16 "
                             "natively, and on CUDA; embeddings within cosine 0.999 of fp32)")
    parser.add_argument("--exact-decode", action="store_true",
                        help="decode every JPEG pixel and resize the whole picture before the centre crop, "
                             "instead of the faster draft decode that resamples only the crop (within cosine "
                             "0.99); for results that must match a reference pixel for pixel (photos are turned "
                             "upright by their EXIF orientation in either mode, which references do not do)")
    if workers:
        parser.add_argument("--workers", type=int, default=None,
                            help="image decoding processes (default: one per CPU core beyond the first, at most 8)")


def batch_settings_problem(args: argparse.Namespace, batch_means: str = "images per model batch") -> str | None:
    """The first unusable `--batch-size` / `--workers` of a command, as one line naming the flag, for the
    commands to refuse before the model loads (`read_batches` turned a batch size of 0 into 1 and -1 workers
    into 0, silently; eval refused them after loading the model, in the library's words)."""
    batch = getattr(args, "batch_size", None)
    if batch is not None and batch < 1:
        return f"--batch-size must be at least 1 ({batch_means}), got {batch}"
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 0:
        return f"--workers must be 0 (decode in this process) or more, got {workers}"
    return None


def add_output_arguments(parser: argparse.ArgumentParser, json: bool = True, quiet: bool = True) -> None:
    if json:
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    if quiet:
        parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or notices")


def notice(message: str, args: argparse.Namespace | None = None) -> None:
    """A note for the user on stderr (never stdout, which may be JSON), unless --quiet."""
    if args is not None and getattr(args, "quiet", False):
        return
    print(f"notice: {message}", file=sys.stderr)


def model_spec(args: argparse.Namespace) -> str:
    """The `--model` value, or the default with its fallback notice; stored back on `args`."""
    if getattr(args, "model", None):
        return str(args.model)
    from clipforge.api import default_model_spec

    spec, message = default_model_spec()
    if message:
        notice(message, args)
    args.model = spec
    return spec


def load_cli_model(args: argparse.Namespace) -> Any:
    """`clipforge.api.load_model` for `--model`/`--device`: the one way a command gets its model."""
    from clipforge.api import load_model

    return load_model(model_spec(args), getattr(args, "device", None))


def load_model_for_cli(name: str | None, device: str | None = None) -> tuple[Any, Any]:
    """(model, preprocess) for a --model value, through `load_cli_model`."""
    loaded = load_cli_model(argparse.Namespace(model=name, device=device))
    return loaded.model, loaded.preprocess


# Flags that name local files or folders a command reads. `check_local_inputs` looks at them before the
# command runs, so a typo costs one line at once, not a model download first (`eval --root` did).
LOCAL_INPUTS = ("root", "val_root", "captions", "classnames", "labels_file")
_PATTERN_MARKS = ("{", "*", "?", "[", "://", "pipe:")  # shard patterns and URLs are not checked here


def check_local_inputs(args: argparse.Namespace) -> None:
    """FileNotFoundError (one line) for a local input flag naming nothing that exists; UsageError for a blank
    `--model` (an unset shell variable, `--model "$MODEL"`), which every command read as no `--model` at all:
    the default model ran, with a notice saying to pass the --model the user had passed."""
    import os

    model = getattr(args, "model", None)
    if isinstance(model, str) and not model.strip():
        from clipforge.errors import UsageError

        raise UsageError("--model is empty: give a model name (clipforge-tiny, ViT-B/32, ...), ARCH:TAG, a checkpoint "
                         "file or folder, or random:ARCH; leave --model out for the default")
    for name in LOCAL_INPUTS:
        if name == "root" and getattr(args, "download", False):
            continue  # `--download` fills --root
        value = getattr(args, name, None)
        if not isinstance(value, str) or not value or any(mark in value for mark in _PATTERN_MARKS):
            continue
        flag = "--" + name.replace("_", "-")
        pieces = value.split("::") if "::" in value else [value]  # `a.tar::b.tar`: a WebDataset shard list
        missing = [piece for piece in pieces if not os.path.exists(os.path.expanduser(piece))]
        if missing == pieces and len(pieces) == 1 and (problem := lookup_problem(os.path.expanduser(value))):
            raise FileNotFoundError(f"{flag} {value}: {problem}")
        if missing == pieces and len(pieces) == 1:
            if name == "root" and isinstance(getattr(args, "dataset", None), str):  # eval zeroshot | linear-probe
                from clipforge.data.registry import registered_name

                if registered_name(args.dataset) is None:
                    continue  # the command names an unknown --dataset first, with its likeliest meaning
                from clipforge.evaluate.roots import missing_root_message  # the layout --dataset expects

                raise FileNotFoundError(missing_root_message(args.dataset, value))
            raise FileNotFoundError(f"{flag} {value}: no such file or folder")
        if missing:
            raise FileNotFoundError(f"{flag} {value}: shard {missing[0]!r} of the '::' list does not exist")


def lookup_problem(path: str) -> str | None:
    """Why `path` cannot even be looked up, in words, when the reason is not simply that it is missing (None then,
    and when it is there): a name part over the 255 bytes a file name may have, or a whole path over the system's
    limit (ENAMETOOLONG), or a folder on the way that cannot be searched. `os.path.exists` answers False for all
    of these, and a 300-byte photo name was reported as "no such file or folder"."""
    import errno
    import os

    from clipforge.atomic import NAME_MAX

    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):  # missing; ValueError: unencodable (C locale)
        return None
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            return (error.strerror or type(error).__name__).lower()
        longest = max(len(os.fsencode(part)) for part in path.split(os.sep))
        if longest > NAME_MAX:
            return f"file name too long ({longest} bytes; a file name may have at most {NAME_MAX})"
        return f"path too long ({len(os.fsencode(path))} bytes)"
    return None


class ImageArguments(NamedTuple):
    """`expand_images`' answer: `files` to read, and `rejected`: (path, reason) of the entries met in folder walks
    that must never be opened (a FIFO, a socket, a device file named like a photo), with the reason `index add`
    records for them ("not a regular file (a FIFO)"), for the command to count and name as skipped."""

    files: list[str]
    rejected: list[tuple[str, str]]


def expand_images(paths: list[str]) -> ImageArguments:
    """Image arguments as the user gave them, with folders walked like `index add` walks them (image
    files, recursively, hidden ones skipped); FileNotFoundError names paths that do not exist and
    folders without images, before any model is loaded. The entries of a walk that are not regular files are
    handed back as `rejected` (`scan_paths` sets them aside unread): they were dropped without a word, and a folder
    holding only such entries was said to hold no image files."""
    import os

    from clipforge.library.scan import scan_paths

    out: list[str] = []
    rejected: list[tuple[str, str]] = []
    missing: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = scan_paths([path], recursive=True)
            refused = [(name, reason) for name, _size, _mtime, reason in found.rejected]
            if not found.files:
                raise FileNotFoundError(_no_images(path, refused))
            out.extend(found.files)
            rejected.extend(refused)
        elif os.path.lexists(path):
            out.append(path)
        elif problem := lookup_problem(path):  # a name too long to exist: said so, not "no such file"
            raise FileNotFoundError(f"{problem}: {path}")
        else:
            missing.append(path)
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")
    return ImageArguments(out, rejected)


def _no_images(folder: str, refused: list[tuple[str, str]]) -> str:
    """The error for a walked `folder` with no image file to read, naming the entries it holds that are not regular
    files (the first three, by their names in the folder), if any."""
    import os

    from clipforge.library.dbfile import display_path
    from clipforge.library.scan import normalise_path

    shown = one_line(display_path(folder))
    if not refused:
        return f"folder {shown} holds no image files"
    named = ", ".join(f"{one_line(display_path(os.path.relpath(name, normalise_path(folder))))} is {reason}"
                      for name, reason in refused[:3])
    more = f", and {len(refused) - 3} more" if len(refused) > 3 else ""
    return f"folder {shown} holds no image file that can be read: {named}{more}"


FIGURE_TARGET_HELP = ("never one of the input files; an existing file is replaced only when it is a figure "
                      "matplotlib wrote (an earlier --plot to .png, .pdf or .svg), anything else (a photo, a .jpg "
                      "chart) is refused: remove it or name another file")
"""What `figure_target` allows, for the help of every flag it checks."""


def figure_target(path: str, default_name: str, flag: str = "--plot", inputs: Sequence[str] = ()) -> str:
    """Where a figure flag's PNG goes, decided before any work: a folder (an existing one, or a name ending in
    ``/``, created here) gets `default_name` inside it, a name without an extension gets ``.png``; the file's
    folder is created now. One line naming the flag (a ValueError) for an extension matplotlib cannot write, a
    folder that cannot be made, a target that is one of `inputs` (the files the command reads), and an existing
    file that is not a figure matplotlib wrote (`FIGURE_TARGET_HELP`).

    Without this the figure was the last thing written: `--plot chart` or `--plot some_folder` ran the
    whole command, then failed with matplotlib's "Format 'tmp' is not supported" and printed nothing;
    `--plot nodir/` became the dotfile ``nodir/.png`` (the same failure); and `--plot photo.jpg`, naming one of
    the images being classified, silently replaced the photo with the chart.
    """
    import os

    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        _make_folder(path, flag, path)
        target = os.path.join(path, default_name)
    else:
        root, extension = os.path.splitext(path)
        if not extension or extension == ".":
            target = root + ".png"
        else:
            from matplotlib.backend_bases import FigureCanvasBase

            formats = FigureCanvasBase.get_supported_filetypes()
            if extension[1:].lower() not in formats:
                raise ValueError(f"{flag} {path}: cannot write a {extension} figure; use .png (or "
                                 f"{', '.join('.' + f for f in sorted(formats) if f != 'png')})")
            target = path
        # the working folder too (a bare `--plot c.png`): it was written after the whole run, then refused
        _make_folder(os.path.dirname(target) or ".", flag, path)
    named = path if target == path else f"{path} ({target})"
    if problem := lookup_problem(target):  # a name over 255 bytes: refused now, not after the run
        raise ValueError(f"{flag} {named}: {problem}")
    if os.path.lexists(target):
        if any(_same_file(target, given) for given in inputs):
            raise ValueError(f"{flag} {named}: is one of the input files, which the figure would replace; "
                             "name another file")
        if os.path.isdir(target):
            raise ValueError(f"{flag} {named}: is a folder; name a file")
        if not _matplotlib_figure(target):
            raise ValueError(f"{flag} {named}: already exists and is not a figure matplotlib wrote; refusing to "
                             "replace it: remove it or name another file")
    return target


def _make_folder(folder: str, flag: str, given: str) -> None:
    """`folder` and its parents, made now (a figure flag's folder), or one line saying why not."""
    import os

    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"{flag} {given}: cannot create folder {folder}: a file is in the way") from None
    except OSError as error:
        raise ValueError(f"{flag} {given}: cannot create folder {folder}: {error.strerror or error}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {given}: folder {folder} is not writable")


def _same_file(a: str, b: str) -> bool:
    import os

    try:
        return os.path.realpath(a) == os.path.realpath(b) or os.path.samefile(a, b)
    except OSError:  # one of them is a dangling link: only the resolved names can say
        return False


_FIGURE_MARK = b"matplotlib"  # PNG's Software text, PDF's Creator, SVG's title, PostScript's %%Creator
_MARK_WINDOW = 1 << 16


def _matplotlib_figure(path: str) -> bool:
    """True for an empty file or one that names matplotlib as its writer near its start or end (where the
    formats that record a writer keep it); JPEG, GIF, WebP and TIFF record none, so they are never taken for one."""
    import os

    try:
        size = os.path.getsize(path)
        if not os.path.isfile(path):
            return False
        if size == 0:
            return True
        with open(path, "rb") as handle:
            head = handle.read(_MARK_WINDOW)
            handle.seek(max(size - _MARK_WINDOW, 0))
            tail = handle.read(_MARK_WINDOW)
    except OSError:
        return False
    return _FIGURE_MARK in head.lower() or _FIGURE_MARK in tail.lower()


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(data: Any, indent: int | None = 2, **kwargs: Any) -> str:
    """One JSON document for stdout, every command alike: text in any script as it is ("一只猫", not
    "\\u4e00\\u53ea\\u732b"; `search`, `index`, `tag`, `embed` and `models` escaped it while `classify` and
    `eval` did not), except lone surrogates (a file name whose bytes are not UTF-8, kept by Python's
    surrogateescape), which stay ``\\udcXX`` escapes as before: printed raw they cannot be encoded at all. On a
    stdout that cannot show some character (its encoding is not UTF-8: `stdout_text`), JSON's own ``\\uXXXX``
    escapes for everything beyond ASCII: the same values for a script, where printing failed and nothing was out.
    """
    from clipforge.cli.stdout_text import stdout_shows

    text = json.dumps(data, indent=indent, ensure_ascii=False, **kwargs)
    text = _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
    return text if stdout_shows(text) else json.dumps(data, indent=indent, ensure_ascii=True, **kwargs)


def indistinct_notice(sets: list[list[str]], model: str, context: int, what: str) -> str:
    """The notice for `what` (labels, texts) that a model reads as the same tokens
    (`clipforge.text.context_cut.same_after_cut`): they get the same scores, whatever they say. Shortening is advised
    only where the context's cut is why (a `SameTokens`' `cut`); where the tokenizer reads them alike anyway
    (Chinese-CLIP's [UNK] for Arabic and emoji: 'قطة' = '😺') the notice says so (it blamed the cut for every set).
    Sets of both kinds give one line each."""
    lines = []
    for cut in (True, False):
        chosen = [same for same in sets if bool(getattr(same, "cut", True)) == cut]
        if not chosen:
            continue
        shown = "; ".join(" = ".join(repr(key[:40]) for key in same[:3]) + (" ..." if len(same) > 3 else "")
                          for same in chosen[:3])
        why = (f"its {context}-token context cuts them to the same tokens" if cut
               else "its tokenizer reads them as the same tokens")
        lines.append(f"notice: model {model} cannot tell these {what} apart: {why}, so they score the same "
                     f"({shown})" + ("; shorten them" if cut else ""))
    return "\n".join(lines)


SHOWN_FAILURES = 20
"""Failed files a batch command names on stderr (enough to see the pattern; the rest are in its record)."""


def one_line(name: str) -> str:
    """`name` with what a terminal acts on escaped (a newline as \\n, an ESC, a bidi override), so a row of a table
    or a list stays one line (a name holding a newline printed its tail as a row of its own) and shows what it is:
    `scan_notices.printable_line`, the one rule. --paths and --json keep names exact."""
    from clipforge.library.scan_notices import printable_line

    return printable_line(name)


def print_failures(failures: Sequence[tuple[str, str]], rest: str) -> None:
    """`  failed: PATH: why` on stderr for the first `SHOWN_FAILURES` files a batch command could not read, then
    where the rest are (`rest`): one shape for `index add` and `embed`."""
    from clipforge.library.dbfile import display_path

    for path, reason in failures[:SHOWN_FAILURES]:
        print(f"  failed: {one_line(display_path(path))}: {reason}", file=sys.stderr)
    if len(failures) > SHOWN_FAILURES:
        print(f"  ... and {len(failures) - SHOWN_FAILURES} more (see {rest})", file=sys.stderr)
