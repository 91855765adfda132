"""How the serving process lives: what ends it (signals through `finally`) and what its garbage collector walks.

Both wrap uvicorn's run in `runner.serve`, and neither knows anything of the app.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["startup_heap_frozen", "terminate_as_exit"]


class _Terminated(SystemExit):
    pass


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM/SIGHUP end the server through `finally` blocks (the private upload folder is removed).

    uvicorn shuts down gracefully on SIGTERM and then raises the signal again with the handler
    that was installed before it: Python's default for SIGTERM ends the process on the spot, so
    no cleanup ran. With this handler in place that last signal becomes a SystemExit instead.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: Any) -> None:
        raise _Terminated(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except _Terminated:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def startup_heap_frozen() -> Iterator[None]:
    """Serve with what start-up made (~300,000 objects: torch, gradio, the model) out of the garbage collector's
    sight. Each full collection walked them all on the event loop: 130-185 ms a pass, every few seconds under a
    stream of uploads (another client's request waited that long). Given back on the way out, so a process that
    serves again (the tests) does not keep every earlier server's objects for good."""
    import gc

    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
