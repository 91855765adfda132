"""The `clipforge` console command.

Subcommands are discovered: every module in `clipforge.cli` that defines
`register(subparsers)` contributes one (or a group). Keeping discovery here means a new
subcommand is one new file, and modules import their heavy dependencies lazily inside
their `run` functions so `clipforge --help` stays fast.

`main` is also the one place that turns failures into exit statuses (the error edge): a
`clipforge.errors.UserError` (and the plain ValueError / OSError of bad input) becomes one line
``error: ...`` on stderr and status 2 (`report_error`, which commands that keep going after a
bad item call too), a missing optional extra names it ("pip install 'clipforge[app]'"), a closed
stdout (`clipforge models --json | head`) ends quietly with 141, a write to stdout that fails (a full disk under
``> out.json``) is one line saying so and what the command had saved (``args.saved``), a stdout closed before the start (``>&-``) is
refused in one line (a service's, and a closed stderr, go to /dev/null: `_streams`), Ctrl-C with ``interrupted`` and 130,
SIGTERM (a service manager's stop) the same way with ``terminated`` and 143; a command that can say what its
run left adds it (``set_defaults(stop_note=...)``: `index add` keeps every committed batch and resumes when
run again). Anything else is a bug and keeps its traceback. No other module calls `sys.exit` or chooses a
status for an exception (tests/core/test_one_error_edge.py).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import pkgutil
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import NoReturn, TextIO

import clipforge.cli as cli_package

_NOT_COMMANDS = {"main", "common", "stdout_text"}

# Top-level import names of the optional extras in pyproject.toml, and the extra that installs each.
EXTRA_OF_MODULE: dict[str, str] = {
    "fastapi": "app", "uvicorn": "app", "multipart": "app", "python_multipart": "app", "gradio": "app",
    "fastapi_offline": "app", "starlette": "app",
    "webdataset": "train", "tensorboard": "train",
    "onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx",
    "milvus": "milvus-server",
    "transformers": "families", "sentencepiece": "families",  # Chinese-CLIP's BERT, XLM-R/NLLB/mT5 towers, SigLIP
}
EXIT_USER_ERROR = 2  # the same number as clipforge.errors.EXIT_USER_ERROR (kept here: no import at --help)
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process ended by SIGPIPE


def _version() -> str:
    from clipforge import __version__

    return f"clipforge {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipforge",
        description="CLIP models, zero-shot classification, evaluation, training and image search.",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda m: m.name):
        if info.name in _NOT_COMMANDS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"clipforge.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def _missing_module(exc: BaseException) -> str | None:
    """The name of the missing module `exc` reports: its own (a ModuleNotFoundError), or the one it was raised
    over (``except ImportError: raise ImportError("...") from ...``, as a model or tokenizer says what its
    library is for) when `exc` is itself an ImportError or already tells the user to install an extra. An
    error merely raised while some other import was being handled keeps its own report."""
    seen = [exc]
    if isinstance(exc, ImportError) or "pip install 'clipforge[" in str(exc):
        seen.append(exc.__cause__ or exc.__context__)  # type: ignore[arg-type]
    for error in seen:
        if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in EXTRA_OF_MODULE:
            return error.name
    return None


def missing_extra_message(exc: BaseException, command: str | None) -> str | None:
    """One line naming the extra to install when `exc` is a missing optional dependency, else None."""
    name = _missing_module(exc)
    extra = EXTRA_OF_MODULE.get((name or "").split(".")[0])
    if extra is None and type(exc).__name__ == "OnnxExporterError":  # torch.onnx without onnx/onnxscript
        name, extra = "onnx", "onnx"
    if extra is None:
        return None
    who = f"clipforge {command}" if command else "this command"
    return f"{who} needs the '{extra}' extra (missing module {name!r}): pip install 'clipforge[{extra}]'"


def user_errors() -> tuple[type[BaseException], ...]:
    """Failures caused by the user's input or environment: one line, no traceback.

    `UserError` is the family every layer's own errors join (CheckpointFormatError, DownloadError,
    ImageLoadError, TemplateError, ConfigError, ...); ValueError and OSError stay for the standard
    library's own reports of bad input (a missing file, an unparsable number)."""
    from clipforge.errors import UserError

    return UserError, OSError, ValueError


def report_error(error: BaseException | str) -> int:
    """Print one line ``error: ...`` on stderr and return the user-error exit status (2).

    The message is made one line (`errors.one_line`: its line breaks, and the line separators Python counts as
    whitespace, become spaces), then what a terminal acts on is escaped by the CLI's one rule (`cli.common.one_line`):
    an error quotes text from inside files (a safetensors header's dtype string, a checkpoint's path), and one whose
    ESC sequences went out raw set the terminal's title and cleared its screen (audit 64). Text in any script is
    shown as it is."""
    from clipforge.cli._streams import StdoutWriteError, stdout_failure
    from clipforge.cli.common import one_line as printable
    from clipforge.errors import one_line

    if isinstance(error, StdoutWriteError):  # stdout named, and nothing more tried on it (as after a closed pipe)
        _silence_stdout()
        error = stdout_failure(error)
    text = one_line(error) if isinstance(error, BaseException) else " ".join(str(error).split())
    print(f"error: {printable(text)}", file=sys.stderr)
    return EXIT_USER_ERROR


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit-time flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _command_name(args: argparse.Namespace) -> str | None:
    return getattr(args, "command", None)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """Library warnings (e.g. an assumed activation) as one line in the CLI's wording, not Python's; a
    `Notice` (a fallback the library took) as a ``notice:`` line, as the CLI's own notices. What a terminal acts
    on is escaped as in `report_error`: a warning names a checkpoint's path, which may hold ESC sequences."""
    from clipforge.cli.common import one_line as printable
    from clipforge.errors import Notice

    kind = "notice" if issubclass(category, Notice) else "warning"
    print(f"{kind}: {printable(str(message))}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None, *, decode_ahead: bool = False) -> int:
    """Run one command; `decode_ahead` (the console script) lets a command that reads photos start
    decoding them before torch is imported (`_decode_ahead`)."""
    from clipforge.cli._streams import log_records_as_lines, standard_streams, stdout_writes_named

    if (closed := standard_streams(argv, _OWN_SIGNALS)) is not None:
        return report_error(closed)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # what parse_args does, with a hint where a flag's list was split by spaces, and the usage of
        tokens = list(sys.argv[1:] if argv is None else argv)  # the command typed (`clipforge search ...`)
        _command_parser(parser, tokens).error(_unrecognized(parser, tokens, extra))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    ahead = _decode_ahead(args) if decode_ahead else None
    from clipforge.cli.stdout_text import escape_unshowable_characters, escaped_notice
    from clipforge.errors import Notice  # a floor module of the standard library only

    escape_unshowable_characters()  # a stdout that is not UTF-8: results escaped, never lost (`stdout_text`)

    with warnings.catch_warnings(), log_records_as_lines(), stdout_writes_named():
        warnings.showwarning = _show_warning
        warnings.simplefilter("ignore" if getattr(args, "quiet", False) else "always", Notice)  # --quiet: none
        code = _run(args)
    if (notice := escaped_notice()) is not None and not getattr(args, "quiet", False):
        print(notice, file=sys.stderr)
    if ahead is not None:
        _remember_preprocess(ahead)
    return code


_ONE_LIST = {"--labels": 'labels are one comma-separated list: --labels "cat,dog"'}
"""Flags whose list is one argument, which a user may split by spaces (``--labels cat dog``)."""


def _unrecognized(parser: argparse.ArgumentParser, tokens: list[str], extra: list[str]) -> str:
    """argparse's "unrecognized arguments" line, plus a hint: when they follow a one-list flag's value, or
    when an unknown flag is close to one the command has (``--topk``, ``--top_k``, ``-k`` -> ``--top-k``)."""
    message = f"unrecognized arguments: {' '.join(extra)}"
    for i, token in enumerate(tokens[:-2]):
        if token in _ONE_LIST and tokens[i + 2] == extra[0] and not extra[0].startswith("-"):
            return f"{message} ({_ONE_LIST[token]})"
    options = sorted(_command_parser(parser, tokens)._option_string_actions)
    for token in extra:
        guess = _closest_option(token, options) if token.startswith("-") and token != "-" else None
        if guess is not None:
            return f"{message} (did you mean {guess}?)"
    return message


def _command_parser(parser: argparse.ArgumentParser, tokens: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser of the command `tokens` name (``index add`` -> its own parser): whose flags to suggest."""
    for token in tokens:
        subcommands = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if subcommands is None or token not in subcommands.choices:
            if subcommands is not None and not token.startswith("-"):
                break
            continue
        parser = subcommands.choices[token]
    return parser


def _closest_option(token: str, options: list[str]) -> str | None:
    """The command's flag a mistyped one most likely meant: the same words spelt with ``_`` or without a dash
    (``--top_k``, ``--topk``), a one-letter flag naming a long flag's last word (``-k``), or a near spelling."""
    import difflib

    name = token.split("=", 1)[0]
    long_options = [o for o in options if o.startswith("--")]
    squeezed = {o.replace("-", ""): o for o in long_options}
    if name.lower().replace("_", "-") in long_options:
        return name.lower().replace("_", "-")
    if name.lower().replace("_", "").replace("-", "") in squeezed:
        return squeezed[name.lower().replace("_", "").replace("-", "")]
    if len(name) == 2 and name[1].isalpha():
        matches = [o for o in long_options if o.rsplit("-", 1)[-1] == name[1].lower()]
        return matches[0] if len(matches) == 1 else None
    close = difflib.get_close_matches(name.lower(), long_options, n=1, cutoff=0.75)
    return close[0] if close else None


def _decode_ahead(args: argparse.Namespace) -> str | None:
    """Start `clipforge.data.prefetch` for a command that declares its files (``set_defaults(files_ahead=...)``:
    args -> (hint key, function listing the files)), with the preprocess the same command read with last
    time. Returns the hint key (None: the command reads no photos)."""
    files_ahead = getattr(args, "files_ahead", None)
    if files_ahead is None or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:  # torchrun: no core is idle
        return None
    declared = files_ahead(args)
    if declared is None:
        return None
    from clipforge.data import prefetch

    hint, list_files = declared
    preprocess = prefetch.load_hint(hint)
    if preprocess is not None:
        with contextlib.suppress(OSError, ValueError):  # no fork or mapping to be had: the reader decodes it all
            prefetch.start(preprocess, list_files)
    return hint


def _remember_preprocess(hint: str) -> None:
    from clipforge.data import prefetch

    running = prefetch.active()
    if running is not None:
        running.stop()
        if os.environ.get(prefetch.PREFETCH_ENV, "").strip() == "verbose":
            print(running.summary(), file=sys.stderr)
    # a run that decoded ahead, or read, teaches the next (forgetting when it read too few photos); one that
    # did neither (a bad argument, before anything was decoded) leaves the hint as it was
    if running is not None or prefetch.reader_started():
        prefetch.save_hint(hint, prefetch.hint_to_keep())


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd's and Kubernetes' stop signal), raised where Ctrl-C raises KeyboardInterrupt: every
    command's cleanup for an interrupt runs for it too, and it ends in one line and status 143 (128 + 15), as
    SIGINT ends in one line and 130. Before, the process died on the spot: status -15, the log ending mid-bar."""


EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
_OWN_SIGNALS = {"serve", "milvus-server"}
"""Commands that install their own SIGTERM handling (uvicorn's graceful shutdown; stopping the Milvus server)."""


@contextlib.contextmanager
def _sigterm_as_interrupt(args: argparse.Namespace) -> Iterator[None]:
    """SIGTERM raises `Terminated` while the command runs (main thread only, where Python delivers signals); a
    second SIGTERM during the cleanup ends the process at once, as the default does.

    A service manager signals the whole process group, so the decoding workers (torch's DataLoader processes) die
    of the same SIGTERM; torch's SIGCHLD handler then raised "DataLoader worker (pid N) is killed by signal:
    Terminated" inside the cleanup, a traceback before the one line. Their end is part of the stop: SIGCHLD is
    left to the default while the command stops, and its handler restored after."""
    import signal

    if _command_name(args) in _OWN_SIGNALS or threading.current_thread() is not threading.main_thread():
        yield
        return
    child = getattr(signal, "SIGCHLD", None)
    on_child: list[object] = []  # the SIGCHLD handler the stop set aside

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if child is not None:
            on_child.append(signal.signal(child, signal.SIG_DFL))
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child is not None and on_child and on_child[0] is not None:
            signal.signal(child, on_child[0])  # type: ignore[arg-type]


def _stopped(args: argparse.Namespace, exc: KeyboardInterrupt) -> int:
    """One line for a command stopped by SIGINT or SIGTERM: what happened, and what its run left (the command's
    `stop_note`, where it can say it: ``index add``'s committed batches, resumed by running it again)."""
    word, code = ("terminated", EXIT_TERMINATED) if isinstance(exc, Terminated) else ("interrupted", EXIT_INTERRUPTED)
    note = getattr(args, "stop_note", None)
    print(f"{word}: {note}" if note else word, file=sys.stderr)
    return code


def _run(args: argparse.Namespace) -> int:
    with _sigterm_as_interrupt(args):
        return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    try:
        from clipforge.cli.common import check_local_inputs

        check_local_inputs(args)  # a mistyped --root costs one line now, not a download first
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler, not at interpreter exit
        return code
    except KeyboardInterrupt as exc:
        return _stopped(args, exc)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        message = missing_extra_message(exc, _command_name(args))
        if message is None and not isinstance(exc, user_errors()):
            raise
        from clipforge.cli._streams import StdoutWriteError, stdout_failure

        if isinstance(exc, StdoutWriteError):  # a full disk under `> report.json`: what the command saved is said
            _silence_stdout()
            message = stdout_failure(exc, getattr(args, "saved", None))
        return report_error(message or exc)


def exit_without_teardown(code: int) -> NoReturn:
    """End the process as the interpreter would, minus tearing down its heap: what a user waits for.

    After a command, Python's own shutdown spent 0.45 s (ViT-B/32 `embed`, 2-core EPYC) taking
    apart what the process is about to drop anyway: garbage-collection passes over every module's
    objects, PyTorch's operator registry unregistering itself, pyarrow's allocator. This does the
    parts of that shutdown that anyone can observe, in the interpreter's order: wait for
    non-daemon threads (`threading._shutdown`, which also stops idle thread pools), run the atexit
    handlers (temporary folders, multiprocessing children, logging, coverage), flush stdout and
    stderr; then `os._exit`, which the kernel finishes in ~0.06 s. Files the commands write are
    closed (and made durable) before they return. `CLIPFORGE_FULL_EXIT=1`, or a Python without
    these two hooks, exits the ordinary way.
    """
    shutdown_threads = getattr(threading, "_shutdown", None)
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    if shutdown_threads is None or run_exit_functions is None or os.environ.get("CLIPFORGE_FULL_EXIT") == "1":
        sys.exit(code)
    shutdown_threads()
    run_exit_functions()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # a closed pipe or stream (None: `>&-`)
            stream.flush()
    os._exit(code)


def entry() -> NoReturn:
    """The console script (`clipforge ...`, `python -m clipforge ...`): `main`, then a fast exit."""
    exit_without_teardown(main(decode_ahead=True))


if __name__ == "__main__":
    entry()
