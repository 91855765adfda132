"""`clipforge milvus-server DIR`: a local Milvus 2.3 standalone server (the milvus-server extra).

For trying `--store milvus://` on one machine and for the opt-in server tests; a cluster is run with
Milvus's own tooling. Lives here rather than as the library module's `__main__` so its failures (the
extra missing, a server that never became healthy) go through the CLI's one error edge.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "milvus-server", help="run a local Milvus server for --store milvus:// (milvus-server extra)",
        description="Start Milvus 2.3 standalone from the optional `milvus` wheel with its data in DIR, print "
                    "its address, and run until Ctrl-C or SIGTERM.")
    parser.add_argument("data_dir", metavar="DIR", help="folder for its data, configs and logs (reused next time)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal
    import time

    from clipforge.library.milvus_server import start_local_server

    server = start_local_server(args.data_dir)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"Milvus at {server.address}: --store milvus://{server.address}/COLLECTION (log {server.log}); "
          "Ctrl-C stops it", flush=True)
    try:
        while server.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
