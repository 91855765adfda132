"""`serve`: open a library with the right model and run the app under uvicorn, one process.

Model choice, in order: `--model`; the model the library was built with (a library never
mixes two models' vectors); for a new library ViT-B/32 when its weights are cached, else the
shipped offline `clipforge-tiny` (with a notice), else an attempt to fetch ViT-B/32 that
ends in an error saying what to do. The socket is bound here, before uvicorn starts, so
`--port 0` works (any free port) and the printed URL is the real one.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any

from clipforge.server.limits import ServerLimits

__all__ = ["ServeError", "bind_socket", "choose_model", "is_loopback", "open_server_library", "serve"]


class ServeError(RuntimeError):
    """The server cannot start; the message says why and what to do."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def choose_model(library: Any, requested: str | None) -> str:
    """The model name to open `library` with (see module docstring)."""
    from clipforge.cli.common import default_model_name

    if requested:
        return requested
    recorded = library.stats().get("model") or {}
    if recorded:
        if not recorded.get("name"):
            raise ServeError(f"library {library.paths.root} was built with a model passed as a Python object "
                             f"(fingerprint {recorded['fingerprint'][:12]}); pass the same checkpoint with --model")
        return str(recorded["name"])
    return default_model_name()


def _no_model_hint(name: str) -> str:
    from clipforge.resolve import OFFLINE_DEFAULT as OFFLINE_MODEL
    from clipforge.resolve import PREFERRED_DEFAULT as DEFAULT_MODEL

    if name != DEFAULT_MODEL:
        return "check the --model value (a model name, a checkpoint path, or a test config such as test-vit-tiny)"
    return (f"no model is available offline: {DEFAULT_MODEL}'s weights are not cached and the shipped offline model "
            f"{OFFLINE_MODEL} is not installed. Pass --model /path/to/checkpoint, or download {DEFAULT_MODEL} once "
            f"while online: python -c 'import clipforge; clipforge.load(\"{DEFAULT_MODEL}\")'")


def open_server_library(path: str | os.PathLike[str] | None, model: str | None = None,
                        device: str | None = None) -> Any:
    """The Library at `path` with its model loaded; ServeError with advice when that fails."""
    from clipforge.library import Library, ModelMismatchError

    with Library(path) as probe:
        name = choose_model(probe, model)
    try:
        library = Library(path, model=name, device=device)
    except ModelMismatchError as exc:
        raise ServeError(str(exc)) from None
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise ServeError(f"cannot load model {name!r}: {exc}\n{_no_model_hint(name)}") from None
    return library


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 = any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                         f"(is another server using the port? try --port 0 for any free port)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    return f"http://{shown}:{port}"


def serve(library: str | os.PathLike[str] | None, host: str = "127.0.0.1", port: int = 7860, token: str | None = None,
          model: str | None = None, limits: ServerLimits | None = None, device: str | None = None,
          log_level: str = "info", ui: bool = True) -> int:
    """Run the server until interrupted; returns the process exit code."""
    import uvicorn

    from clipforge.server.app import create_app

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    limits = limits or ServerLimits()
    if not is_loopback(host):
        protection = ("changes need the token" if token else
                      "anyone who can reach it can also add images: pass --token to require one for changes")
        print(f"warning: listening on {host} makes the library reachable from other machines; {protection}",
              file=sys.stderr)
    sock = bind_socket(host, port)  # first: a busy port fails before minutes of model loading
    try:
        opened = open_server_library(library, model, device)
    except BaseException:
        sock.close()
        raise
    try:
        app = create_app(opened, token=token, limits=limits, ui=ui)
        service = app.state.service
        if service.notice:
            print(f"notice: {service.notice}", file=sys.stderr)
        config = uvicorn.Config(app, log_level=log_level, timeout_keep_alive=5, timeout_graceful_shutdown=5,
                                server_header=False, limit_concurrency=256)
        url = _url(host, sock.getsockname()[1])
        print(f"clipforge serving library {Path(opened.paths.root)} with model {service.model_name} "
              f"at {url}/ (REST API docs: {url}/docs)", flush=True)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        opened.close()
    return 0
