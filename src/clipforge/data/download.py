"""`--download` for datasets whose publishers serve a stable archive: fetched through the one
verified downloader (`clipforge.weights.download.download`: resumable, atomic), checked against
the publisher's md5 (what torchvision lists; catalog.json), and unpacked safely.

Archives are untrusted input: a tar member may be absolute, climb out with `..`, or be a link
pointing outside; a zip member may do the first two. Tars are extracted with Python's "data"
filter (which refuses all of these), zips member by member after checking each resolved path
stays inside the destination. Nothing is unpacked from an archive whose md5 does not match.
`CLIPFORGE_DATASET_MIRROR` replaces each URL's origin and folder (a proxy, a local copy, tests).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from .base import DatasetFormatError
from .catalog import dataset_info

__all__ = ["MIRROR_ENV", "download_dataset", "safe_extract"]

MIRROR_ENV = "CLIPFORGE_DATASET_MIRROR"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a tar(.gz) or zip into `dest`, refusing members that would land outside it."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = (root / info.filename).resolve()
                if not target.is_relative_to(root) or os.path.isabs(info.filename):
                    raise DatasetFormatError(f"{archive}: member {info.filename!r} would be written outside {dest}")
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DatasetFormatError(f"{archive}: member {info.filename!r} is a symbolic link")
            zf.extractall(root)
        return
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            try:
                tf.extractall(root, filter="data")
            except tarfile.FilterError as exc:
                raise DatasetFormatError(f"{archive}: unsafe member refused ({exc})") from exc
        return
    raise DatasetFormatError(f"{archive} is neither a tar nor a zip archive")


def _mirrored(url: str) -> str:
    mirror = os.environ.get(MIRROR_ENV, "").rstrip("/")
    return f"{mirror}/{url.rsplit('/', 1)[-1]}" if mirror else url


def download_dataset(name: str, root: str | Path, *, progress: bool = True) -> str:
    """Fetch, verify and unpack dataset `name` under `root` (once); return one line saying what happened."""
    from clipforge.weights.download import download
    from clipforge.weights.errors import DownloadError

    info = dataset_info(name)
    if not info.download:
        raise ValueError(f"{info.key} cannot be downloaded by clipforge (no stable public archive): {info.get}")
    root = Path(root).expanduser()
    stamp = root / f".clipforge-downloaded-{info.key}"
    if stamp.is_file():
        return f"{info.key}: already downloaded into {root}"
    staging = root / ".downloads"
    for item in info.download:
        url = _mirrored(item["url"])
        md5 = item.get("md5")

        def publisher_md5(candidate: Path, md5: str | None = md5, url: str = url) -> None:
            if _md5(candidate) != md5:
                raise ValueError(f"{url}: md5 does not match the publisher's {md5}")

        # The publisher's md5 is the pin a dataset archive has (none publishes a sha256): with one, the
        # file is checked against it before it gets its final name; without, the downloader's opt-in rule.
        path = download(url, staging, expected_sha256=item.get("sha256"), progress=progress,
                        allow_unpinned=True if md5 else None, verify=publisher_md5 if md5 else None)
        if "md5" in item and _md5(path) != item["md5"]:
            path.unlink(missing_ok=True)
            raise DownloadError(f"{url}: md5 does not match the publisher's {item['md5']}; the file was removed")
        dest = root / item.get("into", "")
        if path.suffix in (".mat", ".txt", ".json", ".csv"):
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / path.name)
        else:
            safe_extract(path, dest)
    stamp.write_text("\n".join(i["url"] for i in info.download) + "\n", encoding="utf-8")
    return f"{info.key}: downloaded, verified and unpacked into {root}"
