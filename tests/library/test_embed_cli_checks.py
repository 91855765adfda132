"""`clipforge embed` refuses settings and output folders that would lose photos, before anything is written.

Found by a reviewer as a new user: `--shard-size -1` exited 0 having dropped images (a negative slice),
`--shard-size 0` was a ZeroDivisionError traceback, `--batch-size 0/-1` quietly became 1, `--workers -1`
became 0 and `--workers 1000` started 1000 decoding processes for a handful of photos; `--out` equal to
the photo folder (or holding it) embedded nothing ("wrote 0 of 0 partitions"), exit 0, and left
job.json and manifest.json among the photos.
"""

from __future__ import annotations

import json

import pytest

from clipforge.cli.main import main
from clipforge.library.export import export_embeddings, read_export

TINY = ["--model", "test-vit-tiny", "--device", "cpu", "-q"]


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--shard-size", "-1", "--shard-size must be at least 1 (images per output partition), got -1"),
    ("--shard-size", "0", "--shard-size must be at least 1 (images per output partition), got 0"),
])
def test_a_bad_setting_is_one_line_and_writes_nothing(tmp_path, images_factory, capsys, flag, value, expected):
    images_factory(tmp_path / "photos", 3)
    out = tmp_path / "emb"
    assert main(["embed", str(tmp_path / "photos"), "--out", str(out), *TINY, flag, value]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"error: {expected}\n"
    assert not out.exists()


@pytest.mark.parametrize(("setting", "words"), [
    ({"shard_size": -1}, "shard_size must be at least 1 (images per output partition), got -1"),
    ({"shard_size": 0}, "shard_size must be at least 1 (images per output partition), got 0"),
    ({"batch_size": 0}, "batch_size must be at least 1 (images per model batch), got 0"),
    ({"workers": -1}, "workers must be 0 (decode in this process) or more, got -1"),
])
def test_the_library_refuses_a_bad_setting_before_loading_the_model(tmp_path, images_factory, setting, words):
    images_factory(tmp_path / "photos", 3)
    out = tmp_path / "emb"
    with pytest.raises(ValueError) as caught:  # a model that does not exist: the setting is said first
        export_embeddings([tmp_path / "photos"], out, "no-such-model-anywhere", progress=False, **setting)
    assert str(caught.value) == words
    assert not out.exists()


def test_workers_are_never_more_than_the_batches(tmp_path, images_factory, tiny_encoder, monkeypatch, capsys):
    import clipforge.data.loader as loader

    asked: list[int] = []
    make_loader = loader.make_loader

    def recording(*args, workers=0, **kwargs):
        asked.append(workers)
        return make_loader(*args, workers=0, **kwargs)  # decode in this process: the test stays fast

    monkeypatch.setattr(loader, "make_loader", recording)
    images_factory(tmp_path / "photos", 5)
    assert main(["embed", str(tmp_path / "photos"), "--out", str(tmp_path / "cli"), *TINY, "--workers", "1000"]) == 0
    assert "wrote 1 of 1 partitions (0 already done), 5 embeddings, 0 failed" in capsys.readouterr().out
    report = export_embeddings([tmp_path / "photos"], tmp_path / "api", tiny_encoder, workers=1000, shard_size=3,
                               progress=False)
    assert report.images == 5 and report.written == [0, 1]
    # 1000 workers asked for, each time for at most 2 batches (a shorter first batch, then the rest)
    assert len(asked) == 3 and all(1 <= w <= 2 for w in asked), asked
    # classify reads through the same loop (`read_batches`): the same bound (9 photos: it decodes fewer than 8 in
    # its own process)
    images_factory(tmp_path / "more", 9)
    assert main(["classify", str(tmp_path / "more"), "--labels", "cat,dog", *TINY, "--workers", "1000"]) == 0
    assert asked[3:] == [2], asked


def test_out_that_is_the_photo_folder_is_refused_and_nothing_lands_among_the_photos(tmp_path, images_factory,
                                                                                   capsys):
    photos = tmp_path / "photos"
    images_factory(photos, 4)
    before = _listing(photos)
    assert main(["embed", str(photos), "--out", str(photos), *TINY]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"error: --out {photos} is the input folder {photos}: embed never reads the folder it "
                            f"writes to, so those photos would not be embedded; choose an --out outside the input "
                            f"folders\n")
    assert _listing(photos) == before  # no job.json, manifest.json, img_emb/ ... among the photos
    with pytest.raises(ValueError, match="is the input folder"):
        export_embeddings([photos], photos, "test-vit-tiny", progress=False)
    assert _listing(photos) == before


def test_out_that_holds_the_photo_folder_is_refused(tmp_path, images_factory, capsys):
    photos = tmp_path / "work" / "photos"
    images_factory(photos, 3)
    out = tmp_path / "work"
    before = _listing(out)
    for extra in ([], ["--no-recursive"]):
        assert main(["embed", str(photos), "--out", str(out), *TINY, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --out {out} holds the input folder {photos}: ") and err.count("\n") == 1
        assert _listing(out) == before  # no job.json, manifest.json or img_emb/


def test_out_inside_the_photos_holding_photos_is_refused(tmp_path, images_factory, capsys):
    photos = tmp_path / "photos"
    images_factory(photos, 3)
    out = photos / "2023"
    images_factory(out, 2, prefix="old")  # they would be left out: embed never reads its --out
    before = _listing(photos)
    assert main(["embed", str(photos), "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --out {out} is inside the input folder {photos} and holds 2 image file(s) "
                   f"(e.g. {out / 'old000.png'}) that embed would leave out, as it never reads the folder it "
                   f"writes to; move them, or choose an --out that holds no photos\n")
    assert _listing(photos) == before


@pytest.mark.parametrize("where", ["emb", ".emb-with-photos", "no-recursive"])
def test_out_inside_the_photos_is_fine_when_no_photo_is_hidden_by_it(tmp_path, images_factory, capsys, where):
    """The usual layout (`embed ~/Pictures --out ~/Pictures/embeddings`) embeds every photo, and so does an --out
    the walk would not enter anyway (a hidden folder, or any sub-folder with --no-recursive)."""
    photos = tmp_path / "photos"
    good = images_factory(photos, 5)
    out = photos / ("sub" if where == "no-recursive" else where)
    if where != "emb":
        images_factory(out, 2, prefix="inner")
    extra = ["--no-recursive"] if where == "no-recursive" else []
    assert main(["embed", str(photos), "--out", str(out), *TINY, *extra]) == 0
    assert "5 embeddings, 0 failed" in capsys.readouterr().out
    _, rows = read_export(out)
    assert sorted(r["image_path"] for r in rows) == sorted(str(p) for p in good)
    assert json.loads((out / "manifest.json").read_text())["files"] == 5
    assert main(["embed", str(photos), "--out", str(out), *TINY, *extra]) == 0  # its rerun resumes it
    assert "wrote 0 of 1 partitions (1 already done)" in capsys.readouterr().out



def _batching_command(command: str, tmp_path) -> list[str]:
    """argv of each command that decodes photos in batches, over a small folder (outputs under tmp_path)."""
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "ds" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 10, 10)).save(tmp_path / "ds" / name / "0.png")
    photos = str(tmp_path / "ds" / "a")
    return {"index add": ["index", "add", photos, "--library", str(tmp_path / "out")],
            "embed": ["embed", photos, "--out", str(tmp_path / "out")],
            "classify": ["classify", photos, "--labels", "cat,dog"],
            "eval": ["eval", "zeroshot", "--dataset", "folder", "--root", str(tmp_path / "ds"),
                     "--out", str(tmp_path / "out")]}[command]


@pytest.mark.parametrize("command", ["index add", "embed", "classify", "eval"])
@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--batch-size", "0", "--batch-size must be at least 1 (images per model batch{}), got 0"),
    ("--batch-size", "-4", "--batch-size must be at least 1 (images per model batch{}), got -4"),
    ("--workers", "-1", "--workers must be 0 (decode in this process) or more, got -1"),
])
def test_every_batching_command_refuses_the_same_settings_first(tmp_path, capsys, command, flag, value, expected):
    """`classify --batch-size 0` ran with batches of 1 and `--workers -1` with none, silently (`embed` too); `eval`
    refused them only after loading the model, in the library's words (`batch_size must be >= 1`). One check
    now, before anything: the model named here does not exist, and nothing is written."""
    argv = [*_batching_command(command, tmp_path), "--model", "no-such-model", flag, value]
    assert main(argv) == 2
    captured = capsys.readouterr()
    per_commit = " and per commit" if command == "index add" else ""
    assert captured.out == "" and captured.err == f"error: {expected.format(per_commit)}\n"
    assert not (tmp_path / "out").exists()
