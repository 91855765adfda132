"""Decoding ahead (`clipforge.data.prefetch`): what the reader takes from it is exactly what it would decode.

The prefetch runs in a forked process before torch is imported; these tests fork it from the test
process and wait for it, then read through `ImageFileReader` with and without it. The end-to-end
tests run the console command twice, as a user does: the second run decodes ahead.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge.data.files as files_module
from clipforge.data import prefetch
from clipforge.data.files import DecodedFile, ImageFileReader
from clipforge.image import Preprocess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("prefetch-photos")
    rng = np.random.default_rng(3)
    out = []
    for name, size in (("a.jpg", (640, 480)), ("b.png", (64, 48)), ("c.jpg", (300, 500))):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        pixels[: size[1] // 2] //= 3
        Image.fromarray(pixels).save(root / name)
        out.append(root / name)
    (root / "d-empty.jpg").write_bytes(b"")
    (root / "e-text.jpg").write_bytes(b"this is not an image")
    return [*out, root / "d-empty.jpg", root / "e-text.jpg"]


def _decoded_ahead(preprocess: Preprocess, paths: list[Path], capacity: int = 16, stop_first: bool = False
                   ) -> prefetch.Prefetch:
    """A finished prefetch of `paths` (forked, then waited for)."""
    ahead = prefetch.Prefetch(preprocess, capacity)
    if stop_first:
        ahead.request_stop()
    assert ahead.fork(lambda: [str(p) for p in paths])
    ahead.process.join(60)
    assert ahead.process.exitcode == 0
    return ahead


def _same(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, DecodedFile):
        pixels_equal = (a.pixels is None and b.pixels is None) or torch.equal(a.pixels, b.pixels)
        return pixels_equal and (a.path, a.size, a.sha256, a.width, a.height, a.index) == (
            b.path, b.size, b.sha256, b.width, b.height, b.index)
    return a == b


def _counting_reads(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = files_module.read_file

    def counted(path, *args, **kwargs):
        calls.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(files_module, "read_file", counted)
    return calls


def test_the_reader_takes_prefetched_files_and_they_equal_its_own_decode(photos, monkeypatch) -> None:
    preprocess = Preprocess(32)
    ahead = _decoded_ahead(preprocess, photos)
    assert ahead.count() == 3  # the two bad files are left to the reader
    plain = [ImageFileReader(photos, preprocess, hash=True)[i] for i in range(len(photos))]
    monkeypatch.setattr(prefetch, "_ACTIVE", ahead)
    reads = _counting_reads(monkeypatch)
    taken = [ImageFileReader(photos, preprocess, hash=True)[i] for i in range(len(photos))]
    assert all(_same(a, b) for a, b in zip(plain, taken, strict=True)), (plain, taken)
    assert reads == ["d-empty.jpg", "e-text.jpg"]  # only what the prefetch could not decode
    assert ahead.taken() == 3
    assert isinstance(taken[3], files_module.BadImage) and taken[3].reason == "file is empty (0 bytes)"


def test_another_preprocess_never_takes_prefetched_pixels(photos, monkeypatch) -> None:
    ahead = _decoded_ahead(Preprocess(32), photos[:3])
    monkeypatch.setattr(prefetch, "_ACTIVE", ahead)
    reads = _counting_reads(monkeypatch)
    for other in (Preprocess(48), Preprocess(32, draft=False), Preprocess(32, max_pixels=10_000)):
        reader = ImageFileReader(photos[:3], other)
        out = [reader[i] for i in range(3)]
        monkeypatch.setattr(prefetch, "_ACTIVE", None)
        assert all(_same(a, b) for a, b in zip(out, [reader[i] for i in range(3)], strict=True))
        monkeypatch.setattr(prefetch, "_ACTIVE", ahead)
    assert len(reads) == 18 and ahead.taken() == 0


def test_hash_off_and_known_bytes_read_as_the_reader_reads_them(photos, monkeypatch) -> None:
    preprocess = Preprocess(32)
    ahead = _decoded_ahead(preprocess, photos[:2])
    monkeypatch.setattr(prefetch, "_ACTIVE", ahead)
    unhashed = ImageFileReader(photos[:2], preprocess)[0]
    assert unhashed.sha256 is None and unhashed.pixels is not None
    known = ImageFileReader(photos[:2], preprocess, hash=True)[1].sha256
    skipping = ImageFileReader(photos[:2], preprocess, skip_shas=frozenset({known}))[1]
    assert skipping.sha256 == known and skipping.pixels is None
    assert ahead.taken() == 2


def test_a_photo_rewritten_after_it_was_decoded_ahead_is_read_again(photos, tmp_path, monkeypatch) -> None:
    copies = []
    for path in photos[:3]:
        copies.append(tmp_path / path.name)
        copies[-1].write_bytes(path.read_bytes())
    preprocess = Preprocess(32)
    ahead = _decoded_ahead(preprocess, copies)
    assert ahead.count() == 3
    copies[0].write_bytes(photos[2].read_bytes())  # another picture under the same name
    os.utime(copies[0], ns=(1_000_000_000, 1_000_000_000))
    replaced = tmp_path / "swap.jpg"
    replaced.write_bytes(copies[2].read_bytes())
    os.replace(replaced, copies[2])  # the same bytes, but a new file (inode)
    monkeypatch.setattr(prefetch, "_ACTIVE", ahead)
    reads = _counting_reads(monkeypatch)
    reader = ImageFileReader(copies, preprocess, hash=True)
    taken = [reader[i] for i in range(3)]
    assert reads == ["a.jpg", "c.jpg"] and ahead.taken() == 1
    monkeypatch.setattr(prefetch, "_ACTIVE", None)
    assert all(_same(a, b) for a, b in zip(taken, [reader[i] for i in range(3)], strict=True))
    assert taken[0].sha256 == hashlib.sha256(photos[2].read_bytes()).hexdigest()


def test_capacity_and_the_stop_flag_bound_the_work(photos) -> None:
    assert _decoded_ahead(Preprocess(32), photos, capacity=2).count() == 2
    assert _decoded_ahead(Preprocess(32), photos, stop_first=True).count() == 0
    with pytest.raises(ValueError, match="only clipforge.image.Preprocess"):
        prefetch.Prefetch(lambda image: image, 4)


def test_hints_round_trip_and_refuse_what_they_should_not_hold(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path))
    assert prefetch.load_hint("embed") is None
    prefetch.save_hint("embed", prefetch.pixel_key(Preprocess(224, draft=False)))
    loaded = prefetch.load_hint("embed")
    assert prefetch.pixel_key(loaded) == ("Preprocess", 224, False, True, Preprocess(224).max_pixels)
    prefetch.save_hint("embed", None)
    assert prefetch.load_hint("embed") is None
    hints = tmp_path / "prefetch-hints.json"
    for bad in (["Preprocess", 224, True, True, None], ["Preprocess", 5000, True, True, 100], ["Other", 224],
                "not a key"):
        hints.write_text(json.dumps({"embed": bad}))
        assert prefetch.load_hint("embed") is None, bad
    hints.write_text("{ truncated")
    assert prefetch.load_hint("embed") is None


def _cli(args: list[str], cache: Path, prefetch_env: str = "verbose") -> subprocess.CompletedProcess:
    env = {**os.environ, "CLIPFORGE_CACHE": str(cache), "CLIPFORGE_PREFETCH": prefetch_env, "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "clipforge", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def _vectors(out: Path) -> dict[str, np.ndarray]:
    from clipforge.library.export import read_export

    vectors, rows = read_export(out)
    return {Path(r["image_path"]).name: vectors[i] for i, r in enumerate(rows)}


@pytest.fixture(scope="module")
def album(tmp_path_factory) -> Path:
    """18 small photos and two bad files: a command that reads >= `AHEAD_MIN` photos."""
    root = tmp_path_factory.mktemp("album")
    rng = np.random.default_rng(5)
    for i in range(18):
        Image.fromarray(rng.integers(0, 255, (48 + i, 64, 3), dtype=np.uint8)).save(root / f"p{i:02d}.png")
    (root / "x-empty.jpg").write_bytes(b"")
    (root / "y-text.jpg").write_bytes(b"this is not an image")
    assert prefetch.AHEAD_MIN <= 18
    return root


def test_a_commands_second_run_decodes_ahead_with_the_same_embeddings(album, tmp_path) -> None:
    cache = tmp_path / "cache"
    runs = {}
    for name, env in (("first", "verbose"), ("second", "verbose"), ("off", "0")):
        done = _cli(["embed", str(album), "--model", "test-vit-tiny", "--out", str(tmp_path / name), "--float32",
                     "--quiet"], cache, env)
        assert done.returncode == 0, done.stderr
        runs[name] = done.stderr
    assert "decoded ahead" not in runs["first"]  # nothing known about the command yet
    assert "decoded ahead: 18 photos before the reader started (32 px crops), 18 taken by the reader" in runs["second"]
    assert "decoded ahead" not in runs["off"]
    first, second, off = (_vectors(tmp_path / n) for n in ("first", "second", "off"))
    assert sorted(first) == sorted(second) == sorted(off) == [f"p{i:02d}.png" for i in range(18)]
    assert all(np.array_equal(first[k], second[k]) and np.array_equal(first[k], off[k]) for k in first)


def test_index_add_decodes_ahead_only_after_a_run_that_read_photos(album, tmp_path) -> None:
    cache = tmp_path / "cache"

    def add(library: str) -> subprocess.CompletedProcess:
        done = _cli(["index", "add", str(album), "--model", "test-vit-tiny", "--library", str(tmp_path / library),
                     "--quiet"], cache)
        assert done.returncode == 0, done.stderr
        return done

    assert "decoded ahead" not in add("lib").stderr
    again = add("lib2")  # another library, the same model: the hint holds
    assert "18 taken by the reader" in again.stderr and "added 18" in again.stdout and "failed 2" in again.stdout
    unchanged = add("lib2")  # reads nothing: decoded ahead for nobody, so the next run does not
    assert "decoded ahead: 18 photos" in unchanged.stderr and "0 taken" in unchanged.stderr
    assert "skipped 20 unchanged" in unchanged.stdout
    assert "decoded ahead" not in add("lib2").stderr


_ORPHAN = """
import os, sys, time
from clipforge.data import prefetch
from clipforge.image import Preprocess
ahead = prefetch.Prefetch(Preprocess(224, draft=False), 512)  # ~0.1 s a decode: a minute of work
ahead.fork(lambda: iter(lambda: sys.argv[1], None))  # the same big photo, without end
print(ahead.process.pid, flush=True)
time.sleep(0.3)
os._exit(0)
"""


def test_decoding_ahead_never_imports_torch_and_dies_with_its_parent(tmp_path) -> None:
    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1800, 2400, 3), dtype=np.uint8)).save(big)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "prefetch-hints.json").write_text(json.dumps({json.dumps(["embed", "", False]): list(
        prefetch.pixel_key(Preprocess(224)))}))
    probe = ("import os, sys; from clipforge.cli.main import build_parser, _decode_ahead; from clipforge.data import "
             "prefetch; args = build_parser().parse_args(['embed', sys.argv[1], '--out', sys.argv[2]]); "
             "_decode_ahead(args); ahead = prefetch.active(); ahead.process.join(); "
             "print('torch' in sys.modules, ahead.count())")
    done = subprocess.run([sys.executable, "-c", probe, str(big.parent), str(tmp_path / "out")], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**os.environ, "CLIPFORGE_CACHE": str(cache)})
    assert done.stdout.split() == ["False", "1"], done.stderr  # decoded the photo, torch never imported
    with subprocess.Popen([sys.executable, "-c", _ORPHAN, str(big)], stdout=subprocess.PIPE, text=True,
                          cwd=ROOT) as parent:
        child = int(parent.stdout.readline())
        assert parent.wait(timeout=120) == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the decoding process outlived the command that started it"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"
