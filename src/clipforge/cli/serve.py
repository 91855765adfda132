"""`clipforge serve --library PATH`: the REST API and the web UI for a library, one process."""

from __future__ import annotations

import argparse
import os
import re


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {port}")
    return port


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="web UI and REST API for a library (http://127.0.0.1:7860)",
        description="Serve a library: gradio UI at / (search, classify, browse and add; its words follow the "
                    "browser's language: Chinese (zh-CN / zh-TW) for a Chinese browser, else English), REST API under /api with OpenAPI docs at "
                    "/docs. Binds 127.0.0.1 unless --host says otherwise.")
    parser.add_argument("--library", metavar="PATH", default=None,
                        help="library folder (default $CLIPFORGE_LIBRARY, else $XDG_DATA_HOME/clipforge/library "
                             "= ~/.local/share/clipforge/library)")
    parser.add_argument("--store", metavar="STORE", default=os.environ.get("CLIPFORGE_STORE") or None,
                        help="milvus-lite:PATH.db or milvus://HOST:PORT/COLLECTION to serve a Milvus store "
                             "(default $CLIPFORGE_STORE, else the embedded store in --library)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 = every interface)")
    parser.add_argument("--create", action="store_true",
                        help="start a new, empty library if there is none at --library (otherwise that is an error, "
                             "as for `clipforge search`)")
    parser.add_argument("--port", type=_port, default=7860, help="port (default 7860; 0 = any free port)")
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument("--token-file", metavar="PATH", default=None,
                        help="require the token in this file for changes (Authorization: Bearer T or X-Token: T); "
                             "default $CLIPFORGE_TOKEN, else none")
    tokens.add_argument("--token", default=None,
                        help="the token itself (visible to every user of this machine in `ps`: prefer --token-file "
                             "or $CLIPFORGE_TOKEN)")
    parser.add_argument("--model", default=None,
                        help="model name, checkpoint path, or test config; default: the library's own model, for a "
                             "new library ViT-B/32 when cached, else the shipped clipforge-tiny")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")
    # The limits stay text here: `limits_from_flags` reads them, so every bad value is one line naming
    # its flag (argparse's `type=` errors come with the usage block, and `--max-upload -5MB` never reached one).
    parser.add_argument("--max-upload", default="20MB", metavar="SIZE", help="largest image accepted (default 20MB)")
    parser.add_argument("--max-pixels", default="50000000", metavar="PIXELS",
                        help="largest decoded image in pixels (default 50,000,000)")
    parser.add_argument("--timeout", default="60", metavar="SECONDS",
                        help="seconds one API request may take (default 60)")
    parser.add_argument("--ui-upload-space", default=None, metavar="SIZE",
                        help="bytes the web page's uploads may hold, all users together (default 200MB; when full, "
                             "the oldest uploads of whoever holds the most make room, never an address's newest upload "
                             "younger than 2 minutes)")
    parser.add_argument("--ui-upload-age", default=None, metavar="SECONDS",
                        help="seconds the web page's uploads are kept (default 1800)")
    parser.add_argument("--forwarded-allow-ips", metavar="IPS", default=None,
                        help="comma-separated addresses of the reverse proxies this server runs behind, whose "
                             "X-Forwarded-For names the client (default $FORWARDED_ALLOW_IPS, else none: every "
                             "client is its peer address)")
    parser.add_argument("--allowed-host", metavar="NAME", action="append", default=[],
                        help="a dotted host name this server answers to (repeatable; '*' = any): a reverse proxy's "
                             "public name or a LAN DNS name. Addresses, localhost and single-label names always "
                             "work; other names are refused, so a web page cannot point its own name at this server")
    parser.add_argument("--no-ui", action="store_true", help="serve the REST API only")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(func=run)
    _negative_values_are_values(parser)


def _negative_values_are_values(parser: argparse.ArgumentParser) -> None:
    """Let `--max-upload -5MB` reach the size check instead of argparse's "expected one argument".

    argparse takes any word starting with `-` for an option unless it looks like a negative number, and its
    idea of one is `-5` or `-.5`, not `-5MB`; so a negative size never reached our check, whatever `type=`
    converter the flag had. No flag of `serve` starts with `-` and a digit, so a word that does is always a
    value. The matcher is an attribute of argparse's parser (private, but present in every Python 3 so far); should a
    later Python drop it, this does nothing and tests/cli/test_cli_serve_startup.py says so.
    """
    if hasattr(parser, "_negative_number_matcher"):
        parser._negative_number_matcher = re.compile(r"^-\.?\d")


def check_startup_flags(args: argparse.Namespace) -> None:
    """One line naming --device or --host before a library is opened or created: a device this machine lacks was
    told after `--create` had written an empty library, as a failure to load the model ("check the --model
    value"), and a host name that does not resolve as a port taken ("is another server using the port?")."""
    import socket

    from clipforge.api import resolve_device

    if args.device:
        resolve_device(args.device)  # ValueError: "device 'cuda:3' requested but CUDA is not available here"
    try:
        socket.getaddrinfo(args.host.strip("[]"), args.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ValueError(f"--host {args.host}: not an address this machine can listen on ({reason}); use "
                         "127.0.0.1 (this machine only), 0.0.0.0 (every interface) or one of its own "
                         "addresses") from None


def run(args: argparse.Namespace) -> int:
    import sys

    import fastapi  # noqa: F401  (the 'app' extra, checked before --create writes a library)
    import uvicorn  # noqa: F401

    if not args.no_ui:
        from clipforge.server.gradio_version import check_gradio

        check_gradio()  # an old gradio is one line before the model loads, not a traceback after
        import gradio  # noqa: F401

    from clipforge.server import ServeError, serve
    from clipforge.server.limits import limits_from_flags
    from clipforge.server.runner import read_token_file, token_from_env

    try:
        limits = limits_from_flags(args.max_upload, args.max_pixels, args.timeout, args.ui_upload_space,
                                   args.ui_upload_age)
        check_startup_flags(args)
        if args.token_file is not None:
            token = read_token_file(args.token_file)
        elif args.token is not None:
            token = args.token
            print("warning: a token given with --token is visible to other users in the process list; "
                  "use --token-file PATH or $CLIPFORGE_TOKEN", file=sys.stderr)
        else:
            token = token_from_env()  # set but blank: an error, never "no token"
        return serve(args.library, host=args.host, port=args.port, token=token, model=args.model, limits=limits,
                     device=args.device, log_level=args.log_level, ui=not args.no_ui, create=args.create,
                     forwarded_allow_ips=args.forwarded_allow_ips, allowed_hosts=args.allowed_host,
                     **({"store": args.store} if args.store else {}))
    except (ServeError, ValueError) as exc:  # one line and status 2, through the one error edge
        from clipforge.cli.main import report_error

        return report_error(exc)
