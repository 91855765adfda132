"""Datasets in the form their authors publish them, pointed at as users do (each failed before):
Flickr8k's own `Flickr8k.token.txt` (`<image>#<n><TAB><caption>`) and split lists, CIFAR's
`cifar-10-python.tar.gz` download given as --root, and ImageNet's Kaggle image folder given as --root."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import pytest

from clipforge.data import (
    CIFAR10_CLASSES,
    CaptionDataset,
    DatasetLayoutError,
    ImageNet,
    open_dataset,
    read_caption_csv,
)
from clipforge.data.classnames import imagenet_wnids
from clipforge.data.retrieval_sets import open_retrieval_dataset

TOKEN = (
    "a.jpg#0\tA dog runs .\na.jpg#1\tA brown dog .\nb.jpg#0\tTwo cats .\n"
    "not a caption line\nb.jpg#1\tCats sleep .\nc.jpg#0\tA car .\n"
)


def _flickr8k_original(root: Path, make_image, test_images: list[str] | None) -> Path:
    """The original Flickr8k: Flickr8k_text/ with the token file (and split list), Flicker8k_Dataset/."""
    text = root / "Flickr8k_text"
    text.mkdir(parents=True)
    (text / "Flickr8k.token.txt").write_text(TOKEN)
    if test_images is not None:
        (text / "Flickr_8k.testImages.txt").write_text("".join(f"{n}\n" for n in test_images))
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        make_image(root / "Flicker8k_Dataset" / name)
    return text / "Flickr8k.token.txt"


def test_flickr8k_token_file_reads_as_captions(tmp_path, make_image):
    token = _flickr8k_original(tmp_path, make_image, None)
    with pytest.warns(UserWarning, match=r"1 bad rows \(line 4: expected <image>#<n><TAB><caption>\)"):
        table = read_caption_csv(token)
    assert table.images == ["a.jpg", "b.jpg", "c.jpg"]
    assert table.captions == ["A dog runs .", "A brown dog .", "Two cats .", "Cats sleep .", "A car ."]
    assert table.caption_image == [0, 0, 1, 1, 2]
    with pytest.warns(UserWarning):
        ds = CaptionDataset(token)  # images found in the sibling Flicker8k_Dataset/
    assert Path(ds.root).name == "Flicker8k_Dataset" and len(ds.images) == 3 and not ds.missing


def test_flickr8k_suite_reads_the_split_list_when_there(tmp_path, make_image):
    _flickr8k_original(tmp_path / "with", make_image, ["b.jpg", "c.jpg"])
    with pytest.warns(UserWarning):
        ds = open_retrieval_dataset("flickr8k", tmp_path / "with", "test")
    assert [Path(p).name for p in ds.images] == ["b.jpg", "c.jpg"] and ds.captions == [
        "Two cats .",
        "Cats sleep .",
        "A car .",
    ]
    assert ds.text_to_image == [0, 0, 1] and ds.layout == "flickr8k (Flickr_8k.testImages.txt)"
    _flickr8k_original(tmp_path / "without", make_image, None)
    with pytest.warns(UserWarning):
        ds = open_retrieval_dataset("flickr8k", tmp_path / "without", "test")
    assert len(ds.images) == 3 and ds.layout == "flickr8k (no split list: every captioned image)"


def test_folder_given_as_captions_names_the_token_file(tmp_path, make_image):
    _flickr8k_original(tmp_path, make_image, None)
    with pytest.raises(
        DatasetLayoutError, match=r"it holds Flickr8k.token.txt: did you mean .*Flickr8k.token.txt\?"
    ):
        read_caption_csv(tmp_path / "Flickr8k_text")


@pytest.fixture()
def cifar10_targz(tmp_path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows = bytes(range(256)) * 12  # one 3072-byte row

    def dump(name: str, content: dict) -> None:
        (folder / name).write_bytes(pickle.dumps({k.encode(): v for k, v in content.items()}, protocol=2))

    import numpy as np

    dump("batches.meta", {"label_names": [n.encode() for n in CIFAR10_CLASSES]})
    for name, labels in [*((f"data_batch_{i}", [i]) for i in range(1, 6)), ("test_batch", [3, 8])]:
        data = np.frombuffer(rows * len(labels), dtype=np.uint8).reshape(len(labels), 3072)
        dump(name, {"labels": labels, "data": data})
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive


def test_cifar_download_archive_is_read_as_root(cifar10_targz):
    test = open_dataset("cifar10", cifar10_targz, "test")
    assert test.layout == "pickle" and test.targets == [3, 8] and test.classnames[8] == "ship"
    assert open_dataset("cifar10", cifar10_targz, "train").targets == [1, 2, 3, 4, 5]
    with pytest.raises(
        DatasetLayoutError,
        match=r"holds no cifar-100-python/meta, cifar-100-python/test "
        r"\(its top-level entries: cifar-10-batches-py\)",
    ):
        open_dataset("cifar100", cifar10_targz, "test")


def test_imagenet_root_may_be_the_kaggle_image_folder(tmp_path, make_image):
    wnids = imagenet_wnids()
    (tmp_path / "LOC_val_solution.csv").write_text(
        f"ImageId,PredictionString\nILSVRC2012_val_00000001,{wnids[7]} 1 2 3 4\n"
    )
    images = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    make_image(images / "ILSVRC2012_val_00000001.JPEG")
    ds = ImageNet(images)
    assert ds.layout == "kaggle" and ds.targets == [7]


@pytest.mark.parametrize(
    "text",
    [
        "image_name| comment_number| comment\na.jpg| 0| A dog runs .\na.jpg| 1| A brown dog .\nb.jpg| 0| Two cats .\n",
        "image\tcaption\na.jpg\tA dog runs .\na.jpg\tA brown dog .\nb.jpg\tTwo cats .\n",
    ],
    ids=["kaggle-flickr30k-pipes", "tab-separated"],
)
def test_caption_files_split_by_pipes_or_tabs_read_by_their_header(tmp_path, text):
    path = tmp_path / "results.csv"
    path.write_text(text)
    table = read_caption_csv(path)
    assert table.images == ["a.jpg", "b.jpg"] and table.captions == [
        "A dog runs .",
        "A brown dog .",
        "Two cats .",
    ]


def test_kaggle_flickr30k_images_folder_is_found_beside_results_csv(tmp_path, make_image):
    (tmp_path / "results.csv").write_text("image_name| comment_number| comment\na.jpg| 0| A dog runs .\n")
    make_image(tmp_path / "flickr30k_images" / "a.jpg")
    ds = CaptionDataset(tmp_path / "results.csv")
    assert Path(ds.root).name == "flickr30k_images" and len(ds.images) == 1 and not ds.missing


@pytest.mark.parametrize("folder", ["Images", "flickr30k_images", "images"])
def test_a_caption_csv_naming_its_images_folder_is_read_from_its_own_folder(tmp_path, make_image, folder):
    """A CSV whose image paths start with the folder beside it (`Images/x.jpg`) had that folder taken as the
    images' root: every image was missing as `Images/Images/x.jpg` and the dataset refused."""
    for name in ("x.jpg", "y.jpg"):
        make_image(tmp_path / folder / name)
    csv = tmp_path / "caps.csv"
    csv.write_text(f"image,caption\n{folder}/x.jpg,a cat\n{folder}/y.jpg,a dog\n")
    ds = CaptionDataset(csv)
    assert ds.images == [str(tmp_path / folder / "x.jpg"), str(tmp_path / folder / "y.jpg")]
    assert ds.captions == ["a cat", "a dog"]
    bare = tmp_path / "bare.csv"  # names without the folder still resolve inside it
    bare.write_text("image,caption\nx.jpg,a cat\n")
    assert CaptionDataset(bare).images == [str(tmp_path / folder / "x.jpg")]
