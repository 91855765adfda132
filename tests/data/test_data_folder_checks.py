"""Folder datasets and caption files that are not what they look like, refused or reported in one line.

Each of these was found by a new user: `eval zeroshot --dataset folder --root imagenet_sample` scored
top-1 100% over one "class" (its `images/` folder); an empty class folder passed without a word; a
symlink loop in the root aborted the run with `[Errno 40]`; `eval retrieval --captions x.png` said
only "'utf-8' codec can't decode byte 0x89", and `--captions <folder>` said "missing file <folder>".
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.data import (
    DatasetFormatError,
    DatasetLayoutError,
    ImageFolder,
    ZipImageFolder,
    read_caption_csv,
)
from clipforge.data.captions import CaptionDataset

_BASE = ["--model", "test-vit-tiny", "--device", "cpu", "--workers", "0", "--quiet", "--batch-size", "8"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))


def _classes(root: Path, make_image, spec: dict[str, int]) -> Path:
    for cls, count in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            make_image(root / cls / f"{i}.png", color=(40 * i % 256, 90, 20), size=(8, 8))
    return root


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# --- fewer than two classes ---------------------------------------------------------------------------------

def test_images_not_split_into_class_folders_are_refused_not_scored_as_one_class(tmp_path, make_image):
    root = tmp_path / "sample"  # imagenet_sample's layout: images/<file>.JPEG + labels.json
    for name in ("n01_tench.JPEG", "n02_goldfish.JPEG", "n03_shark.JPEG"):
        make_image(root / "images" / name)
    (root / "labels.json").write_text("[]")
    with pytest.raises(DatasetLayoutError) as exc:
        ImageFolder(root, "test")
    message = _one_line(exc)
    assert message.startswith(f"{root} holds 1 class folder (images/), too few to classify: "
                              "expected class folders of images (ROOT/CLASS/*.jpg), at least 2")
    assert message.endswith("images/ holds 3 images directly: the images are not split into class folders")
    assert "did you mean" not in message  # --root .../images would be no better


def test_a_wrapper_folder_around_the_classes_suggests_the_root_to_use(tmp_path, make_image):
    inner = _classes(tmp_path / "data" / "photos", make_image, {"cat": 2, "dog": 1, "notes": 0})
    with pytest.raises(DatasetLayoutError) as exc:
        ImageFolder(tmp_path / "data")
    assert _one_line(exc).endswith(f"photos/ holds 2 class folders of images (cat, dog): did you mean --root {inner}?")
    with pytest.warns(UserWarning, match="1 class with no images: notes/"):
        ds = ImageFolder(inner)  # the suggestion is right: it opens
    assert ds.folder_names == ["cat", "dog", "notes"] and len(ds) == 3


def test_images_directly_in_the_root_say_so(tmp_path, make_image):
    make_image(tmp_path / "a.jpg")
    make_image(tmp_path / "b.png")
    with pytest.raises(DatasetLayoutError, match=r"no class folders in .*; it holds 2 images directly: the images "
                                                 r"are not split into class folders"):
        ImageFolder(tmp_path)


def test_one_class_cli_exits_2_with_one_line_and_no_report(tmp_path, capsys, make_image):
    root = tmp_path / "sample"
    for i in range(3):
        make_image(root / "images" / f"{i}.jpg")
    code = main(["eval", "zeroshot", *_BASE, "--dataset", "folder", "--root", str(root), "--limit", "2",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"error: {root} holds 1 class folder (images/), too few to classify: expected class folders "
                   "of images (ROOT/CLASS/*.jpg), at least 2; images/ holds 3 images directly: the images are not "
                   "split into class folders"]
    assert not list((tmp_path / "out").glob("*.json"))


def test_a_zip_of_one_folder_is_refused_too_and_one_class_can_be_asked_for(tmp_path, make_image):
    path = tmp_path / "photos.zip"
    png = make_image(tmp_path / "x.png").read_bytes()
    with zipfile.ZipFile(path, "w") as z:
        for i in range(4):
            z.writestr(f"images/{i}.png", png)
    with pytest.raises(DatasetLayoutError) as exc:
        ZipImageFolder(path)
    assert _one_line(exc).startswith(f"{path} holds 1 class folder (images/, 4 images), too few to classify")
    assert len(ZipImageFolder(path, min_classes=1)) == 4
    _classes(tmp_path / "one", make_image, {"only": 2})
    assert ImageFolder(tmp_path / "one", min_classes=1).classnames == ["only"]


# --- empty classes --------------------------------------------------------------------------------------------

def test_an_empty_class_folder_stays_a_class_and_is_named_in_a_warning(tmp_path, make_image):
    root = _classes(tmp_path / "ds", make_image, {"bird": 0, "cat": 2, "dog": 1})
    (root / "bird" / "notes.txt").write_text("no image here")
    with pytest.warns(UserWarning, match=r"ds: 1 class with no images: bird/; kept in the class list to choose "
                                         r"from, but not scored"):
        ds = ImageFolder(root)
    assert ds.classnames == ["bird", "cat", "dog"] and ds.class_counts() == [0, 2, 1]


def test_a_class_of_the_given_order_without_a_folder_is_named_too(tmp_path, make_image):
    root = _classes(tmp_path / "ds", make_image, {"cat": 1, "dog": 1})
    with pytest.warns(UserWarning, match=r"1 class with no images: ant/ \(no folder\)"):
        ds = ImageFolder(root, class_order=["ant", "cat", "dog"])
    assert [label for _, label in ds.samples] == [1, 2]  # labels do not shift


# --- entries that cannot be examined --------------------------------------------------------------------------

def test_a_symlink_loop_in_the_root_is_skipped_counted_and_named(tmp_path, make_image):
    root = _classes(tmp_path / "imgs", make_image, {"cat": 2, "dog": 2})
    os.symlink("loop", root / "loop")  # ln -s loop imgs/loop
    with pytest.warns(UserWarning, match=r"imgs: skipped 1 entry that cannot be opened: loop \(symbolic link loop\)"):
        ds = ImageFolder(root, "test")
    assert ds.skipped == [(str(root / "loop"), "symbolic link loop")]
    assert ds.folder_names == ["cat", "dog"] and len(ds) == 4


def test_only_a_symlink_loop_says_what_was_skipped(tmp_path):
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(DatasetLayoutError, match=r"no class folders in .*; skipped 1 entry that cannot be opened: "
                                                 r"loop \(symbolic link loop\)"):
        ImageFolder(tmp_path)


def test_folder_eval_with_a_symlink_loop_and_an_empty_class_runs_and_warns(tmp_path, capsys, make_image):
    root = _classes(tmp_path / "imgs", make_image, {"bird": 0, "cat": 1, "dog": 1})
    os.symlink("loop", root / "loop")
    code = main(["eval", "zeroshot", *_BASE, "--dataset", "folder", "--root", str(root), "--templates", "simple",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Too many levels of symbolic links" not in err
    assert f"warning: {root}: skipped 1 entry that cannot be opened: loop (symbolic link loop)" in err
    assert f"warning: {root}: 1 class with no images: bird/" in err
    (report,) = (tmp_path / "out").glob("*.json")
    dataset = json.loads(report.read_text())["dataset"]
    assert dataset["num_classes"] == 3 and dataset["num_images"] == 2


# --- caption files --------------------------------------------------------------------------------------------

def test_a_folder_given_as_captions_says_so_and_suggests_its_caption_file(tmp_path):
    folder = tmp_path / "flickr"
    (folder / "images").mkdir(parents=True)
    (folder / "captions.txt").write_text("image,caption\na.jpg,a dog\n")
    (folder / "readme.txt").write_text("Flickr8k, research use\n")
    with pytest.raises(DatasetLayoutError) as exc:
        read_caption_csv(folder)
    assert _one_line(exc) == (f"{folder} is a folder, not a caption file: expected a UTF-8 CSV file of "
                              f"image,caption rows (e.g. captions.csv); it holds captions.txt: did you mean "
                              f"{folder / 'captions.txt'}?")
    with pytest.raises(DatasetLayoutError) as exc:
        read_caption_csv(folder / "images")
    assert _one_line(exc).endswith("is a folder, not a caption file: expected a UTF-8 CSV file of image,caption "
                                   "rows (e.g. captions.csv)")  # nothing there to suggest
    with pytest.raises(DatasetLayoutError, match=r"missing file .*absent\.csv"):
        read_caption_csv(folder / "absent.csv")


def test_an_image_or_non_utf8_file_as_captions_is_named(tmp_path, make_image):
    png = make_image(tmp_path / "x.png")
    with pytest.raises(DatasetFormatError) as exc:
        read_caption_csv(png)
    assert _one_line(exc) == (f"{png} is a PNG image, not a caption file: expected a UTF-8 CSV file of "
                              "image,caption rows (e.g. captions.csv)")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(b"image,caption\na.jpg,a dog\nb.jpg,un caf\xe9\n")
    with pytest.raises(DatasetFormatError) as exc:
        read_caption_csv(latin)
    assert _one_line(exc).startswith(f"{latin}: line 3 is not UTF-8 text (byte 0xe9): expected a UTF-8 CSV")


def test_a_captions_csv_saved_by_excel_on_chinese_windows_is_said_to_be_gbk(tmp_path):
    """Excel on Chinese Windows saves "CSV" in GBK: the error says so and how to convert it (never decoded as it)."""
    import shlex

    gbk = tmp_path / "标注.csv"
    gbk.write_bytes("image,caption\na.jpg,一只在草地上奔跑的狗\nb.jpg,两只猫在沙发上睡觉\n".encode("gbk"))
    with pytest.raises(DatasetFormatError) as exc:
        read_caption_csv(gbk)
    assert _one_line(exc) == (
        f"{gbk}: line 2 is not UTF-8 text (byte 0xd4) but looks like GBK/GB18030 (Chinese Windows' default) or another East Asian encoding "
        "(Big5, Shift-JIS, EUC-KR): "
        "expected a UTF-8 CSV file of image,caption rows (e.g. captions.csv); save it as UTF-8 (Notepad: Save as "
        f"-> Encoding UTF-8), or convert it: iconv -f GB18030 -t UTF-8 {shlex.quote(str(gbk))} > "
        f"{shlex.quote(str(tmp_path / '标注.utf8.csv'))} (-f BIG5, SHIFT_JIS or EUC-KR for Taiwanese, Japanese or Korean "
        "text)")


@pytest.mark.parametrize("what", ["folder", "png"])
def test_retrieval_cli_names_the_captions_file_in_one_line(tmp_path, capsys, make_image, what):
    folder = tmp_path / "flickr"
    make_image(folder / "images" / "a.jpg")
    (folder / "captions.txt").write_text("image,caption\na.jpg,a dog\n")
    given = folder if what == "folder" else make_image(tmp_path / "x.png")
    code = main(["eval", "retrieval", *_BASE, "--captions", str(given), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    expected = (f"did you mean {folder / 'captions.txt'}?" if what == "folder" else "is a PNG image, not a caption file")
    assert err[0].startswith(f"error: {given} ") and expected in err[0]
    with pytest.raises(DatasetLayoutError):
        CaptionDataset(folder)  # the dataset refuses the same way
