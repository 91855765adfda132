"""The `--library` / `--store` / `--model` arguments every library subcommand (index, search, tag) spells the same
way, how they open a library, and the one-line failure of those commands."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["STORE_HELP", "add_library_arguments", "count_noun", "display_path", "fail", "open_library",
           "user_errors"]


def count_noun(count: int, noun: str) -> str:
    from clipforge.library.tagging import count_noun as plural

    return plural(count, noun)


def display_path(path: str) -> str:
    from clipforge.library.dbfile import display_path as printable

    return printable(path)


STORE_HELP = ("where records and vectors live: the embedded SQLite + FAISS store in --library (default), "
              "milvus-lite:PATH.db (Milvus's embedded engine, one file), or milvus://HOST:PORT/COLLECTION (a Milvus "
              "server or cluster; its token from $CLIPFORGE_MILVUS_TOKEN or the file named by "
              "$CLIPFORGE_MILVUS_TOKEN_FILE, never the command line); default $CLIPFORGE_STORE")


def add_library_arguments(parser: argparse.ArgumentParser, model: bool = True) -> None:
    import os

    parser.add_argument("--library", metavar="PATH", default=None,
                        help="library folder (default $CLIPFORGE_LIBRARY, else $XDG_DATA_HOME/clipforge/library "
                             "= ~/.local/share/clipforge/library)")
    parser.add_argument("--store", metavar="STORE", default=os.environ.get("CLIPFORGE_STORE") or None,
                        help=STORE_HELP)
    if model:
        from clipforge.cli.common import DEVICE_HELP, MODEL_HELP, OFFLINE_DEFAULT, PREFERRED_DEFAULT

        parser.add_argument("--model", default=None,
                            help=MODEL_HELP.split("; default: ")[0] + "; default: the model the library was built "
                                 f"with, for a new library {PREFERRED_DEFAULT} when downloaded, else the shipped "
                                 f"{OFFLINE_DEFAULT}")
        parser.add_argument("--device", default=None, help=DEVICE_HELP)


def open_library(args: argparse.Namespace, **kwargs: Any):
    """The Library an argparse namespace describes; problems become one-line errors."""
    from clipforge.library.milvus_library import open_store_library

    return open_store_library(getattr(args, "store", None), args.library, getattr(args, "model", None),
                              device=getattr(args, "device", None), **kwargs)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "bad input or environment": the one list, `clipforge.cli.main.user_errors`."""
    from clipforge.cli.main import user_errors as every_user_error

    return every_user_error()


def fail(message: object) -> int:
    """One line and the user-error status, through the one error edge (`clipforge.cli.main.report_error`)."""
    from clipforge.cli.main import report_error

    return report_error(message if isinstance(message, BaseException) else str(message))
