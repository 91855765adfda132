"""Generic ImageFolder, caption CSV parsing and the retrieval CaptionDataset (fixtures + real Flickr8k subset)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipforge.data import (
    CaptionDataset,
    DatasetFormatError,
    DatasetLayoutError,
    ImageFolder,
    open_dataset,
    read_caption_csv,
)


def test_image_folder_sorted_classes(tmp_path, make_image):
    for cls, names in {"golden_retriever": ["b.jpg", "a.png"], "cat": ["x.jpeg"], "empty": []}.items():
        (tmp_path / cls).mkdir()
        for n in names:
            make_image(tmp_path / cls / n)
    (tmp_path / "cat" / "readme.txt").write_text("skip me")
    ds = open_dataset("folder", tmp_path, "all")
    assert ds.folder_names == ["cat", "empty", "golden_retriever"]
    assert ds.classnames == ["cat", "empty", "golden retriever"]
    assert [(Path(p).name, lab) for p, lab in ds.samples] == [("x.jpeg", 0), ("a.png", 2), ("b.jpg", 2)]


def test_image_folder_split_subfolder_and_errors(tmp_path, make_image):
    make_image(tmp_path / "train" / "a" / "1.jpg")
    make_image(tmp_path / "test" / "b" / "1.jpg")
    assert ImageFolder(tmp_path, "test", min_classes=1).folder_names == ["b"]
    with pytest.raises(DatasetLayoutError, match=r"missing folder .*nowhere"):
        ImageFolder(tmp_path / "nowhere")
    with pytest.raises(DatasetFormatError, match=r"class folders \['b'\] are not in the given class list"):
        ImageFolder(tmp_path, "test", class_order=["a"])


CSV = """image,caption
a.jpg,A dog runs .
b.jpg,"A cat, sleeping ."
a.jpg,Another dog caption
,no image here
c.jpg,
b.jpg,Second cat caption
d.jpg,Image that is not on disk
"""


def _caption_fixture(tmp_path: Path, make_image) -> Path:
    (tmp_path / "captions.csv").write_text(CSV)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        make_image(tmp_path / "images" / name)
    return tmp_path / "captions.csv"


def test_read_caption_csv_reports_bad_row_line_numbers(tmp_path, make_image):
    path = _caption_fixture(tmp_path, make_image)
    with pytest.warns(UserWarning, match="2 bad rows"):
        table = read_caption_csv(path)
    assert table.bad_rows == [(5, "empty image"), (6, "empty caption")]
    assert table.images == ["a.jpg", "b.jpg", "d.jpg"]
    assert table.captions[1] == "A cat, sleeping ."
    assert table.caption_image == [0, 1, 0, 1, 2]
    with pytest.raises(DatasetFormatError, match="line 5: empty image; line 6: empty caption"):
        read_caption_csv(path, strict=True)


def test_caption_csv_header_checked(tmp_path):
    (tmp_path / "c.csv").write_text("file_id,sentence\na.jpg,hello\n")
    with pytest.raises(DatasetFormatError, match="no 'image' column"):
        read_caption_csv(tmp_path / "c.csv")
    assert read_caption_csv(tmp_path / "c.csv", image_column="file_id", caption_column="sentence").captions == ["hello"]
    with pytest.raises(DatasetLayoutError, match=r"missing file .*absent\.csv"):
        read_caption_csv(tmp_path / "absent.csv")


def test_caption_dataset_mapping_drops_missing_images_with_their_captions(tmp_path, make_image):
    path = _caption_fixture(tmp_path, make_image)
    with pytest.warns(UserWarning):
        ds = CaptionDataset(path)
    assert [Path(p).name for p in ds.images] == ["a.jpg", "b.jpg"]
    assert ds.captions == ["A dog runs .", "A cat, sleeping .", "Another dog caption", "Second cat caption"]
    assert ds.text_to_image == [0, 1, 0, 1]
    assert ds.image_to_text == [[0, 2], [1, 3]]
    assert [Path(p).name for p in ds.missing] == ["d.jpg"]
    image, index = ds[1]
    assert index == 1 and image.size == (12, 10)


@pytest.mark.data
def test_real_flickr8k_captions(shared):
    root = shared("flickr8k_1k")
    ds = CaptionDataset(root / "captions.txt", root / "images")
    assert len(ds.images) == 1000 and len(ds.captions) == 5000 and not ds.missing and not ds.bad_rows
    assert all(len(c) == 5 for c in ds.image_to_text)
    assert all(ds.text_to_image[j] == i for i, caps in enumerate(ds.image_to_text) for j in caps)
