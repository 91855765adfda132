"""The one family of errors a user can fix, and the one rule for showing them.

A floor module (standard library only, like `clipforge.atomic`), so every layer can raise these
without importing upwards. Each layer keeps its own exception classes, with the base classes
callers already catch (ValueError, FileNotFoundError, RuntimeError), and adds `UserError`:

    class CheckpointFormatError(UserError, ValueError): ...

A `UserError` means "bad input or environment": its message is one sentence that names the file,
field or URL and what was expected, written for a person at a terminal. Where failures become
exit statuses is decided once, in `clipforge.cli.main` (one line ``error: ...``, exit status
`EXIT_USER_ERROR`), and the server turns the same family into ``{"error", "detail"}``. No other
module calls `sys.exit` or maps exceptions to exit statuses (tests/core/test_one_error_edge.py).
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A failure the user can fix (bad input, a missing file, no network): one line, exit status 2."""

    exit_status: int = EXIT_USER_ERROR
    http_status: int = 400
    """What the REST API answers (`clipforge.server.errors.api_error`; the code is the class name in snake
    case): the request cannot be served as sent. A class about the server's own environment rather than
    the request (a busy store, a full disk) may say 503 or 507."""
    client_detail: str | None = None
    """What a client of the server is told instead of the message, for a class whose message names what is the
    operator's alone (a store's host and the engine's words): the message stays in the server's log line."""
    retry_after: float | None = None
    """Seconds after which the same request may well succeed (a server that went away): the REST answer's
    `Retry-After`. None: trying again changes nothing until someone acts."""


class Notice(UserWarning):
    """A remark for the person at the terminal from below the CLI (a fallback taken, e.g. the shipped model
    when ViT-B/32's weights are not cached): a warning of this category, which the CLI prints as one
    ``notice:`` line and `--quiet` hides; a program using the library sees a Python warning it can filter."""


class UsageError(UserError, ValueError):
    """A command-line value that cannot be used (a field out of range, flags that contradict)."""


def one_line(error: BaseException) -> str:
    """The message of `error` as one line (a KeyError's message without its quotes)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(text).split()) or type(error).__name__
