"""Tags a new user can rely on (issue 20, item 5).

Photos added after `clipforge tag` got no tags (tag filters silently skipped them); uploads lost
their file names and showed as a hash; a tag filter with no match said "Is the library empty?" on a
999-photo library; nothing listed the tags that exist.
"""

from __future__ import annotations

import io
import json
import os

import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.library import Library
from clipforge.library.media import clean_upload_name


@pytest.fixture()
def tagged(tmp_path, tiny_encoder, images_factory):
    images_factory(tmp_path / "photos", 6)
    library = Library(tmp_path / "lib", tiny_encoder)
    library.add(tmp_path / "photos", workers=0, progress=False)
    library.classify("cat, dog, car", templates="simple", top_k=2, progress=False)
    yield library
    library.close()


def test_photos_added_after_tagging_are_tagged_with_the_same_labels(tagged, tmp_path, images_factory):
    library = tagged
    new = images_factory(tmp_path / "later", 3, seed=7)
    report = library.add(tmp_path / "later", workers=0, progress=False)
    assert report.added == 3 and library.last_tagged == 3
    for photo in new:
        record = library.store.image_by_path(str(photo))
        tags = library.tags(record.id)
        assert len(tags) == 2 and {label for label, _ in tags} <= {"cat", "dog", "car"}
        assert tags[0][1] >= tags[1][1]
        # exactly what `tag` would have given it: same labels, templates, probabilities
        direct = library.classify_image(photo, "cat, dog, car", "simple")
        assert [label for label, _ in tags] == [label for label, _ in direct[:2]]
        assert [p for _, p in tags] == pytest.approx([p for _, p in direct[:2]], abs=1e-5)
        top = tags[0][0]
        assert record.id in {h.id for h in library.search("a photo", top_k=50, filter_tags=top)}
    assert sum(library.tag_counts().values()) == 9
    upload = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(upload, format="PNG")
    record = library.add_bytes(upload.getvalue(), filename="green.png")
    assert len(library.tags(record.id)) == 2  # uploads too


def test_index_add_through_the_cli_says_it_tagged(tagged, tmp_path, images_factory, capsys):
    images_factory(tmp_path / "later", 2, seed=3)
    assert main(["index", "add", str(tmp_path / "later"), "--library", str(tagged.paths.root), "-q"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1] == "tagged 2 new images with the library's labels (see `clipforge tag --list`)"


def test_untagged_library_adds_without_tags(tmp_path, tiny_encoder, images_factory):
    images_factory(tmp_path / "photos", 2)
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        assert library.last_tagged == 0 and library.tag_counts() == {}


def test_tag_list_and_tag_counts(tagged, capsys):
    lib = str(tagged.paths.root)
    counts = tagged.tag_counts()
    assert set(counts) == {"cat", "dog", "car"} and sum(counts.values()) == 6  # labels no photo has show 0
    assert list(counts.values()) == sorted(counts.values(), reverse=True)
    assert main(["tag", "--list", "--library", lib]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(counts)
    assert [int(line.split()[1]) for line in lines] == list(counts.values())
    assert main(["tag", "--list", "--library", lib, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"tags": counts}
    with pytest.raises(SystemExit) as exited:  # neither --labels nor --list: argparse's usage error
        main(["tag", "--library", lib])
    assert exited.value.code == 2 and "one of the arguments --labels --list is required" in capsys.readouterr().err


def test_tag_list_lines_up_chinese_labels(tmp_path, tiny_encoder, images_factory, capsys):
    """The counts start in one terminal column whatever the labels' script (a Chinese character takes two)."""
    from clipforge.text.width import display_width

    images_factory(tmp_path / "photos", 4)
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        library.classify("猫, dog, 小汽车", templates="simple", top_k=3, progress=False)
    assert main(["tag", "--list", "--library", str(tmp_path / "lib")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(["猫", "dog", "小汽车"])
    starts = {display_width(line[:len(line) - len(line.split()[-1])]) for line in lines}
    assert len(starts) == 1, lines


def test_tag_filter_without_match_names_the_tags_that_exist(tagged, capsys):
    lib = str(tagged.paths.root)
    assert main(["search", "a photo", "--tag", "giraffe", "--library", lib]) == 0
    out, err = capsys.readouterr()
    counts = tagged.tag_counts()
    listing = ", ".join(f"{label} ({n})" for label, n in counts.items())
    assert (out, err) == ("", f"no results: no photo has tag 'giraffe'; tags: {listing}\n")  # a notice: stderr
    assert "empty" not in err
    assert tagged.no_results_reason(["giraffe", "zebra"]) == f"no photo has tag 'giraffe' or 'zebra'; tags: {listing}"


def test_no_results_reasons(tmp_path, tiny_encoder, images_factory):
    with Library(tmp_path / "empty", tiny_encoder) as library:
        assert library.no_results_reason().startswith("the library has no photos yet")
        assert library.no_results_reason("cat").startswith("the library has no photos yet")
    images_factory(tmp_path / "photos", 2)
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        assert library.no_results_reason("cat") == ("no photo has tag 'cat': this library has no tags yet (tag it "
                                                    "with `clipforge tag --labels \"cat, dog, car\"`)")


def test_uploads_keep_a_clean_version_of_their_file_name(tmp_path, tiny_encoder):
    with Library(tmp_path / "lib", tiny_encoder) as library:
        def upload(colour, name):
            buffer = io.BytesIO()
            Image.new("RGB", (30, 20), colour).save(buffer, format="PNG")
            return library.add_bytes(buffer.getvalue(), filename=name)

        record = upload((200, 0, 0), "Holiday 2024.jpg")  # the name lies about the format: the bytes decide
        assert os.path.basename(record.path) == "Holiday 2024.png"
        assert record.path.startswith(str(library.paths.uploads_dir) + os.sep)
        hostile = upload((0, 200, 0), "../../etc/passwd\x00\n<script>.png")
        assert os.path.basename(hostile.path) == "passwd___script.png"
        assert os.path.dirname(os.path.dirname(hostile.path)).startswith(str(library.paths.uploads_dir))
        nameless = upload((0, 0, 200), None)
        assert os.path.basename(nameless.path) == f"{nameless.sha256}.png"
        again = upload((200, 0, 0), "other name.png")  # the same bytes: the first file, no second copy
        assert again.id == record.id
        assert len([p for p in library.paths.uploads_dir.rglob("*") if p.is_file()]) == 3


def test_uploads_follow_the_umask(tmp_path, tiny_encoder):
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (1, 2, 3)).save(buffer, format="PNG")
    saved = os.umask(0o027)
    try:
        with Library(tmp_path / "lib", tiny_encoder) as library:
            record = library.add_bytes(buffer.getvalue(), filename="x.png")
    finally:
        os.umask(saved)
    assert os.stat(record.path).st_mode & 0o777 == 0o640


@pytest.mark.parametrize(("raw", "clean"), [
    ("photo.jpg", "photo"), ("C:\\Users\\me\\Pictures\\cat.JPG", "cat"), (".hidden.png", "hidden"),
    ("..", None), ("", None), (None, None), ("été à Zürich.png", "été à Zürich"), ("a/b\\c.png", "c"),
    ("tab\tname.png", "tab_name"), ("x" * 400 + ".png", "x" * 120), ("猫" * 100 + ".png", "猫" * 40),
])
def test_clean_upload_name(raw, clean):
    assert clean_upload_name(raw) == clean


def test_tag_quiet_draws_no_progress(tmp_path, tiny_encoder, images_factory, capsys):
    """`--quiet` means the same in every command that draws progress: `tag` had none (argparse refused -q)."""
    images_factory(tmp_path / "photos", 3)
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
    capsys.readouterr()
    assert main(["tag", "--labels", "cat, dog", "--templates", "simple", "-q", "--library", str(tmp_path / "lib")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("tagged 3 images with 2 labels") and err == ""
    assert main(["tag", "--labels", "cat, dog", "--templates", "simple", "--library", str(tmp_path / "lib")]) == 0
    assert "tagging:" in capsys.readouterr().err  # without it, the bar (a positive control)
