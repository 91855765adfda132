"""A local Milvus standalone server from the optional `milvus` wheel (``pip install -e '.[milvus-server]'``).

The `milvus` package (2.3.x, not to be confused with `milvus-lite`, the pure-Python embedded engine the
tests use) ships the real Milvus binary: Go coordinators, the C++ query node (knowhere: HNSW, IVF, ...),
an embedded etcd and local storage. It is what the opt-in server tests and `benchmarks/scale.py`'s
``milvus://`` rows run against, so the Milvus store is checked on a real server without Docker.

Why our own launcher and not the package's `default_server.start()`: that one changes the process's
working directory while starting, and its embedded etcd always listens on 2379/2380, so a second
server on the machine (a test run beside a benchmark) dies with "address already in use". Here the
etcd ports are free ones, given through an etcd config file (``ETCD_CONFIG_PATH``), the binaries are
unpacked once into a cache folder shared by every server, and the data folder is the caller's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LocalMilvusServer", "start_local_server"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "clipforge" / "milvus-server"


@dataclass
class LocalMilvusServer:
    """A running server: ``uri`` for `--store milvus://{address}/COLLECTION`; `stop()` ends it."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path
    _fds: list = field(default_factory=list, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux /proc), 0 when it cannot be read."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for fd in self._fds:
            fd.close()
        self._fds.clear()

    def __enter__(self) -> LocalMilvusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_server(data_dir: str | os.PathLike[str], timeout: float = 180.0) -> LocalMilvusServer:
    """Start Milvus standalone with its data in `data_dir`; returns once ``/healthz`` says OK.

    ImportError when the `milvus` wheel is absent; RuntimeError (with the log's tail) when the
    server exits or is not healthy within `timeout` seconds.
    """
    import milvus  # the optional wheel (`milvus==2.3.5`)

    if not hasattr(milvus, "MilvusServerConfig"):
        raise ImportError("the `milvus` module found is not the Milvus server wheel (pip install milvus==2.3.5)")
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    milvus._initialize_data_files(str(cache))  # unpacks bin/*.lzma once (md5-checked), 250 MB
    config = milvus.MilvusServerConfig(data_dir=str(data))
    config.resolve()  # free ports for every role, configs/milvus.yaml under `data`
    client, peer, metrics = _free_port(), _free_port(), _free_port()
    etcd_config = data / "configs" / "etcd.yaml"
    etcd_config.write_text(
        f"name: default\ndata-dir: {data / 'data' / 'etcd.data'}\n"
        f"listen-client-urls: http://127.0.0.1:{client}\nadvertise-client-urls: http://127.0.0.1:{client}\n"
        f"listen-peer-urls: http://127.0.0.1:{peer}\ninitial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-cluster: default=http://127.0.0.1:{peer}\nlog-level: warn\n", encoding="utf-8")
    bin_dir = cache / "bin"
    env = dict(os.environ, DEPLOY_MODE="STANDALONE", METRICS_PORT=str(metrics), ETCD_CONFIG_PATH=str(etcd_config),
               MILVUS_RUN_DIR=str(data / "run"),
               LD_LIBRARY_PATH=":".join(filter(None, [str(bin_dir), os.environ.get("LD_LIBRARY_PATH", "")])))
    log = data / "logs" / "milvus-stdout.log"
    out = open(log, "wb")  # noqa: SIM115 - held open for the server's lifetime, closed by stop()
    proc = subprocess.Popen([str(bin_dir / "milvus"), "run", "standalone"], cwd=data, env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = LocalMilvusServer(proc, int(config.get("proxy_port")), data, log, [out])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=5) as resp:
                if b"OK" in resp.read():
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop(timeout=5)
    tail = log.read_bytes()[-1500:].decode(errors="replace")
    raise RuntimeError(f"Milvus server in {data} did not become healthy (exit code {proc.returncode}): {tail}")


def main(argv: list[str] | None = None) -> int:
    """``python -m clipforge.library.milvus_server DATA_DIR``: run a server until Ctrl-C or SIGTERM."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="Run a local Milvus 2.3 standalone server (the milvus-server extra).")
    parser.add_argument("data_dir", help="folder for its data, configs and logs (reused on the next start)")
    args = parser.parse_args(argv)
    try:
        server = start_local_server(args.data_dir)
    except (ImportError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

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


if __name__ == "__main__":
    sys.exit(main())
