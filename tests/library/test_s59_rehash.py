"""Two photos that swapped names keeping their size and time kept each other's vectors for good (audit 59,
collector finding 1): `index add` trusts an unchanged size and mtime without reading, and the server's advice
("run `clipforge index add` on it again") did nothing, `--retry-failed` neither. `index add --rehash` reads and
hashes every file named, and the advice names it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.library import Library
from clipforge.library.media import ChangedFileError, read_original

LIB = ["--workers", "0", "-q"]


def _swap_pair(folder) -> tuple[str, str]:
    """Two BMPs of the same size (BMP: size from the pixels alone) and the same mtime, far apart in content."""
    folder.mkdir(parents=True)
    a, b = folder / "a.bmp", folder / "b.bmp"
    Image.new("RGB", (40, 30), (250, 10, 10)).save(a)
    Image.new("RGB", (40, 30), (10, 10, 250)).save(b)
    for path in (a, b):
        os.utime(path, ns=(1_714_564_800_000_000_000, 1_714_564_800_000_000_000))
    return str(a), str(b)


def _swap(a: str, b: str) -> None:
    os.rename(a, a + ".t")
    os.rename(b, a)
    os.rename(a + ".t", b)


def _best(capsys, lib: list[str], image: str) -> str:
    capsys.readouterr()
    assert main(["search", "--image", image, "-k", "1", "--paths", "-q", *lib]) == 0
    return capsys.readouterr().out.strip()


def test_rehash_reads_files_whose_size_and_time_did_not_change(tmp_path, capsys) -> None:
    a, b = _swap_pair(tmp_path / "swap")
    lib = ["--library", str(tmp_path / "lib")]
    assert main(["index", "add", str(tmp_path / "swap"), *lib, *LIB]) == 0
    _swap(a, b)
    assert os.stat(a).st_size == os.stat(b).st_size
    capsys.readouterr()
    assert main(["index", "add", str(tmp_path / "swap"), *lib, *LIB, "--json", "--retry-failed"]) == 0
    assert json.loads(capsys.readouterr().out)["unchanged"] == 2  # trusted unread: the swap is not seen
    assert _best(capsys, lib, a) == b  # a's bytes are found under b's name

    assert main(["index", "add", str(tmp_path / "swap"), *lib, *LIB, "--rehash"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("added 0 files, updated 2, relinked 0, skipped 0 unchanged, failed 0; embedded 0, "), line
    assert line.endswith("; --rehash read 2 files whose size and time had not changed: 2 held other bytes"), line
    assert (_best(capsys, lib, a), _best(capsys, lib, b)) == (a, b)
    with Library(tmp_path / "lib", create=False) as library:  # both vectors kept (the swap was in one batch)
        assert library.stats(verify=True)["missing_vectors"] == 0
        assert library.store.embedding_count(library.encoder.fingerprint) == 2
    assert main(["index", "add", str(tmp_path / "swap"), *lib, *LIB, "--rehash", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["rehashed"], report["rehash_changed"], report["touched"], report["updated"]) == (2, 0, 2, 0)


def test_the_servers_refusal_names_the_flag_that_reads_the_file_again(tmp_path, tiny_encoder) -> None:
    a, b = _swap_pair(tmp_path / "swap")
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "swap", workers=0, progress=False)
        _swap(a, b)
        record = library.store.image_by_path(a)
        with pytest.raises(ChangedFileError) as refused:
            read_original(record)
        assert refused.value.reason == ("changed since it was indexed (run `clipforge index add --rehash` on it to "
                                        "read it again)")
        assert library.add(a, workers=0, progress=False).unchanged == 1  # what a plain add does: nothing
        with pytest.raises(ChangedFileError):
            read_original(library.store.image_by_path(a))
        report = library.add(a, workers=0, progress=False, rehash=True)  # what the advice does
        assert (report.updated, report.rehashed, report.rehash_changed) == (1, 1, 1)
        assert read_original(library.store.image_by_path(a)) == Path(a).read_bytes()


def test_rehash_works_on_a_milvus_store_too(tmp_path, capsys) -> None:
    """Review: the server of a Milvus store gave the same advice, and `--rehash` was refused there: a dead end."""
    pytest.importorskip("milvus_lite")
    a, b = _swap_pair(tmp_path / "swap")
    lib = ["--store", f"milvus-lite:{tmp_path / 'm.db'}", "--library", str(tmp_path / "lib")]
    assert main(["index", "add", str(tmp_path / "swap"), *lib, *LIB]) == 0
    _swap(a, b)
    assert _best(capsys, lib, a) == b
    assert main(["index", "add", str(tmp_path / "swap"), *lib, *LIB, "--rehash", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["rehashed"], report["rehash_changed"], report["updated"], report["unchanged"]) == (2, 2, 2, 0)
    assert (_best(capsys, lib, a), _best(capsys, lib, b)) == (a, b)
