"""clipforge driven from scripts (audit 66, scripter findings 2, 3, 4, 6 and 7).

2. `search --json` said `"missing": false` of a result whose folder was gone (moved, unmounted): only the plain
   output marked it "(folder not found)"; `--paths --quiet` piped such names without a word.
3. `train --list-recipes --json` printed the prose list, status 0.
4. `index add` exited 0 when every file it tried failed (embed, classify and similarity exit 2); `similarity` with
   every file bad printed no JSON and named only the first file.
6. README said every `--json` is one JSON document; `index list --json` is JSON Lines.
7. A failed write to stdout (`index add --json > /dev/full`) was a bare `error: [Errno 28] No space left on device`,
   the library updated all the same and not said.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from clipforge.cli.main import main

TINY = ["--model", "test-vit-tiny"]
README = Path(__file__).resolve().parents[2] / "README.md"


def _photos(folder: Path, count: int, blue: int = 90) -> list[Path]:
    """`count` small PNGs of distinct colours (another `blue`: other bytes than another folder's)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"p{i}.png"
        Image.new("RGB", (24, 24), (40 * i, 200 - 40 * i, blue)).save(path)
        paths.append(path)
    return paths


def _bad(folder: Path) -> list[Path]:
    """Two files no reader opens: an empty PNG and a text file named .jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "fake.jpg").write_text("not an image\n")
    return [folder / "empty.png", folder / "fake.jpg"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_search_json_marks_a_result_whose_folder_is_gone_and_paths_quiet_says_so(tmp_path, capsys) -> None:
    kept, gone_file = _photos(tmp_path / "here", 2)
    _photos(tmp_path / "away", 2, blue=180)
    lib = ["--library", str(tmp_path / "lib"), *TINY]
    assert main(["index", "add", str(tmp_path / "here"), str(tmp_path / "away"), *lib, "--workers", "0", "-q"]) == 0
    os.rename(tmp_path / "away", tmp_path / "moved")
    gone_file.unlink()
    capsys.readouterr()

    code, out, err = _run(capsys, "search", "a photo", *lib, "-k", "4", "--json", "-q")
    assert code == 0 and err == ""
    results = json.loads(out)["results"]
    marks = {Path(r["path"]).relative_to(tmp_path).as_posix(): (r["missing"], r["folder_missing"]) for r in results}
    assert marks == {"here/p0.png": (False, False), "here/p1.png": (True, False),
                     "away/p0.png": (False, True), "away/p1.png": (False, True)}
    assert len({tuple(r) for r in results}) == 1  # the same keys in every case

    code, out, err = _run(capsys, "search", "a photo", *lib, "-k", "4", "--paths", "-q")
    assert code == 0 and sorted(out.splitlines()) == sorted([str(kept), *(str(tmp_path / "away" / f"p{i}.png")
                                                                          for i in range(2))])
    assert err == (f"warning: 2 of these names are in a folder not found on this machine ({tmp_path / 'away'}): "
                   "they cannot be opened now (--json marks them \"folder_missing\")\n")
    assert _run(capsys, "search", "a photo", *lib, "-k", "4", "-q")[2] == ""  # the plain output marks them itself


def test_train_list_recipes_json_is_one_document_of_the_recipes(capsys) -> None:
    from clipforge.train.config import describe_recipes, list_recipes, load_recipe, recipe_info

    code, out, err = _run(capsys, "train", "--list-recipes", "--json")
    assert code == 0 and err == ""
    recipes = json.loads(out)["recipes"]
    assert [r["name"] for r in recipes] == list_recipes()
    for recipe in recipes:
        said = recipe_info(recipe["name"])["for"]
        assert recipe == {"name": recipe["name"], "model": said.get("model"), "data": said.get("data"),
                          "expect": said.get("expect"), "lr_by_size": load_recipe(recipe["name"]).get("lr_by_size")
                          or []}
    assert any(r["lr_by_size"] for r in recipes) and any(not r["lr_by_size"] for r in recipes)
    assert _run(capsys, "train", "--list-recipes") == (0, describe_recipes() + "\n", "")  # the prose, as before


def test_index_add_exits_2_when_every_file_it_tried_failed(tmp_path, capsys) -> None:
    bad = _bad(tmp_path / "bad")
    lib = ["--library", str(tmp_path / "lib"), *TINY, "--workers", "0", "-q"]
    code, out, err = _run(capsys, "index", "add", str(tmp_path / "bad"), *lib, "--json")
    assert code == 2
    report = json.loads(out)  # printed whole before the error line
    assert (report["added"], report["failed"]) == (0, 2)
    assert sorted(f["path"] for f in report["failures"]) == sorted(map(str, bad))
    assert err == ("error: no file could be indexed: all 2 failed (`clipforge index list --failed` lists them with "
                   "their reasons)\n")

    code, out, err = _run(capsys, "index", "add", str(tmp_path / "bad"), *lib, "--retry-failed")
    assert code == 2 and out.startswith("added 0 files, updated 0, relinked 0, skipped 0 unchanged, failed 2")
    assert err.splitlines() == [*(f"  failed: {path}: {why}" for path, why in
                                  zip(bad, ("file is empty (0 bytes)",
                                            "not an image (unrecognised or unsupported format)"), strict=True)),
                                "error: no file could be indexed: all 2 failed (`clipforge index list --failed` lists "
                                "them with their reasons)"]
    # nothing tried (they failed before and are unchanged): as a rerun of `embed`, 0
    assert _run(capsys, "index", "add", str(tmp_path / "bad"), *lib)[0] == 0
    # some indexed: 0
    _photos(tmp_path / "good", 1)
    assert _run(capsys, "index", "add", str(tmp_path / "bad"), str(tmp_path / "good"), *lib, "--retry-failed")[0] == 0
    # new failures beside photos already indexed (unchanged): 0
    _bad(tmp_path / "good" / "more")
    code, out, _ = _run(capsys, "index", "add", str(tmp_path / "good"), *lib)
    assert code == 0 and "skipped 1 unchanged, failed 2" in out


def test_similarity_with_every_file_bad_names_each_prints_its_json_and_exits_2(tmp_path, capsys) -> None:
    from clipforge.library.dbfile import path_text

    bad = _bad(tmp_path / "bad")
    code, out, err = _run(capsys, "similarity", str(tmp_path / "bad"), "--text", "cat", "dog", *TINY, "--json",
                          "-q")
    assert code == 2
    document = json.loads(out)
    assert (document["images"], document["probabilities"], document["cosine"]) == ([], [], [])
    assert document["errors"] == [{"image": path_text(str(bad[0])), "error": "file is empty (0 bytes)"},
                                  {"image": path_text(str(bad[1])),
                                   "error": "not an image (unrecognised or unsupported format)"}]
    assert err.splitlines() == [f"skipped {bad[0]}: file is empty (0 bytes)",
                                f"skipped {bad[1]}: not an image (unrecognised or unsupported format)",
                                "error: none of the 2 image(s) could be read (each named above): nothing to compare"]
    code, out, err = _run(capsys, "similarity", *map(str, bad), "--text", "cat", "dog", *TINY, "-q")  # plain: no table
    assert code == 2 and out == "" and err.splitlines()[-1].startswith("error: none of the 2 image(s) could be read")


def test_index_list_json_is_json_lines_as_the_readme_says(tmp_path, capsys) -> None:
    photos = _photos(tmp_path / "photos", 2)
    lib = ["--library", str(tmp_path / "lib")]
    assert main(["index", "add", str(tmp_path / "photos"), *lib, *TINY, "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    code, out, _ = _run(capsys, "index", "list", *lib, "--json")
    assert code == 0 and [json.loads(line)["path"] for line in out.splitlines()] == list(map(str, photos))
    assert main(["index", "remove", str(tmp_path / "photos"), *lib]) == 0
    capsys.readouterr()
    assert _run(capsys, "index", "list", *lib, "--json") == (0, "", "")  # an empty library: nothing at all
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert ("`--json` — one JSON document on stdout (notices and progress go to stderr), except `index list --json`: "
            "JSON Lines, one record a line") in text
    assert "and nothing at all for an empty one" in text


class _FullStdout(io.StringIO):
    """A stdout on a full disk (`> /dev/full`): every write fails as the kernel says ENOSPC."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_stdout_write_is_said_with_what_index_add_saved(tmp_path, capsys, monkeypatch) -> None:
    _photos(tmp_path / "photos", 2)
    lib = ["--library", str(tmp_path / "lib"), *TINY, "--workers", "0", "-q"]
    monkeypatch.setattr(sys, "stdout", _FullStdout())
    code = main(["index", "add", str(tmp_path / "photos"), *lib, "--json"])
    assert code == 2
    assert capsys.readouterr().err == ("error: could not write to standard output: No space left on device; the library "
                                       "was updated all the same (2 files added, 0 updated, 0 relinked, 0 failed)\n")
    code = main(["index", "add", str(tmp_path / "photos"), *lib])  # plain: its summary line fails the same way
    assert code == 2
    assert capsys.readouterr().err == ("error: could not write to standard output: No space left on device; the library "
                                       "was already up to date (nothing added, updated or relinked)\n")
    monkeypatch.undo()
    assert len(_run(capsys, "index", "list", "--library", str(tmp_path / "lib"))[1].splitlines()) == 2  # both kept


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_a_real_full_device_names_standard_output_and_a_closed_pipe_stays_quiet(tmp_path) -> None:
    command = [sys.executable, "-m", "clipforge", "models", "--json"]
    with open("/dev/full", "w") as full:
        done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (2, "error: could not write to standard output: No space left on device\n")
    # a closed pipe is not a failed write: the quiet 141 as before (92 KB of models --all: more than a pipe holds)
    with subprocess.Popen([*command, "--all"], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        process.stdout.read(1)  # type: ignore[union-attr]  # `| head -c 1`
        process.stdout.close()  # type: ignore[union-attr]
        assert process.wait(timeout=120) == 141 and process.stderr.read() == b""  # type: ignore[union-attr]


def test_an_empty_similarity_table_formats_its_header_and_refuses_a_heatmap(tmp_path) -> None:
    """compute_similarity returns a table without rows when no image could be read (review 66): its format() was
    "'int' object is not iterable" and plot_similarity drew an empty heatmap."""
    import torch

    from clipforge.data.base import BadImage
    from clipforge.similarity import SimilarityTable, plot_similarity

    empty = torch.zeros(0, 2)
    table = SimilarityTable([], ["cat", "dog"], empty, empty.clone(), skipped=[BadImage("a.jpg", "file is empty")])
    assert table.format().splitlines() == [" " * 5 + "  " + " " * 9 + "cat" + "  " + " " * 9 + "dog"]
    with pytest.raises(ValueError, match=r"^no image could be read \(1 skipped\): no heatmap to draw$"):
        plot_similarity(table, [], tmp_path / "plot.png")
    assert not (tmp_path / "plot.png").exists()
