"""`--plot NAME` (audit 65, finding 5): a bare name in an unwritable working folder, and a long legal name.

`figure_target` checked the folder only when the name had a folder part, so ``--plot c.png`` in a read-only cwd ran
the model and then failed naming an internal temporary (``[Errno 30] Read-only file system: '.c.png.17605-...
.tmp@vm.png'``). And the atomic writer's temporary added 25-60 bytes to the target's name, so a legal name of
220-255 bytes (79 Chinese characters + ``.png``: 3 bytes each) could not be written at all (ENAMETOOLONG). A plot
that fails after the work no longer loses `similarity`'s table either: the table is printed, then the one line.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from clipforge import atomic
from clipforge.atomic import remove_stale_temps, write_atomic, write_bytes_atomic
from clipforge.cli.common import figure_target
from clipforge.cli.main import main

LONG_CJK = "猫狗分类结果" * 13 + ".png"  # 238 bytes: legal (touch makes it)
LONGEST = "a" * 251 + ".png"  # 255 bytes: the longest legal name


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """`folder` unwritable as `os.access` sees it (these tests may run as root, for whom chmod changes nothing)."""
    real_access = os.access

    def access(path, mode, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.path.realpath(path) == os.path.realpath(folder) and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_a_bare_plot_name_in_an_unwritable_cwd_is_refused_like_a_folder_part(tmp_path, monkeypatch) -> None:
    (tmp_path / "ro").mkdir()
    monkeypatch.chdir(tmp_path / "ro")
    _read_only(monkeypatch, tmp_path / "ro")
    with pytest.raises(ValueError) as bare:
        figure_target("c.png", "classify.png")
    assert str(bare.value) == "--plot c.png: folder . is not writable"
    monkeypatch.chdir(tmp_path)  # the form that was already checked, for comparison
    with pytest.raises(ValueError) as dir_part:
        figure_target("ro/c.png", "classify.png")
    assert str(dir_part.value) == "--plot ro/c.png: folder ro is not writable"


def test_classify_refuses_the_bare_name_before_the_model_loads(tmp_path, monkeypatch, capsys) -> None:
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    (tmp_path / "ro").mkdir()
    monkeypatch.chdir(tmp_path / "ro")
    _read_only(monkeypatch, tmp_path / "ro")
    import clipforge.zeroshot.files as files

    monkeypatch.setattr(files, "classify_files", lambda *a, **k: pytest.fail("the model ran"))
    code = main(["classify", str(tmp_path / "red.png"), "--labels", "cat,dog", "--model", "clipforge-tiny",
                 "--plot", "c.png"])
    captured = capsys.readouterr()
    assert (code, captured.out, captured.err) == (2, "", "error: --plot c.png: folder . is not writable\n")


def test_a_plot_name_longer_than_a_file_name_may_be_is_refused_before_any_work(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    name = "猫" * 90 + ".png"  # 274 bytes
    with pytest.raises(ValueError) as refused:
        figure_target(name, "classify.png")
    assert str(refused.value) == f"--plot {name}: file name too long (274 bytes; a file name may have at most 255)"


@pytest.mark.parametrize("name", [LONG_CJK, LONGEST], ids=["cjk-238-bytes", "ascii-255-bytes"])
def test_a_long_legal_name_is_written_through_a_temporary_that_fits(tmp_path, name) -> None:
    seen: list[str] = []

    def writer(tmp: Path) -> None:
        seen.append(tmp.name)
        tmp.write_bytes(b"figure")

    write_atomic(tmp_path / name, writer)
    assert (tmp_path / name).read_bytes() == b"figure"
    assert [p.name for p in tmp_path.iterdir()] == [name]  # the temporary is gone
    (temp,) = seen
    assert len(os.fsencode(temp)) <= 255 and temp.startswith(".") and temp.endswith(f".tmp@{atomic.host_tag()}.png")
    match = atomic._TEMP_RE.match(temp)  # still a name the cleanup knows as this process's
    assert match is not None and (match["pid"], match["host"]) == (str(os.getpid()), atomic.host_tag())


def test_short_names_keep_their_whole_name_in_the_temporary(tmp_path) -> None:
    seen: list[str] = []
    write_atomic(tmp_path / "chart.png", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"x")))
    assert seen[0].startswith(f".chart.png.{os.getpid()}-")


def test_a_shortened_temporary_left_behind_is_cleaned_up(tmp_path) -> None:
    with pytest.raises(RuntimeError):  # a writer that dies halfway: the temporary is removed at once
        write_atomic(tmp_path / LONG_CJK, lambda tmp: (tmp.write_bytes(b"half"), _raise()))
    assert list(tmp_path.iterdir()) == []
    left = atomic._create_temp(tmp_path / LONG_CJK, ".png")  # as a killed writer leaves it
    assert remove_stale_temps(tmp_path) == []  # this live process's: kept
    assert remove_stale_temps(tmp_path, now=time.time() + 2 * atomic.STALE_AFTER_S) == [left]


def _raise() -> None:
    raise RuntimeError("writer failed")


def test_two_long_names_that_share_their_start_get_different_temporaries(tmp_path) -> None:
    a, b = "x" * 250 + "1.png", "x" * 250 + "2.png"
    names = {atomic._create_temp(tmp_path / n, ".png").name.split(".tmp@")[0].rsplit(".", 1)[0] for n in (a, b)}
    assert len(names) == 2  # the hash of the whole name tells them apart


def test_write_bytes_atomic_writes_the_238_byte_cjk_name(tmp_path) -> None:
    write_bytes_atomic(tmp_path / LONG_CJK, b"ok")
    assert (tmp_path / LONG_CJK).read_bytes() == b"ok"


def test_similarity_prints_its_table_before_a_plot_that_fails(tmp_path, monkeypatch, capsys) -> None:
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    import clipforge.similarity as similarity

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "s.png"))

    monkeypatch.setattr(similarity, "plot_similarity", full)
    code = main(["similarity", str(tmp_path / "red.png"), "--text", "red", "blue", "--model", "clipforge-tiny",
                 "--quiet", "--plot", str(tmp_path / "s.png")])
    captured = capsys.readouterr()
    assert code == 2
    assert "red.png" in captured.out and "red" in captured.out.splitlines()[0]  # the table came out
    assert "plot written" not in captured.out
    assert captured.err.splitlines()[-1].startswith("error: ") and "No space left on device" in captured.err


def test_similarity_json_says_no_plot_when_the_plot_fails(tmp_path, monkeypatch, capsys) -> None:
    import json

    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    import clipforge.similarity as similarity

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "s.png"))

    monkeypatch.setattr(similarity, "plot_similarity", full)
    code = main(["similarity", str(tmp_path / "red.png"), "--text", "red", "blue", "--model", "clipforge-tiny",
                 "--quiet", "--json", "--plot", str(tmp_path / "s.png")])
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert (code, document["plot"], document["texts"]) == (2, None, ["red", "blue"])
    assert captured.err == f"error: [Errno 28] No space left on device: '{tmp_path / 's.png'}'\n"


@pytest.mark.parametrize("as_json", [False, True])
def test_classify_prints_its_results_before_a_plot_that_fails(tmp_path, monkeypatch, capsys, as_json) -> None:
    """`classify` drew its plot inside `classify_files`, before printing: a plot that failed after the checks (a full
    disk) lost every result. The results come out first now, as `similarity`'s table does, then the one line."""
    import json

    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    import clipforge.zeroshot.plot as plot

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "c.png"))

    monkeypatch.setattr(plot, "plot_predictions", full)
    code = main(["classify", str(tmp_path / "red.png"), "--labels", "red,blue", "--model", "clipforge-tiny",
                 "--quiet", "--plot", str(tmp_path / "c.png"), *(["--json"] if as_json else [])])
    captured = capsys.readouterr()
    assert code == 2
    if as_json:
        document = json.loads(captured.out)
        assert document["plot"] is None and [r["image"] for r in document["results"]] == [str(tmp_path / "red.png")]
    else:
        assert captured.out.splitlines()[0] == str(tmp_path / "red.png") and "plot written" not in captured.out
    assert captured.err == f"error: [Errno 28] No space left on device: '{tmp_path / 'c.png'}'\n"
