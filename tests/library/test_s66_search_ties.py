"""Exactly tied search results (one picture saved with different bytes) in one order, whatever `-k` (audit 66,
determinism): FAISS returned them newest first, so `-k 1` gave another photo than the first row of `-k 4`, and the
`--in` path ordered the same tie the other way."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.cli.main import main

TINY = ["--model", "clipforge-tiny"]


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """A photo, then three copies whose bytes differ only by a JPEG comment (same pixels, same score), in that
    indexing order (one `index add` per file: ids 1..4), and two other photos."""
    root = tmp_path_factory.mktemp("ties")
    folder = root / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    original = folder / "original.jpg"
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(original, quality=90)
    data = original.read_bytes()
    names = [str(original)]
    for i in (1, 2, 3):
        comment = f"edited copy {i}".encode()
        path = folder / f"copy{i}.jpg"
        path.write_bytes(data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:])
        names.append(str(path))
    for i in (1, 2):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"other{i}.jpg")
    return root, original, names


def _paths(capsys, args: list[str]) -> list[str]:
    capsys.readouterr()
    assert main(args) == 0
    return [hit["path"] for hit in json.loads(capsys.readouterr().out)["results"]]


@pytest.mark.parametrize("store", ["embedded", "milvus-lite"])
def test_tied_results_come_oldest_first_and_k_cuts_a_prefix(copies, store, capsys) -> None:
    root, original, names = copies
    where = (["--library", str(root / "lib")] if store == "embedded"
             else ["--store", f"milvus-lite:{root}/m.db", "--library", str(root / "mlib")])
    for name in [*names, str(root / "photos")]:  # the tied four first, one run each, then the others
        assert main(["index", "add", name, *where, *TINY, "--workers", "0", "-q"]) == 0
    query = ["search", "--image", str(original), *where, "--json", "-q"]
    four = _paths(capsys, [*query, "-k", "4"])
    assert four == names
    for k in (1, 2, 3):
        assert _paths(capsys, [*query, "-k", str(k)]) == names[:k]
    if store == "embedded":  # the --in path (no index) orders the same tie the same way
        assert _paths(capsys, [*query, "-k", "2", "--in", str(root / "photos")]) == names[:2]
