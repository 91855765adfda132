"""A caption longer than `MAX_CAPTION` (131,072: csv's own field limit, which caption CSVs already had) is not
read: its sample is skipped and counted with a reason (audit 62 #6). A 20 MB `.txt` member in a WebDataset shard
took `train` to 2.9 GB: webdataset read every member whole, and a resampled stream's 1,000-sample shuffle buffer
held ~111 copies of it; a 20 MB line of a Flickr token file was tokenized whole at every draw (2 s a sample)."""

from __future__ import annotations

import csv
import io
import tarfile
import warnings

import pytest
import torch
from PIL import Image

from clipforge.data import BadImage, read_caption_csv
from clipforge.data.base import DatasetFormatError
from clipforge.data.captions import MAX_CAPTION
from clipforge.data.collate import skip_bad_collate
from clipforge.data.webdata import WebDatasetImageText, _samples
from clipforge.image import build_preprocess

HUGE = 3 * 2**20  # a few MB: what the reader must not hold (the audit's 20 MB would slow the suite)


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (value, 0, 0)).save(buf, "JPEG")
    return buf.getvalue()


def _shard(path, members: list[tuple[str, bytes]]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


class _Recorder:
    """A tokenizer that keeps the length of every text it is given."""

    def __init__(self) -> None:
        self.lengths: list[int] = []

    def __call__(self, text: str) -> torch.Tensor:
        self.lengths.append(len(text))
        return torch.tensor([len(text)])


def _items(shard: str, tokenizer: _Recorder) -> list:
    ds = WebDatasetImageText(shard, build_preprocess(8), tokenizer, shuffle_buffer=0, shuffle_shards=False)
    return list(ds)


def test_a_huge_caption_member_is_not_read_and_its_sample_is_skipped_with_the_reason(tmp_path):
    assert MAX_CAPTION == 131_072 == csv.field_size_limit()  # the bound caption CSVs already had
    members = [(f"s{i}.{ext}", data) for i in range(3) for ext, data in (("jpg", _jpeg(i)), ("txt", f"a red thing {i}".encode()))]
    shard = _shard(tmp_path / "huge.tar", [*members, ("h.txt", b"a " * (HUGE // 2)), ("h.jpg", _jpeg(9))])
    tokenizer = _Recorder()
    items = _items(shard, tokenizer)
    bad = [item for item in items if isinstance(item, BadImage)]
    assert [(b.path, b.reason) for b in bad] == [
        (f"{shard}::h", "caption h.txt is 3,145,728 bytes, more than the 131,072 a caption may hold (not read)")
    ]
    assert len(items) == 4 and tokenizer.lengths == [13, 13, 13]  # the huge caption never reaches the tokenizer
    # what the tar reader yields for that sample holds no caption bytes at all, so the shuffle buffer cannot either
    raw = next(s for s in _samples(iter([shard])) if s["__key__"] == "h")
    assert not isinstance(raw["txt"], (bytes, str))
    batch = skip_bad_collate(items)
    assert [e.path for e in batch.errors] == [f"{shard}::h"] and batch.images.shape == (3, 3, 8, 8)


def test_a_caption_at_the_limit_is_read_whole_and_one_byte_more_is_skipped(tmp_path):
    at, over = b"x" * MAX_CAPTION, b"y" * (MAX_CAPTION + 1)
    shard = _shard(tmp_path / "edge.tar", [("a.jpg", _jpeg(1)), ("a.txt", at), ("b.jpg", _jpeg(2)), ("b.caption", over)])
    tokenizer = _Recorder()
    items = _items(shard, tokenizer)
    assert tokenizer.lengths == [MAX_CAPTION]
    assert [(b.path, b.reason) for b in items if isinstance(b, BadImage)] == [
        (f"{shard}::b", "caption b.caption is 131,073 bytes, more than the 131,072 a caption may hold (not read)")
    ]


def test_other_members_are_grouped_as_webdataset_groups_them(tmp_path):
    """The meta files webdataset skips are skipped; a member training does not use is listed in its sample but not read
    (review 62 #1: tests/data/test_s62_shard_bounds.py)."""
    blob = b"j" * (MAX_CAPTION + 5)
    shard = _shard(tmp_path / "other.tar", [("__meta__", b"m"), ("k.jpg", _jpeg(3)), ("k.txt", b"ok"), ("k.json", blob)])
    samples = list(_samples(iter([shard])))
    assert [sorted(k for k in s if not k.startswith("__")) for s in samples] == [["jpg", "json", "txt"]]
    assert not isinstance(samples[0]["json"], bytes) and samples[0]["txt"] == b"ok" and samples[0]["jpg"] == _jpeg(3)


def test_a_huge_line_of_a_flickr_token_file_is_a_bad_row(tmp_path):
    lines = [f"{i}.jpg#0\ta red thing {i}" for i in range(3)]
    huge = "8.jpg#0\t" + "a " * (HUGE // 2)
    path = tmp_path / "Flickr8k.token.txt"
    path.write_text("\n".join([lines[0], huge, lines[1], "no tab here", lines[2], "9.jpg#0\t" + "z" * (MAX_CAPTION - 8)]) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_caption_csv(path)
    reason = f"a line of {len(huge):,} characters, more than the 131,072 a caption may hold"
    assert table.bad_rows == [(2, reason), (4, "expected <image>#<n><TAB><caption>")]
    assert table.images == ["0.jpg", "1.jpg", "2.jpg", "9.jpg"]
    assert [len(c) for c in table.captions] == [13, 13, 13, MAX_CAPTION - 8]  # a line of exactly the limit is kept
    assert [str(w.message) for w in caught] == [f"{path}: 2 bad rows (line 2: {reason}; line 4: expected "
                                                "<image>#<n><TAB><caption>) - skipped"]
    with pytest.raises(DatasetFormatError, match=r"2 bad rows \(line 2: a line of 3,145,736 characters"):
        read_caption_csv(path, strict=True)


def test_a_caption_csv_field_over_the_limit_is_refused_as_before(tmp_path):
    """The CSV reader is bounded already (csv's field limit, the same number): the whole file is refused."""
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\n0.jpg,a red thing\n1.jpg," + "a " * (MAX_CAPTION // 2 + 1) + "\n")
    with pytest.raises(DatasetFormatError, match=r"field larger than field limit \(131072\)"):
        read_caption_csv(path)


def test_token_lines_are_cut_at_the_limit_with_their_whole_length(tmp_path):
    from clipforge.data.flickr_text import _lines

    path = tmp_path / "t.txt"
    path.write_bytes(b"abcd\nabcde\nabcdef\r\nabcdefghijklm\n\nxyz")  # limit 5: under, at, over, far over, empty, last
    with open(path, encoding="utf-8") as f:
        got = list(_lines(f, 5))
    assert got == [("abcd\n", 4), ("abcde\n", 5), ("abcde", 6), ("abcde", 13), ("\n", 0), ("xyz", 3)]
    path.write_bytes(b"abcdef")  # a last line over the limit, with no newline
    with open(path, encoding="utf-8") as f:
        assert list(_lines(f, 5)) == [("abcde", 6)]
