"""The console command ends without tearing down the interpreter, and loses nothing by it.

`clipforge.cli.main.exit_without_teardown` skips Python's heap teardown (~0.45 s after a
ViT-B/32 command) but must still do what a user can observe: buffered stdout, non-daemon threads,
atexit handlers (temporary folders, multiprocessing children) and the exit status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent('''
    import atexit, os, sys, tempfile, threading, time
    from pathlib import Path

    out = Path(sys.argv[1])
    how = sys.argv[2]
    atexit.register(lambda: (out / "atexit").write_text("ran"))
    kept = tempfile.TemporaryDirectory(dir=out)  # removed by its atexit finalizer
    (out / "tmpdir").write_text(kept.name)

    def late():
        time.sleep(0.3)
        (out / "thread").write_text("done")

    threading.Thread(target=late).start()

    class Teardown:
        def __del__(self):
            (out / "teardown").write_text("ran")

    GLOBAL = Teardown()  # finalised only when the interpreter clears this module
    sys.stdout.write("no newline, still buffered")
    if how == "fast":
        from clipforge.cli.main import exit_without_teardown
        exit_without_teardown(3)
    elif how == "bare":
        os._exit(3)
    sys.exit(3)
''')


def _run(tmp_path: Path, how: str, **env: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    script = tmp_path / "script.py"
    script.write_text(_SCRIPT, encoding="utf-8")
    out = tmp_path / how
    out.mkdir()
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as users have it
    done = subprocess.run([sys.executable, str(script), str(out), how], capture_output=True, text=True,
                          env={**plain, **env}, timeout=60)
    left = {p.name for p in out.iterdir()}
    tmpdir = Path((out / "tmpdir").read_text())
    if tmpdir.exists():
        left.add("tmpdir-left-behind")
    return done, left


def test_the_fast_exit_keeps_status_output_threads_and_atexit(tmp_path):
    done, left = _run(tmp_path, "fast")
    assert done.returncode == 3
    assert done.stdout == "no newline, still buffered"
    assert {"atexit", "thread"} <= left
    assert "tmpdir-left-behind" not in left
    assert "teardown" not in left  # the one thing skipped: taking the heap apart


def test_positive_control_a_bare_os_exit_loses_all_of_it(tmp_path):
    done, left = _run(tmp_path, "bare")
    assert done.returncode == 3
    assert done.stdout == ""
    assert not {"atexit", "thread"} & left
    assert "tmpdir-left-behind" in left


def test_full_exit_on_request_tears_down_as_python_does(tmp_path):
    done, left = _run(tmp_path, "fast", CLIPFORGE_FULL_EXIT="1")
    assert done.returncode == 3
    assert done.stdout == "no newline, still buffered"
    assert {"atexit", "thread", "teardown"} <= left


def test_the_console_script_and_python_m_use_the_fast_exit():
    scripts = [e for e in entry_points(group="console_scripts") if e.name == "clipforge"]
    assert [e.value for e in scripts] == ["clipforge.cli.main:entry"]
    assert "entry()" in (ROOT / "src" / "clipforge" / "__main__.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("argv, status", [(["models", "--json"], 0), (["no-such-command"], 2)])
def test_a_real_command_ends_with_its_status_and_all_its_output(argv, status):
    done = subprocess.run([sys.executable, "-m", "clipforge", *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == status
    if status == 0:
        names = [m["name"] for m in json.loads(done.stdout)]  # the whole document arrived
        assert "ViT-B/32" in names and len(names) > 9
    else:
        assert "invalid choice" in done.stderr
