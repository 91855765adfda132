"""`serve`: open a library with the right model and run the app under uvicorn, one process.

Model choice, in order: `--model`; the model the library was built with (a library never
mixes two models' vectors); for a new library ViT-B/32 when its weights are cached, else the
shipped offline `clipforge-tiny` (with a notice), else an attempt to fetch ViT-B/32 that
ends in an error saying what to do. The socket is bound here, before uvicorn starts, so
`--port 0` works (any free port) and the printed URL is the real one.

Connections: uvicorn keeps a connection that never finishes its request headers open for
ever, and its `limit_concurrency` then answers 503 to everyone once enough such sockets are
open (300 idle sockets locked the server out). So there is no connection cap; instead a
connection must complete its headers within `header_timeout_s` (a small subclass of uvicorn's
h11 protocol, `protocol`), an idle keep-alive connection closes after `keep_alive_s`, a body that
stops arriving is answered 408 by the body-limit middleware, and a client that stops taking its
answer for `header_timeout_s` is dropped. The access log never shows a
token passed in a query string, nor more than a few hundred characters of any field a client chose, and a
client that leaves before its answer is one line with status 499 (`access_log`).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipforge.errors import UserError
from clipforge.server.accept_errors import install_accept_error_log
from clipforge.server.access_log import AccessLogFilter, is_credential_name, redact_query, show_client_gone
from clipforge.server.lan import lan_line
from clipforge.server.limits import ServerLimits
from clipforge.server.protocol import protocol_with_timeouts
from clipforge.server.serving_process import startup_heap_frozen, terminate_as_exit

__all__ = [
    "ServeError",
    "bind_socket",
    "build_server",
    "choose_model",
    "is_credential_name",
    "is_loopback",
    "open_server_library",
    "read_token_file",
    "redact_query",
    "serve",
    "token_from_env",
]


class ServeError(UserError, RuntimeError):
    """The server cannot start; the message says why and what to do."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def choose_model(library: Any | None, requested: str | None) -> str:
    """The model name to open `library` with (see module docstring); `library` None: a new one, nothing recorded."""
    from clipforge.api import default_model_spec

    if requested:
        return requested
    recorded = (library.stats().get("model") or {}) if library is not None else {}
    if recorded:
        if not recorded.get("name"):
            raise ServeError(
                f"library {library.paths.root} was built with a model passed as a Python object "
                f"(fingerprint {recorded['fingerprint'][:12]}); pass the same checkpoint with --model"
            )
        return str(recorded["name"])
    spec, message = default_model_spec()
    if message:  # the CLI's wording (clipforge.cli.common.notice); the server layer cannot import the CLI
        print(f"notice: {message}", file=sys.stderr)
    return spec


def _model_error(name: str, error: BaseException) -> str:
    """The line `cannot load model 'X': <why>; <what to do>`, one sentence whatever the loader's message ends with.

    A loader's message may end in a full stop or not ("...use --device cpu"); the hint was run on after it with
    neither a stop nor a separator ("...use --device cpu check the --model value")."""
    from clipforge.errors import one_line

    why = one_line(error).rstrip(" .;:")
    return f"cannot load model {name!r}: {why}; {_no_model_hint(name)}"


def _no_model_hint(name: str) -> str:
    from clipforge.api import OFFLINE_DEFAULT as OFFLINE_MODEL
    from clipforge.api import PREFERRED_DEFAULT as DEFAULT_MODEL

    if name != DEFAULT_MODEL:
        return "check the --model value (a model name, a checkpoint path, or a test config such as test-vit-tiny)"
    return (
        f"no model is available offline: {DEFAULT_MODEL}'s weights are not cached and the shipped offline model "
        f"{OFFLINE_MODEL} is not installed. Pass --model /path/to/checkpoint, or download {DEFAULT_MODEL} once "
        f"while online: python -c 'import clipforge; clipforge.load(\"{DEFAULT_MODEL}\")'"
    )


def open_server_library(
    path: str | os.PathLike[str] | None,
    model: str | None = None,
    device: str | None = None,
    create: bool = False,
    store: str | None = None,
) -> Any:
    """The Library at `path` with its model loaded; ServeError with advice when that fails.

    Like `clipforge search`, a library must already exist unless `create` is set (`--create`),
    so a mistyped `--library` is an error instead of a silently created empty library.
    """
    from clipforge.library import Library, ModelMismatchError
    from clipforge.library.paths import LibraryPaths

    if store:  # a Milvus store (clipforge.library.milvus_library): its collection is the library
        from clipforge.library.milvus_library import open_store_library

        try:
            return open_store_library(store, path, model, device=device, create=create)
        except (OSError, ValueError) as exc:
            raise ServeError(str(exc)) from None

    root = LibraryPaths(path).root
    if root.exists() and not root.is_dir():
        raise ServeError(f"--library {root} is a file, not a library folder")
    exists = LibraryPaths(path).db.exists()
    if not create and not exists:
        raise ServeError(
            f"no library at {root} (no library.sqlite3 there): check --library, build one with "
            f"`clipforge index add`, or pass --create to start an empty library"
        )
    from clipforge.library.schema import SchemaError

    # Only an existing library is opened to read the model it records: opening a new one creates it, and a
    # model that then failed to load left an empty library behind. A new library is created by the one
    # `Library(...)` below, which removes what it made when the model does not load.
    try:
        if exists:
            with Library(path, create=create) as probe:
                name = choose_model(probe, model)
        else:
            name = choose_model(None, model)
    except (OSError, ValueError, SchemaError) as exc:  # SchemaError: a damaged or foreign database
        raise ServeError(str(exc)) from None
    try:
        library = Library(path, model=name, device=device, create=create)
    except (ModelMismatchError, SchemaError) as exc:  # DamagedLibraryError (a lost database) is a SchemaError
        raise ServeError(str(exc)) from None
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise ServeError(_model_error(name, exc)) from None
    return library


def token_from_env(environ: Any = None) -> str | None:
    """`$CLIPFORGE_TOKEN`, or None when it is not set. Set but blank is an error, never "no token":
    whoever set it meant to protect the library, and a server without a token lets anyone add images."""
    value = (os.environ if environ is None else environ).get("CLIPFORGE_TOKEN")
    if value is None:
        return None
    if not value.strip():
        raise ServeError(
            "CLIPFORGE_TOKEN is set but blank: put the token in it, or unset it to run without a token "
            "(anyone who reaches the server can then add images)"
        )
    return value.strip()


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in `path` (surrounding whitespace and a UTF-8 byte order mark removed: Windows editors and
    PowerShell's `Set-Content -Encoding UTF8` write one); ServeError when it is missing or empty."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ServeError(f"cannot read --token-file {path}: {exc.strerror or exc}") from None
    # Windows PowerShell 5.1's `>` writes UTF-16 with its byte order mark: read it as what it says it is
    encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        raise ServeError(f"cannot read --token-file {path}: it is not UTF-8 text (save it as UTF-8)") from None
    token = text.strip()
    if not token or "\n" in token:
        raise ServeError(
            f"--token-file {path} must hold the token on one line (it is {'empty' if not token else 'several lines'})"
        )
    return token


def _bind_hint(code: int | None, host: str) -> str | None:
    """What to do about a failed bind, by its errno; None where a guess would mislead.

    Each cause has its own advice: an address that resolves but is not this machine's (`--host 8.8.8.8`) was
    told "is another server using the port?", which sent the user after the wrong flag."""
    if code == errno.EADDRINUSE:
        return "is another server using the port? try --port 0 for any free port"
    if code == errno.EADDRNOTAVAIL:
        return (
            f"--host {host} is not an address of this machine: use 127.0.0.1 (this machine only), 0.0.0.0 "
            "(every interface) or one of its own addresses"
        )
    if code == errno.EACCES:
        return "ports below 1024 need administrator rights: use --port 0 or a port above 1023"
    return None


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 = any free port). Made with its protocol named
    (``IPPROTO_TCP``): asyncio turns Nagle's algorithm off (``TCP_NODELAY``) only on connections accepted from
    such a socket, and with it on, every answer after the first on a kept-alive connection waited ~40 ms for the
    client's delayed ACK (44 ms a thumbnail, 2.3 s for a page of 50)."""
    if not 0 <= int(port) <= 65535:
        raise ServeError(f"--port must be between 0 and 65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), int(port)))
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = getattr(exc, "strerror", None) or exc
        hint = _bind_hint(getattr(exc, "errno", None), host)
        raise ServeError(f"cannot listen on {host}:{port}: {reason}{f' ({hint})' if hint else ''}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def build_server(
    app: Any, limits: ServerLimits, log_level: str = "info", forwarded_allow_ips: str | None = None
) -> Any:
    """The uvicorn Server `serve` runs (tests run the same one on a loopback socket)."""
    import uvicorn

    # A client's address (fairness, per-address caps, the access log) is the peer's, unless the operator
    # names the reverse proxies it runs behind (`forwarded_allow_ips`, `serve --forwarded-allow-ips`, else
    # $FORWARDED_ALLOW_IPS): uvicorn's default trusts `X-Forwarded-For` from loopback, where `serve`
    # listens, so any client could be a new one per request.
    if forwarded_allow_ips is None:
        forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "")
    proxies = forwarded_allow_ips.strip()
    config = uvicorn.Config(
        app,
        log_level=log_level,
        http=protocol_with_timeouts(limits.header_timeout_s),
        # No route takes a WebSocket (gradio's events are HTTP streams), and uvicorn's WebSocket protocols log
        # each handshake's whole path and query to `uvicorn.error`, where `AccessLogFilter` never looks: a
        # `?token=` would be written in clear wherever the `websockets` or `wsproto` package is installed.
        ws="none",
        timeout_keep_alive=max(1, int(limits.keep_alive_s)),
        timeout_graceful_shutdown=5,
        server_header=False,
        limit_concurrency=None,
        backlog=2048,
        lifespan="on",
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )
    server = uvicorn.Server(config)
    _log_accept_errors_briefly(server)
    config.load()  # configures uvicorn's loggers now, so the filter below is not replaced later
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogFilter) for f in access.filters):
        access.addFilter(AccessLogFilter())  # tokens masked, each client-chosen field escaped and cut
    show_client_gone(access)  # a client that left before its answer: `499 Client Closed Request`
    return server


def _log_accept_errors_briefly(server: Any) -> None:
    """Have `server` install `AcceptErrorLog` on its loop as it starts: out of descriptors, asyncio logged a traceback
    per failed accept (~3,800 a second), filling the disk with the log (`accept_errors`)."""
    serve = server.serve

    async def serve_with_brief_accept_errors(sockets: Any = None) -> None:
        install_accept_error_log(asyncio.get_running_loop(), logging.getLogger("uvicorn.error"))
        await serve(sockets=sockets)

    server.serve = serve_with_brief_accept_errors


def _private_upload_dir() -> str | None:
    """Point gradio's upload folder at a new private (0700) folder unless the user chose one."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return None
    folder = tempfile.mkdtemp(prefix="clipforge-ui-uploads-")
    os.environ["GRADIO_TEMP_DIR"] = folder
    return folder


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    return f"http://{shown}:{port}"


def _served_store(library: Any) -> tuple[str, str]:
    """(where the served records are, what to say after the URL): the library folder, or a Milvus store, whose
    `--library` folder holds only thumbnails and uploads (it was named as if it were the library)."""
    spec = getattr(library, "spec", None)
    if spec is None or getattr(spec, "kind", "sqlite") == "sqlite":
        return f"library {Path(library.paths.root)}", ""
    return spec.describe(), f"; thumbnails and uploads in {Path(library.paths.root)}"


def serve(
    library: str | os.PathLike[str] | None,
    host: str = "127.0.0.1",
    port: int = 7860,
    token: str | None = None,
    model: str | None = None,
    limits: ServerLimits | None = None,
    device: str | None = None,
    log_level: str = "info",
    ui: bool = True,
    create: bool = False,
    store: str | None = None,
    forwarded_allow_ips: str | None = None,
    allowed_hosts: Sequence[str] = (),
) -> int:
    """Run the server until interrupted; returns the process exit code. `forwarded_allow_ips`: the reverse
    proxies whose X-Forwarded-For is believed (comma-separated addresses; default $FORWARDED_ALLOW_IPS).
    `allowed_hosts`: dotted names it answers to beyond addresses, localhost and this machine's name."""
    from clipforge.server.app import create_app

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    limits = limits or ServerLimits()
    # What `--create` is about to make, noted before anything is made (a Milvus store's collection is its own):
    # a start that fails before serving (a refused model or --token) takes it back.
    from clipforge.library.paths import LibraryPaths

    made = LibraryPaths(library).new_library() if create and not store else None
    sock = bind_socket(host, port)  # first: a busy port fails before minutes of model loading
    if not is_loopback(host):  # after the bind: no warning about listening where the server cannot listen
        protection = (
            "changes need the token"
            if token
            else "anyone who can reach it can also add images: pass --token-file to require a token for changes"
        )
        print(
            f"warning: listening on {host} makes the library reachable from other machines; {protection}",
            file=sys.stderr,
        )
    try:
        opened = open_server_library(library, model, device, create=create, store=store)
    except BaseException:
        sock.close()
        if made is not None:
            made.discard()
        raise
    private_uploads = _private_upload_dir() if ui else None
    serving = False
    try:
        app = create_app(opened, token=token, limits=limits, ui=ui, allowed_hosts=allowed_hosts)
        service = app.state.service
        if service.notice:
            print(f"notice: {service.notice}", file=sys.stderr)
        server = build_server(app, limits, log_level, forwarded_allow_ips)
        url = _url(host, sock.getsockname()[1])
        served, beside = _served_store(opened)
        print(
            f"clipforge serving {served} with model {service.model_name} "
            f"at {url}/ (REST API docs: {url}/docs){beside}",
            flush=True,
        )
        if (lan := lan_line(host, sock.getsockname()[1])) is not None:
            print(lan, flush=True)
        serving = True  # from here the library is the user's: the server may have added images to it
        with terminate_as_exit(), startup_heap_frozen():
            server.run(sockets=[sock])
    finally:
        sock.close()
        opened.close()
        if not serving and made is not None:
            made.discard()  # a start that failed (a blank --token, ...) leaves no library it created
        if private_uploads:
            shutil.rmtree(private_uploads, ignore_errors=True)
            os.environ.pop("GRADIO_TEMP_DIR", None)
    return 0
