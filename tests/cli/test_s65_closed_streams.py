"""A command started with a standard stream closed (audit 65, findings 3 and 4).

stderr closed (``2>&-``; a daemonizer that closes it): Python sets ``sys.stderr = None``. tqdm's first write raised
AttributeError (classify, embed, index add died before any work, status 1); ``print(..., file=sys.stderr)`` with None
printed the notices on *stdout*, in front of the --json document; and the exit-time flush of None made even a
successful ``search`` exit 1. Now progress and notices go nowhere, the results come out, and a success exits 0.

stdout closed (``>&-``): every command ran with its output dropped, then ended in a traceback (status 1) at
``sys.stdout.flush()``, after `index add` had already written its library. The rule now: clipforge writes its
results (or its summary) on stdout, so with stdout closed no command starts: one line on stderr, status 2, nothing
done. ``>/dev/null`` is the way to discard the output.

The streams are closed in the child itself (``preexec_fn``): ``stderr=subprocess.DEVNULL`` is an open stream.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

CLOSED_STDOUT = ("error: standard output is closed (>&-): clipforge writes its results there, so nothing was "
                 "done; to discard them, send them to /dev/null (>/dev/null)\n")


def _photos(folder: Path) -> list[str]:
    folder.mkdir()
    paths = []
    for name, rgb in (("red.png", (200, 10, 10)), ("blue.png", (10, 10, 200))):
        Image.new("RGB", (32, 32), rgb).save(folder / name)
        paths.append(str(folder / name))
    return paths


def _clipforge(*argv: str, close: int, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m clipforge ARGV` with file descriptor `close` (1 or 2) closed before it starts."""
    pipes = {"stdout": subprocess.PIPE} if close == 2 else {"stderr": subprocess.PIPE}
    return subprocess.run([sys.executable, "-m", "clipforge", *argv], **pipes, cwd=cwd, timeout=120,
                          preexec_fn=lambda: os.close(close))


def test_classify_json_with_stderr_closed_is_the_document_alone_and_exits_0(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    # Chinese labels on the English-only tiny model: a notice, which went to stdout in front of the JSON
    done = _clipforge("classify", *photos, "--labels", "猫,狗", "--model", "clipforge-tiny", "--json",
                      close=2, cwd=tmp_path)
    assert done.returncode == 0
    document = json.loads(done.stdout)  # the whole of stdout is the one document
    assert [r["image"] for r in document["results"]] == photos
    assert [sorted(r["labels"]) for r in document["results"]] == [["狗", "猫"], ["狗", "猫"]]


def test_classify_with_a_progress_bar_and_stderr_closed_prints_its_results(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")  # two images and no --json: classify's progress bar is on
    done = _clipforge("classify", *photos, "--labels", "cat,dog", "--model", "clipforge-tiny", close=2, cwd=tmp_path)
    assert done.returncode == 0
    lines = done.stdout.decode().splitlines()
    assert [line for line in lines if not line.startswith("  ")] == photos
    assert len(lines) == 6 and all(line.endswith(("cat", "dog")) for line in lines if line.startswith("  "))


def test_index_add_and_search_with_stderr_closed_work_and_exit_0(tmp_path: Path) -> None:
    _photos(tmp_path / "photos")
    added = _clipforge("index", "add", "photos", "--library", "lib", "--model", "clipforge-tiny", close=2,
                       cwd=tmp_path)
    assert added.returncode == 0 and (tmp_path / "lib").is_dir()
    found = _clipforge("search", "red", "--library", "lib", "-k", "2", "--paths", close=2, cwd=tmp_path)
    assert found.returncode == 0
    assert sorted(found.stdout.decode().splitlines()) == sorted(str(tmp_path / "photos" / n)
                                                                 for n in ("blue.png", "red.png"))


def test_every_command_refuses_a_closed_stdout_in_one_line_before_doing_anything(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    for argv in (["models"], ["--version"],
                 ["classify", *photos, "--labels", "cat,dog", "--model", "clipforge-tiny"],
                 ["index", "add", "photos", "--library", "lib", "--model", "clipforge-tiny"]):
        done = _clipforge(*argv, close=1, cwd=tmp_path)
        assert (done.returncode, done.stderr.decode()) == (2, CLOSED_STDOUT), argv
    assert not (tmp_path / "lib").exists()  # index add did nothing: no library half made
