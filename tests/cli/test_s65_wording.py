"""Three lines that said the wrong thing (audit 65, finding 6).

- A photo name over 255 bytes was "no such file or folder" (`os.path.exists` hides ENAMETOOLONG): now the real reason.
- The class-embedding cache that cannot be written was a bare log line (no ``warning:`` like every other warning)
  naming the writer's temporary file (``'.5f51….tmp@vm.safetensors'``), not the cache folder.
- ``--model 'C:\\models\\tiny.safetensors'`` was quoted with Python's repr, its backslashes doubled.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from clipforge.cli.common import check_local_inputs
from clipforge.cli.main import main

LONG = "a" * 296 + ".jpg"  # 300 bytes


def test_an_input_photo_with_a_name_too_long_says_so(tmp_path: Path, capsys) -> None:
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    photo = str(tmp_path / LONG)
    code = main(["classify", str(tmp_path / "red.png"), photo, "--labels", "cat,dog", "--model", "clipforge-tiny"])
    captured = capsys.readouterr()
    assert (code, captured.out) == (2, "")
    assert captured.err == f"error: file name too long (300 bytes; a file name may have at most 255): {photo}\n"


def test_a_missing_photo_is_still_no_such_file(tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "gone.jpg")
    code = main(["classify", missing, "--labels", "cat,dog", "--model", "clipforge-tiny"])
    assert (code, capsys.readouterr().err) == (2, f"error: no such file or folder: {missing}\n")


def test_an_input_flag_with_a_name_too_long_says_so(tmp_path: Path) -> None:
    root = str(tmp_path / LONG)
    with pytest.raises(FileNotFoundError) as refused:
        check_local_inputs(argparse.Namespace(root=root, model=None))
    assert str(refused.value) == f"--root {root}: file name too long (300 bytes; a file name may have at most 255)"


def test_a_windows_model_path_is_quoted_as_typed(tmp_path: Path, capsys) -> None:
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    code = main(["classify", str(tmp_path / "red.png"), "--labels", "cat,dog", "--model",
                 r"C:\models\tiny.safetensors"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(r"error: model 'C:\models\tiny.safetensors' is neither a known name ("), err


_UNWRITABLE_CACHE = """
import errno, sys
import clipforge.zeroshot.classifier as classifier

def refused(cache_dir, *args, **kwargs):  # what the atomic writer raises in a read-only cache folder
    raise PermissionError(errno.EACCES, "Permission denied", str(cache_dir) + "/.5f51ab.123-0badc0de.tmp@vm.st")

classifier.save_cached_embeddings = refused
sys.argv = ["clipforge", *sys.argv[1:]]
from clipforge.cli.main import entry
entry()
"""


def test_an_unwritable_class_embedding_cache_is_one_warning_naming_its_folder(tmp_path: Path) -> None:
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    env = {**os.environ, "CLIPFORGE_CACHE": str(tmp_path / "cache")}
    # a process of its own: pytest's logging handlers would take the record before the command's
    done = subprocess.run([sys.executable, "-c", _UNWRITABLE_CACHE, "classify", str(tmp_path / "red.png"),
                           "--labels", "cat,dog", "--model", "clipforge-tiny", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "cache" / "class_embeddings"
    assert done.stderr == (f"warning: could not write class-embedding cache in {folder}: Permission denied (said "
                           "once; class embeddings are computed for each request meanwhile)\n")
    assert done.stdout.splitlines()[0] == str(tmp_path / "red.png")
