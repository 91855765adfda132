"""What a WebDataset shard's reader may hold (review 62 #1) and a corrupt header mid-shard (review 62 #4).

Bounding caption members alone left the rest of audit 62 #6: a 20 MB `.json` (LAION shards all carry one) or a 20 MB
`.jpg` in a short shard still took a resampled `train` to 2.9 GB, since the 1,000-sample shuffle buffer held ~111
copies of it, and a 7 MB `.tar.gz` holding a 1.5 GiB "jpg" to 3.3 GB. Now a member training never uses is skipped
unread, an image member over the image-file cap is skipped unread and its sample counted with the reason, and the
shuffle buffer is bounded by bytes as well as by count. A shard whose tar header is corrupt after its start used to
end silently (tarfile takes it for the archive's end: 15 of 250 samples, no record); it now ends with the damaged-shard
record a truncated shard gets."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from clipforge.data import BadImage, webdata
from clipforge.data.collate import skip_bad_collate
from clipforge.data.webdata import DamagedShard, WebDatasetImageText, _samples
from clipforge.image import build_preprocess
from tests.data.test_s62_huge_caption import _shard


def _jpeg(value: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(value).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, "JPEG")
    return buf.getvalue()




def _pairs(prefix: str, count: int) -> list[tuple[str, bytes]]:
    return [(f"{prefix}{i}.{ext}", data) for i in range(count)
            for ext, data in (("jpg", _jpeg(i)), ("txt", f"{prefix} photo {i}".encode()))]


def _raw(shard: str) -> list:
    return list(_samples(iter([shard])))


# -- members training never uses ------------------------------------------------------------------------------------

def test_members_training_never_uses_are_not_read_but_still_listed(tmp_path):
    blob = b"j" * 50_000
    shard = _shard(tmp_path / "meta.tar", [("__meta__", b"m"), ("k.jpg", _jpeg(3)), ("k.txt", b"ok"), ("k.json", blob),
                                           ("k.npy", blob), ("k.seg.txt", blob), ("m.json", blob), ("m.txt", b"no image")])
    k, m = _raw(shard)
    assert sorted(key for key in k if not key.startswith("__")) == ["jpg", "json", "npy", "seg.txt", "txt"]
    assert k["jpg"] == _jpeg(3) and k["txt"] == b"ok"  # what training reads is read
    assert [type(k[key]).__name__ for key in ("json", "npy", "seg.txt")] == ["_Unread"] * 3  # no bytes held
    ds = WebDatasetImageText(shard, build_preprocess(8), lambda text: text, shuffle_buffer=0, shuffle_shards=False)
    first, second = list(ds)
    assert first[1] == "ok" and first[0].shape == (3, 8, 8)
    assert second == BadImage(f"{shard}::m", "sample has no image (.jpg/.png/.webp); has ['json', 'txt']")


# -- image members over the image-file cap --------------------------------------------------------------------------

def test_an_image_member_over_the_image_file_cap_is_not_read_and_its_sample_is_skipped(tmp_path, monkeypatch):
    from clipforge.image.loading import MAX_IMAGE_FILE_BYTES

    assert webdata.MAX_IMAGE_FILE_BYTES == MAX_IMAGE_FILE_BYTES == 1 << 30  # the cap the file and zip readers use
    small, big = _jpeg(1), _jpeg(2, size=64)
    monkeypatch.setattr(webdata, "MAX_IMAGE_FILE_BYTES", len(small))  # a small cap instead of a 1 GiB member
    shard = _shard(tmp_path / "big.tar", [("a.jpg", small), ("a.txt", b"fits"), ("h.JPG", big), ("h.txt", b"too big")])
    a, h = _raw(shard)
    assert a["jpg"] == small and type(h["jpg"]).__name__ == "_Unread"
    ds = WebDatasetImageText(shard, build_preprocess(8), lambda text: text, shuffle_buffer=0, shuffle_shards=False)
    items = list(ds)
    reason = f"image h.JPG is {len(big):,} bytes, more than the {len(small):,} an image file may hold (not read)"
    assert items[1] == BadImage(f"{shard}::h", reason)
    batch = skip_bad_collate(items)
    assert [(e.path, e.reason) for e in batch.errors] == [(f"{shard}::h", reason)] and batch.images.shape == (1, 3, 8, 8)


# -- the shuffle buffer's byte bound --------------------------------------------------------------------------------

def _held(ds: WebDatasetImageText, samples: list[dict], seed: int = 0) -> tuple[list[int], int]:
    """(the ids in the order the buffer gives them, the most samples it held when taking in the next one)."""
    given: list[int] = []
    most = 0

    def source():
        nonlocal most
        for sample in samples:
            most = max(most, samples.index(sample) - len(given))
            yield sample

    for sample in ds._shuffled(source(), random.Random(seed)):
        given.append(sample["id"])
    return given, most


def _old_shuffle(ids: list[int], size: int, seed: int) -> list[int]:
    """The count-only buffer as it was before the byte bound (6e72122)."""
    rng, buffer, out = random.Random(seed), [], []
    for i in ids:
        buffer.append(i)
        if len(buffer) >= size:
            j = rng.randrange(len(buffer))
            buffer[j], buffer[-1] = buffer[-1], buffer[j]
            out.append(buffer.pop())
    rng.shuffle(buffer)
    return out + buffer


def test_the_shuffle_buffer_holds_at_most_its_byte_bound(tmp_path, monkeypatch):
    samples = [{"id": i, "jpg": b"x" * 90, "txt": b"0123456789", "json": webdata._Unread("k.json", 10**9)}
               for i in range(40)]  # 100 bytes a sample; an unread member counts nothing
    ds = WebDatasetImageText(_shard(tmp_path / "s.tar", _pairs("a", 1)), shuffle_buffer=1000)
    assert webdata.MAX_SHUFFLE_BYTES == 256 * 2**20
    given, most = _held(ds, samples)
    assert most == 39 and sorted(given) == list(range(40))  # positive control: the count bound alone holds them all
    monkeypatch.setattr(webdata, "MAX_SHUFFLE_BYTES", 350)
    given, most = _held(ds, samples)
    assert most == 3 and sorted(given) == list(range(40))  # 300 bytes held; each sample given exactly once
    assert _held(ds, samples) == (given, 3) and _held(ds, samples, seed=1)[0] != given  # seeded, reproducible
    monkeypatch.setattr(webdata, "MAX_SHUFFLE_BYTES", 50)  # a sample bigger than the bound passes straight through
    assert _held(ds, samples) == (list(range(40)), 0)


def test_under_the_byte_bound_the_order_is_what_it_was(tmp_path):
    """Seeded runs give the order they gave before the byte bound (and ranks draw the same way), when it is not hit."""
    ds = WebDatasetImageText(_shard(tmp_path / "s.tar", _pairs("a", 1)), shuffle_buffer=7)
    samples = [{"id": i, "jpg": b"x" * 1000} for i in range(60)]
    for seed in (0, 5):
        assert _held(ds, samples, seed)[0] == _old_shuffle(list(range(60)), 7, seed)


def test_a_resampled_short_shard_is_bounded_end_to_end(tmp_path, monkeypatch):
    """The review's case, small: one short shard drawn over and over fills the buffer with copies of its samples."""
    shard = _shard(tmp_path / "short.tar", _pairs("s", 3))
    per_sample = len(_jpeg(0)) + len(b"s photo 0")
    monkeypatch.setattr(webdata, "MAX_SHUFFLE_BYTES", 4 * per_sample)
    pulled: list[int] = []
    real = webdata._samples

    def counting(urls):
        for sample in real(urls):
            pulled.append(1)
            yield sample

    monkeypatch.setattr(webdata, "_samples", counting)
    ds = WebDatasetImageText(shard, build_preprocess(8), lambda text: text, resampled=True, samples_per_epoch=20,
                             seed=4)
    first = [text for _, text in ds]
    assert len(first) == 20 and set(first) == {"s photo 0", "s photo 1", "s photo 2"}
    assert len(pulled) <= 20 + 5  # at most ~4 held (count bound alone: 1,000 pulled before the first came out)
    assert [text for _, text in ds] == first  # the same seed gives the same stream


# -- a corrupt header mid-shard -------------------------------------------------------------------------------------

def _corrupt(folder, count: int, bad_member: str) -> tuple[str, int]:
    """A shard of `count` samples whose `bad_member` header checksum is zeroed: (path, the header's byte offset)."""
    path = _shard(folder / "badsum.tar", _pairs("b", count))
    with tarfile.open(path) as tar:
        offset = next(m for m in tar.getmembers() if m.name == bad_member).offset
    data = bytearray(Path(path).read_bytes())
    data[offset + 148:offset + 156] = b"0000000\0"
    Path(path).write_bytes(bytes(data))
    return path, offset


def test_a_corrupt_header_mid_shard_ends_it_with_a_damaged_shard_record(tmp_path):
    bad, offset = _corrupt(tmp_path, 12, "b5.txt")  # b5.jpg is read, then its caption's header is corrupt
    good = _shard(tmp_path / "good.tar", _pairs("g", 2))
    items = _raw(bad) + _raw(good)
    error = f"ReadError: bad checksum (a corrupt header at byte {offset:,})"
    damaged = [item for item in items if isinstance(item, DamagedShard)]
    assert damaged == [DamagedShard(bad, f"damaged shard ({error})", samples_read=6, error=error)]
    assert [s["__key__"] for s in items if isinstance(s, dict)] == ["b0", "b1", "b2", "b3", "b4", "b5", "g0", "g1"]
    assert "txt" not in items[5]  # b5 has only its image: decoded, it is skipped as a sample with no caption


def test_a_header_cut_short_is_damage_and_a_missing_end_marker_is_not(tmp_path):
    whole = _shard(tmp_path / "whole.tar", _pairs("c", 4))
    with tarfile.open(whole) as tar:
        members = tar.getmembers()
    header = next(m for m in members if m.name == "c2.jpg").offset
    (tmp_path / "cut.tar").write_bytes(Path(whole).read_bytes()[:header + 100])
    items = _raw(str(tmp_path / "cut.tar"))
    error = f"ReadError: truncated header (a corrupt header at byte {header:,})"
    assert items[-1] == DamagedShard(str(tmp_path / "cut.tar"), f"damaged shard ({error})", samples_read=2, error=error)
    # a tar that stops after a whole member, without tar's end-of-archive blocks, is read whole as before
    (tmp_path / "noend.tar").write_bytes(Path(whole).read_bytes()[:header])
    assert [s["__key__"] for s in _raw(str(tmp_path / "noend.tar"))] == ["c0", "c1"]
    assert [s["__key__"] for s in _raw(whole)] == ["c0", "c1", "c2", "c3"]  # an intact shard: no record
