"""Damaged and hostile dataset files (audit 62, fuzzer #2, #5, #8, #9): each is one line naming the file and what
was expected, or a bad sample skipped, counted and explained, never a traceback or gigabytes of memory.

- A zip member is read with a bound: one that declares more than the image-file cap is a bad sample (named by zip
  and member) before a byte of it is inflated; a 2 MB zip holding FFD8 + 2 GiB of zeros took `eval zeroshot` to
  4.5 GB. A member whose bytes do not match what it declares is a bad sample too.
- An MNIST `.gz` is read no further than its IDX header says the file holds.
- A Karpathy JSON entry that is not {filename, split, sentences} (no filename, not an object, sentences not a
  list, a raw that is not a string) is one line with the file and the entry's number, exit 2; `eval suite` records
  that line, not `failed: 'filename'`.
- classes.json, a Karpathy JSON and an MNIST `.gz` that cannot be parsed name the file; a classes.json of [] says
  the list is empty, one naming a class twice says so.
- A zip holding a member name twice is read once (it was scored twice); members with an absolute or '..' path are
  left out; both are counted in one warning line.

Each case is made here, in tmp_path.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.data import open_dataset
from clipforge.data.bad import BadImage
from clipforge.data.base import DatasetFormatError
from clipforge.data.retrieval_sets import read_karpathy

_EVAL = ["--model", "clipforge-tiny", "--device", "cpu", "--workers", "0", "--quiet"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def _declare(data: bytes, member: str, size: int) -> bytes:
    """`data` (a zip) with `member`'s uncompressed size set to `size` in its local header and central directory."""
    out, name = bytearray(data), member.encode()
    local = out.find(b"PK\x03\x04")
    while local >= 0:
        name_len = struct.unpack_from("<H", out, local + 26)[0]
        if out[local + 30:local + 30 + name_len] == name:
            struct.pack_into("<I", out, local + 22, size)
        local = out.find(b"PK\x03\x04", local + 4)
    central = out.find(b"PK\x01\x02")
    while central >= 0:
        name_len = struct.unpack_from("<H", out, central + 28)[0]
        if out[central + 46:central + 46 + name_len] == name:
            struct.pack_into("<I", out, central + 24, size)
        central = out.find(b"PK\x01\x02", central + 4)
    return bytes(out)


def _zip(path: Path, members: list[tuple[str, bytes]], declared: dict[str, int] | None = None) -> Path:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile's "Duplicate name" warning for the repeated-member case
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in members:
                z.writestr(name, data)
    data = buffer.getvalue()
    for member, size in (declared or {}).items():
        data = _declare(data, member, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _samples(dataset) -> list:
    return [dataset[i] for i in range(len(dataset))]


# --- #2: zip members read with a bound ------------------------------------------------------------------------

def test_a_zip_member_declaring_more_than_the_cap_is_a_bad_sample_named_by_zip_and_member(tmp_path):
    jpeg = _jpeg()
    root = _zip(tmp_path / "test_jpeg.zip", [("test/cat/1.jpg", jpeg), ("test/dog/1.jpg", jpeg),
                                             ("test/dog/huge.jpg", b"\xff\xd8" + bytes(4096))],
                declared={"test/dog/huge.jpg": 3_000_000_000})
    dataset = open_dataset("cifar10", root, "test")
    out = _samples(dataset)
    bad = [s for s in out if isinstance(s, BadImage)]
    assert len(out) == 3 and len(bad) == 1
    assert bad[0].source == f"{root}::test/dog/huge.jpg"
    assert bad[0].reason == "member is 3,000.0 MB uncompressed, larger than the 1,073.7 MB read at most"


def test_a_zip_member_that_inflates_past_what_it_declares_is_a_bad_sample(tmp_path):
    jpeg = _jpeg()
    root = _zip(tmp_path / "test_jpeg.zip", [("test/cat/1.jpg", jpeg), ("test/dog/1.jpg", jpeg),
                                             ("test/dog/liar.jpg", jpeg + bytes(1 << 20))],
                declared={"test/dog/liar.jpg": len(jpeg)})
    dataset = open_dataset("cifar10", root, "test")
    bad = [s for s in _samples(dataset) if isinstance(s, BadImage)]
    assert [(b.source, b.reason) for b in bad] == [
        (f"{root}::test/dog/liar.jpg", "damaged zip member (Bad CRC-32 for file 'test/dog/liar.jpg')")]


def test_no_more_than_the_cap_is_read_of_a_member_even_where_the_zip_reader_would_give_more(tmp_path, monkeypatch):
    from clipforge.data import _decode

    jpeg = _jpeg()
    root = _zip(tmp_path / "test_jpeg.zip", [("test/cat/1.jpg", jpeg), ("test/dog/1.jpg", jpeg)])
    monkeypatch.setattr(_decode, "MAX_MEMBER_BYTES", 4096)
    asked = []

    def opened(self, info, *args, **kwargs):  # a reader that does not stop at the declared size
        stream = io.BytesIO(jpeg + bytes(1 << 20))
        read = stream.read
        stream.read = lambda n=-1: asked.append(n) or read(n)
        return stream

    monkeypatch.setattr(zipfile.ZipFile, "open", opened)
    bad = [s for s in _samples(open_dataset("cifar10", root, "test")) if isinstance(s, BadImage)]
    assert asked == [4097, 4097]
    assert [b.reason for b in bad] == [f"member inflates to more than the 4,096 bytes read at most, although it "
                                       f"declares {len(jpeg):,} bytes"] * 2


def test_an_encrypted_zip_member_is_a_bad_sample(tmp_path):
    jpeg = _jpeg()
    root = _zip(tmp_path / "test_jpeg.zip", [("test/cat/1.jpg", jpeg), ("test/dog/1.jpg", jpeg)])
    data = bytearray(root.read_bytes())
    for signature, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the "encrypted" bit, in both headers
        at = data.find(signature)
        data[at + flags] |= 1
    root.write_bytes(bytes(data))
    bad = [s for s in _samples(open_dataset("cifar10", root, "test")) if isinstance(s, BadImage)]
    assert [(b.source, b.reason) for b in bad] == [
        (f"{root}::test/cat/1.jpg", "File 'test/cat/1.jpg' is encrypted, password required for extraction")]


def test_eval_zeroshot_skips_counts_and_names_an_oversized_zip_member(tmp_path):
    jpeg = _jpeg()
    root = _zip(tmp_path / "test_jpeg.zip", [("test/cat/1.jpg", jpeg), ("test/dog/1.jpg", jpeg),
                                             ("test/dog/huge.jpg", b"\xff\xd8" + bytes(4096))],
                declared={"test/dog/huge.jpg": 2_200_000_000})
    assert main(["eval", "zeroshot", *_EVAL, "--dataset", "cifar10", "--root", str(root),
                 "--out", str(tmp_path / "out")]) == 0
    report = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert report["dataset"]["evaluated"] == 2
    assert report["bad_images"]["skipped"] == 1
    assert report["bad_images"]["examples"] == [
        {"index": 2, "source": f"{root}::test/dog/huge.jpg",
         "reason": "member is 2,200.0 MB uncompressed, larger than the 1,073.7 MB read at most"}]


def _idx_bytes(array: np.ndarray) -> bytes:
    return (struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.astype(np.uint8).tobytes())


def _mnist(tmp_path: Path, images: bytes, labels: bytes, gz: bool = True) -> Path:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for stem, data in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        (raw / (stem + suffix)).write_bytes(gzip.compress(data) if gz else data)
    return raw


def test_an_mnist_gz_is_read_no_further_than_its_header_says(tmp_path):
    header = struct.pack(">BBBB3I", 0, 0, 0x08, 3, 3, 28, 28)
    raw = _mnist(tmp_path, header + bytes(3 * 28 * 28 + (8 << 20)), _idx_bytes(np.array([1, 2, 3])))
    with pytest.raises(DatasetFormatError) as caught:
        open_dataset("mnist", tmp_path, "test")
    assert str(caught.value) == (f"{raw / 't10k-images-idx3-ubyte.gz'}: header says (3, 28, 28), 2,352 bytes of "
                                 "data, but the file holds more")


def test_an_mnist_header_claiming_more_than_the_cap_is_refused_before_reading(tmp_path):
    header = struct.pack(">BBBB3I", 0, 0, 0x08, 3, 100_000_000, 28, 28)
    raw = _mnist(tmp_path, header + bytes(4096), _idx_bytes(np.array([1])))
    with pytest.raises(DatasetFormatError) as caught:
        open_dataset("mnist", tmp_path, "test")
    assert str(caught.value) == (f"{raw / 't10k-images-idx3-ubyte.gz'}: header says (100000000, 28, 28), "
                                 "78,400.0 MB of data, more than the 1,073.7 MB read at most")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_an_mnist_file_shorter_than_its_header_says(tmp_path, gz):
    raw = _mnist(tmp_path, _idx_bytes(np.zeros((3, 28, 28)))[:-100], _idx_bytes(np.array([1, 2, 3])), gz=gz)
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    with pytest.raises(DatasetFormatError) as caught:
        open_dataset("mnist", tmp_path, "test")
    assert str(caught.value) == (f"{raw / name}: header says (3, 28, 28), 2,352 bytes of data, but the file "
                                 "holds 2,252")


def test_mnist_still_reads_a_good_gz(tmp_path):  # the control: what the bounded read must not change
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 251
    _mnist(tmp_path, _idx_bytes(images), _idx_bytes(np.array([4, 9])))
    dataset = open_dataset("mnist", tmp_path, "test")
    assert dataset.targets == [4, 9] and dataset.images[:, :, :, 0].tolist() == images.tolist()


# --- #5: a malformed Karpathy JSON ----------------------------------------------------------------------------

_ENTRY = 'expected {"filename": ..., "split": ..., "sentences": [{"raw": ...}, ...]}'


@pytest.mark.parametrize("images,problem", [
    ([{"split": "test"}], "entry 1 has no 'filename'"),
    ([{"filename": "1.jpg", "split": "test", "sentences": [{"raw": "a"}]}, "str"], "entry 2 is a string, not an object"),
    ([{"filename": "1.jpg", "split": "test", "sentences": "notalist"}],
     "entry 1 (1.jpg): 'sentences' is a string, not a list"),
    ([{"filename": "1.jpg", "split": "test", "sentences": [{"raw": 5}]}],
     "entry 1 (1.jpg) sentence 1: 'raw' is a number, not a string"),
    ([{"filename": "1.jpg", "split": "test", "sentences": ["a dog"]}],
     "entry 1 (1.jpg) sentence 1 is a string, not an object"),
    ([{"filename": 7, "split": "test", "sentences": []}], "entry 1: 'filename' is a number, not a string"),
    ([{"filename": "1.jpg", "sentences": []}], "entry 1 (1.jpg) has no 'split'"),
    ([{"filename": "1.jpg", "split": "test", "filepath": 3, "sentences": []}],
     "entry 1 (1.jpg): 'filepath' is a number, not a string"),
    ([{"filename": "1.jpg", "split": "test", "sentences": [{"tokens": "a dog"}]}],
     "entry 1 (1.jpg) sentence 1: 'tokens' is a string, not a list of strings"),
    ([{"filename": "1.jpg", "split": "test", "sentences": [{"tokens": None}]}],
     "entry 1 (1.jpg) sentence 1: 'tokens' is null, not a list of strings"),
    ([{"filename": "1.jpg", "split": "test", "sentences": [{"raw": "ok"}, {"tokens": ["a", 3]}]}],
     "entry 1 (1.jpg) sentence 2: 'tokens' holds a number, not a list of strings"),
], ids=["no-filename", "not-object", "sentences-str", "raw-int", "sentence-str", "filename-int", "no-split",
        "filepath-int", "tokens-str", "tokens-null", "tokens-int"])
def test_a_malformed_karpathy_entry_is_one_line_naming_file_and_entry(tmp_path, images, problem):
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": images}))
    with pytest.raises(DatasetFormatError) as caught:
        read_karpathy(path, "test")
    assert str(caught.value) == f"{path}: \"images\" {problem}; {_ENTRY}"


def test_a_good_karpathy_file_still_reads(tmp_path):  # the control: tokens without raw, other splits, no sentences
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": [
        {"filename": "a.jpg", "filepath": "val2014", "split": "test", "sentences": [{"raw": " A dog. "}, {"raw": "x"}]},
        {"filename": "b.jpg", "split": "test", "sentences": [{"tokens": ["a", "cat"]}]},
        {"filename": "c.jpg", "split": "train", "sentences": [{"raw": "train only"}]},
        {"filename": "d.jpg", "split": "test", "sentences": []}]}))
    table, folders = read_karpathy(path, "test")
    assert table.images == ["val2014/a.jpg", "b.jpg"] and folders == ["val2014", ""]
    assert table.captions == ["A dog.", "x", "a cat"] and table.caption_image == [0, 0, 1]
    assert table.bad_rows == [(2, "d.jpg: no sentences")]


def _flickr30k(root: Path, images: list) -> Path:
    (root / "flickr30k-images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16)).save(root / "flickr30k-images" / "1.jpg")
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images}))
    return root / "dataset_flickr30k.json"


def test_eval_retrieval_on_a_malformed_karpathy_file_is_one_line_and_exit_2(tmp_path, capsys):
    path = _flickr30k(tmp_path / "f30k", [{"split": "test"}])
    code = main(["eval", "retrieval", *_EVAL, "--captions", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"error: {path}: \"images\" entry 1 has no 'filename'; {_ENTRY}"


def test_eval_suite_records_the_line_not_a_bare_key(tmp_path, capsys):
    path = _flickr30k(tmp_path / "f30k", [{"split": "test"}])
    code = main(["eval", "suite", "--models", "clipforge-tiny", "--datasets", f"flickr30k={tmp_path / 'f30k'}",
                 "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet", "--limit", "5"])
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    assert code == 1 and [(row["status"], row["error"]) for row in table["rows"]] == [
        ("failed", f"{path}: \"images\" entry 1 has no 'filename'; {_ENTRY}")]


# --- #8: files that cannot be parsed name themselves ----------------------------------------------------------

def _cifar_folders(root: Path, classes_json: bytes | str) -> Path:
    for name in ("airplane", "cat"):
        (root / "test" / name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / "test" / name / "0001.jpg")
    data = classes_json.encode() if isinstance(classes_json, str) else classes_json
    (root / "classes.json").write_bytes(data)
    return root / "classes.json"


_CLASSES = 'expected a list of class names or {"classes": [...]}'


@pytest.mark.parametrize("content,problem", [
    ("{{", 'not valid JSON at line 1 column 2 (Expecting property name enclosed in double quotes); ' + _CLASSES),
    (b"\xff[\"cat\"]", None),
    ("[]", "the class list is empty; " + _CLASSES),
    ('{"classes": []}', "the class list is empty; " + _CLASSES),
    ('["airplane", "cat", "airplane"]', "'airplane' is listed twice (entries 1 and 3); each class is listed once"),
], ids=["not-json", "not-utf8", "empty-list", "empty-classes", "duplicate"])
def test_a_bad_classes_json_is_one_line_naming_it(tmp_path, content, problem):
    path = _cifar_folders(tmp_path / "cifar", content)
    with pytest.raises(DatasetFormatError) as caught:
        open_dataset("cifar10", tmp_path / "cifar", "test")
    if problem is None:
        problem = f"class order file {path} is not UTF-8 text (line 1 has byte 0xff; save it as UTF-8), expected " \
                  'a list of class names or {"classes": [...]}'
        assert str(caught.value) == problem
    else:
        assert str(caught.value) == f"{path}: {problem}"


def test_a_good_classes_json_still_orders_the_classes(tmp_path):  # the control
    _cifar_folders(tmp_path / "cifar", '{"classes": ["cat", "airplane"]}')
    dataset = open_dataset("cifar10", tmp_path / "cifar", "test")
    assert dataset.classnames == ["cat", "airplane"] and sorted(dataset.targets) == [0, 1]


def test_a_karpathy_file_that_is_not_json_or_not_utf8_names_itself(tmp_path):
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text('{"images": [')
    with pytest.raises(DatasetFormatError) as caught:
        read_karpathy(path, "test")
    assert str(caught.value) == (f"{path}: not valid JSON at line 1 column 13 (Expecting value); expected "
                                 '{"images": [{"filename": ..., "split": ..., "sentences": [...]}, ...]}')
    path.write_bytes(b'{"images": [\xff]}')
    with pytest.raises(DatasetFormatError) as caught:
        read_karpathy(path, "test")
    assert str(caught.value) == (f"Karpathy split file {path} is not UTF-8 text (line 1 has byte 0xff; save it as "
                                 'UTF-8), expected {"images": [{"filename": ..., "split": ..., "sentences": [...]}, '
                                 '...]}')


@pytest.mark.parametrize("content,reason", [
    (b"\x1f\x8b" + bytes(range(100)), "Unknown compression method"),
    (b"plain text, not gzip\n", "Not a gzipped file (b'pl')"),
], ids=["gzip-magic-then-garbage", "not-gzip"])
def test_an_mnist_gz_that_is_not_gzip_names_itself(tmp_path, content, reason):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(content)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.array([1]))))
    with pytest.raises(DatasetFormatError) as caught:
        open_dataset("mnist", tmp_path, "test")
    assert str(caught.value) == (f"{raw / 't10k-images-idx3-ubyte.gz'}: cannot be read as gzip ({reason}); "
                                 "expected a gzipped IDX file (MNIST's format)")


# --- #9: a repeated member name is read once; unsafe names are counted --------------------------------------

def test_a_repeated_zip_member_is_read_once_and_unsafe_names_are_counted(tmp_path):
    jpeg = _jpeg()
    root = _zip(tmp_path / "test_jpeg.zip", [
        ("test/cat/1.jpg", jpeg), ("test/dog/1.jpg", jpeg), ("test/../../evil/x.jpg", jpeg), ("/abs/cat.jpg", jpeg),
        ("test/cat/1.jpg", jpeg), ("test/cat/1.jpg", jpeg)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = open_dataset("cifar10", root, "test")
    assert sorted(m for m, _ in dataset.samples) == ["test/cat/1.jpg", "test/dog/1.jpg"]
    assert [str(w.message) for w in caught] == [
        f"{root}: 2 repeated member names read once (test/cat/1.jpg; its last copy is what is read); 2 members with "
        "an absolute or '..' path left out (test/../../evil/x.jpg, /abs/cat.jpg)"]
    assert dataset.reader.skipped == [("test/../../evil/x.jpg", "absolute or '..' path"),
                                      ("/abs/cat.jpg", "absolute or '..' path"),
                                      ("test/cat/1.jpg", "repeated name"), ("test/cat/1.jpg", "repeated name")]


def test_a_zip_of_unique_safe_names_warns_nothing(tmp_path):  # the control
    jpeg = _jpeg()
    root = _zip(tmp_path / "test_jpeg.zip", [("test/cat/1.jpg", jpeg), ("test/dog/1.jpg", jpeg),
                                             ("test/dog/2.jpg", jpeg)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = open_dataset("cifar10", root, "test")
    assert [str(w.message) for w in caught] == [] and len(dataset) == 3
    assert not any(isinstance(s, BadImage) for s in _samples(dataset))
