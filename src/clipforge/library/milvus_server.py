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
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from clipforge.errors import UserError

__all__ = ["LocalMilvusServer", "start_local_server"]


class MilvusServerError(UserError, RuntimeError):
    """The local server exited or never became healthy (a port taken, a full disk): one line at the CLI."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cache_dir() -> Path:
    from clipforge.weights.registry import cache_dir

    return cache_dir() / "milvus-server"


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

    ModuleNotFoundError when the `milvus` wheel is absent; MilvusServerError (with the log's tail) when the
    server exits or is not healthy within `timeout` seconds.
    """
    import milvus  # the optional wheel (`milvus==2.3.5`)

    if not hasattr(milvus, "MilvusServerConfig"):
        raise MilvusServerError("the `milvus` module found is not the Milvus server wheel "
                                "(pip install 'clipforge[milvus-server]')")
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
    raise MilvusServerError(f"Milvus server in {data} did not become healthy (exit code {proc.returncode}): {tail}")
