"""`--download` through the verified downloader against a server on 127.0.0.1: md5 checked before
anything is unpacked, archives unpacked safely (attacks written first), done once."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clipforge.data import download as dl
from clipforge.data.base import DatasetFormatError
from clipforge.data.catalog import DatasetInfo


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D401 - keep test output clean
        pass


@pytest.fixture()
def served(tmp_path, monkeypatch):
    folder = tmp_path / "served"
    folder.mkdir()
    handler = lambda *a, **k: _Quiet(*a, directory=str(folder), **k)  # noqa: E731
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv(dl.MIRROR_ENV, f"http://127.0.0.1:{httpd.server_address[1]}")
    yield folder
    httpd.shutdown()
    httpd.server_close()


def _tar(path: Path, members: dict[str, bytes], link: tuple[str, str] | None = None) -> str:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tf.addfile(info)
    return hashlib.md5(path.read_bytes()).hexdigest()


def _use(monkeypatch, files: list[dict]) -> None:
    info = DatasetInfo(key="rendered_sst2", title="t", task="zeroshot", folders=("rendered-sst2",), metric="top1",
                       download=tuple(files))
    monkeypatch.setattr(dl, "dataset_info", lambda name: info)


def test_download_verifies_unpacks_and_opens(served, tmp_path, monkeypatch):
    from PIL import Image

    from clipforge.data import open_dataset

    png = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(png, format="PNG")
    md5 = _tar(served / "rendered-sst2.tgz", {"rendered-sst2/test/positive/1.png": png.getvalue(),
                                               "rendered-sst2/test/negative/2.png": png.getvalue()})
    _use(monkeypatch, [{"url": "https://openaipublic.example/clip/data/rendered-sst2.tgz", "md5": md5}])
    root = tmp_path / "data"
    assert "downloaded" in dl.download_dataset("rendered_sst2", root, progress=False)
    ds = open_dataset("rendered_sst2", root, "test")
    assert sorted(ds.targets) == [0, 1]
    (served / "rendered-sst2.tgz").unlink()  # a second call fetches nothing
    assert "already downloaded" in dl.download_dataset("rendered_sst2", root, progress=False)


def test_md5_mismatch_unpacks_nothing(served, tmp_path, monkeypatch):
    from clipforge.weights.errors import DownloadError

    _tar(served / "a.tgz", {"x/ok.txt": b"hi"})
    _use(monkeypatch, [{"url": "https://example.org/a.tgz", "md5": "0" * 32}])
    with pytest.raises(DownloadError, match="md5"):
        dl.download_dataset("rendered_sst2", tmp_path / "data", progress=False)
    assert not (tmp_path / "data" / "x").exists() and not (tmp_path / "data" / ".downloads" / "a.tgz").exists()


def test_tar_member_outside_the_destination_is_refused(tmp_path):
    archive = tmp_path / "evil.tgz"
    _tar(archive, {"../escaped.txt": b"pwned"})
    with pytest.raises(DatasetFormatError, match="unsafe member"):
        dl.safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "escaped.txt").exists()


def test_tar_absolute_member_lands_inside_the_destination(tmp_path):
    archive = tmp_path / "abs.tgz"
    target = tmp_path / "absolute-escape.txt"
    _tar(archive, {str(target): b"pwned"})
    dl.safe_extract(archive, tmp_path / "dest")
    assert not target.exists() and (tmp_path / "dest" / str(target).lstrip("/")).is_file()


def test_tar_link_out_of_the_destination_is_refused(tmp_path):
    archive = tmp_path / "link.tgz"
    _tar(archive, {}, link=("data/link", "../../outside"))
    with pytest.raises(DatasetFormatError, match="unsafe member"):
        dl.safe_extract(archive, tmp_path / "dest")


def test_zip_member_outside_the_destination_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/file.txt", "fine")
        zf.writestr("../../zip-escaped.txt", "pwned")
    with pytest.raises(DatasetFormatError, match="outside"):
        dl.safe_extract(archive, tmp_path / "a" / "dest")
    assert not (tmp_path / "zip-escaped.txt").exists() and not (tmp_path / "a" / "dest" / "ok").exists()


def test_not_downloadable_says_where_to_get_it(tmp_path):
    with pytest.raises(ValueError, match="kaggle|Kaggle"):
        dl.download_dataset("fer2013", tmp_path)


def test_suite_download_then_evaluate(served, tmp_path, monkeypatch):
    import json

    from PIL import Image

    from clipforge.cli.main import main

    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(png, format="PNG")
    md5 = _tar(served / "rendered-sst2.tgz", {f"rendered-sst2/test/{c}/{i}.png": png.getvalue()
                                               for c in ("negative", "positive") for i in range(2)})
    _use(monkeypatch, [{"url": "https://openaipublic.azureedge.net/clip/data/rendered-sst2.tgz", "md5": md5}])
    root, out = tmp_path / "data", tmp_path / "out"
    assert main(["eval", "suite", "--download", "--models", "test-vit-tiny", "--datasets", "rendered_sst2",
                 "--root", str(root), "--out", str(out), "--device", "cpu", "--workers", "0", "--quiet"]) == 0
    (cell,) = out.glob("cells/*/*.json")
    assert json.loads(cell.read_text())["clipforge"]["images_evaluated"] == 4
