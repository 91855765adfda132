"""`clipforge serve` start-ups that fail: one line naming the flag, status 2, and nothing left on disk.

What a reviewer found:

- `--create` with a `--model` that does not load left an empty `library.sqlite3` (the library was opened to
  read its recorded model before the model loaded), and so did a start that failed after the model loaded
  (a blank `--token`);
- a model-load error and its hint ran together ("...use --device cpu check the --model value");
- limit errors named internal fields ("server limit max_pixels ...", "cannot read size 'abc'"), and
  `--max-upload -5MB` never reached our check (argparse took `-5MB` for an option: "expected one argument");
- a bind failure on a real address that is not this machine's was told as "is another server using the port?".

No server runs here: every failure happens before uvicorn's loop.
"""

from __future__ import annotations

import errno
import socket

import pytest

from clipforge.cli.main import main

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MODEL_HINT = "check the --model value (a model name, a checkpoint path, or a test config such as test-vit-tiny)"


def _only_line(capsys) -> str:
    """stderr, which must be exactly one line (no traceback, no warning before the error)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.rstrip("\n")


def _serve(library, *flags: str) -> int:
    return main(["serve", "--library", str(library), "--no-ui", "--port", "0", *flags])


# -- 1. nothing is created by a start that fails --------------------------------------------------------------

def test_a_model_that_does_not_load_creates_no_library(tmp_path, capsys):
    library = tmp_path / "new" / "nested" / "library"
    assert _serve(library, "--create", "--model", "no-such-model") == 2
    assert _only_line(capsys).startswith("error: cannot load model 'no-such-model': ")
    assert not (tmp_path / "new").exists()  # neither the library nor the parent folders this start made


def test_a_model_that_does_not_load_leaves_an_existing_empty_folder_empty(tmp_path, capsys):
    folder = tmp_path / "my-library"
    folder.mkdir()
    assert _serve(folder, "--create", "--model", "no-such-model") == 2
    assert _only_line(capsys).startswith("error: cannot load model 'no-such-model': ")
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_a_start_that_fails_after_the_model_loaded_creates_no_library(tmp_path, capsys):
    library = tmp_path / "new-library"
    assert _serve(library, "--create", "--model", "test-vit-tiny", "--token", "   ") == 2
    assert "the server token must not be empty" in capsys.readouterr().err
    assert not library.exists()


def test_a_start_that_fails_keeps_an_existing_library(tmp_path, capsys):
    from clipforge.library import Library

    with Library(tmp_path / "lib", model="test-vit-tiny"):
        pass
    db = tmp_path / "lib" / "library.sqlite3"
    before = db.read_bytes()
    assert _serve(tmp_path / "lib", "--create", "--token", "   ") == 2
    assert "the server token must not be empty" in capsys.readouterr().err
    assert db.read_bytes() == before


# -- 2. a model-load error and its hint read as one sentence ---------------------------------------------------

def test_a_model_load_error_and_its_hint_are_one_sentence(tmp_path, capsys, monkeypatch):
    import clipforge.api

    def no_cuda(*args, **kwargs):
        raise RuntimeError("device 'cuda' requested but CUDA is not available here; use --device cpu")

    monkeypatch.setattr(clipforge.api, "load_model", no_cuda)
    library = tmp_path / "new-library"
    assert _serve(library, "--create", "--model", "test-vit-tiny") == 2
    assert _only_line(capsys) == ("error: cannot load model 'test-vit-tiny': device 'cuda' requested but CUDA is "
                                  f"not available here; use --device cpu; {MODEL_HINT}")
    assert not library.exists()


def test_a_model_load_error_ending_in_a_full_stop_is_joined_without_it(tmp_path, capsys):
    assert _serve(tmp_path / "lib", "--create", "--model", "no-such-model") == 2
    line = _only_line(capsys)
    assert line.endswith(f"e.g. random:ViT-B/32; {MODEL_HINT}"), line


# -- 3. limit errors name the flag, negative values included ---------------------------------------------------

SIZE = "expected a positive size such as 20MB or 512KiB"
PIXELS = "expected a positive whole number of pixels such as 50000000"
SECONDS = "expected a positive number of seconds such as 60"


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--max-upload", "-5MB", SIZE), ("--max-upload", "-1", SIZE), ("--max-upload", "lots", SIZE),
    ("--max-upload", "0", SIZE), ("--max-upload", "", SIZE), ("--max-upload", "-.5GB", SIZE),
    ("--max-pixels", "-5", PIXELS), ("--max-pixels", "0", PIXELS), ("--max-pixels", "many", PIXELS),
    ("--max-pixels", "1.5", PIXELS), ("--max-upload", "9" * 400, SIZE), ("--max-pixels", "9" * 400, PIXELS),
    ("--timeout", "-3", SECONDS), ("--timeout", "0", SECONDS), ("--timeout", "nan", SECONDS),
    ("--timeout", "inf", SECONDS), ("--timeout", "soon", SECONDS)])
def test_a_bad_limit_is_one_line_naming_the_flag(tmp_path, capsys, flag, value, expected):
    library = tmp_path / "new-library"
    assert _serve(library, "--create", "--model", "test-vit-tiny", flag, value) == 2
    assert _only_line(capsys) == f"error: {flag} {value!r}: {expected}"
    assert not library.exists()


def test_good_limits_reach_the_server(tmp_path, monkeypatch):
    import clipforge.server.runner as runner

    seen = {}

    def fake_serve(library, **kwargs):
        seen.update(kwargs)
        return 0

    monkeypatch.setattr("clipforge.server.serve", fake_serve)
    assert _serve(tmp_path / "lib", "--max-upload", "1.5MiB", "--max-pixels", "1_000_000", "--timeout", "2.5") == 0
    limits = seen["limits"]
    assert (limits.max_upload_bytes, limits.max_pixels, limits.request_timeout_s) == (1_572_864, 1_000_000, 2.5)
    assert _serve(tmp_path / "lib") == 0  # the defaults
    assert seen["limits"] == runner.ServerLimits()


# -- 4. a bind failure names the cause: an address not this machine's is not a busy port -----------------------

NOT_OURS = "192.0.2.1"  # TEST-NET-1 (RFC 5737): resolves, routes nowhere, never a local address


def test_an_address_that_is_not_this_machines_is_named_as_such(tmp_path, capsys):
    with socket.socket() as probe:
        try:
            probe.bind((NOT_OURS, 0))
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:
                pytest.skip(f"binding {NOT_OURS} fails here with {exc}, not EADDRNOTAVAIL")
        else:
            pytest.skip(f"{NOT_OURS} is one of this machine's addresses")
    library = tmp_path / "new-library"
    assert _serve(library, "--create", "--model", "test-vit-tiny", "--host", NOT_OURS) == 2
    line = _only_line(capsys)  # one line: no "listening on ... reachable from other machines" warning first
    assert line.startswith(f"error: cannot listen on {NOT_OURS}:0: ")
    assert f"--host {NOT_OURS} is not an address of this machine" in line
    assert "another server" not in line and "--port 0" not in line
    assert not library.exists()


@pytest.mark.parametrize(("code", "words"), [
    (errno.EADDRNOTAVAIL, "--host 10.1.2.3 is not an address of this machine"),
    (errno.EADDRINUSE, "is another server using the port? try --port 0 for any free port"),
    (errno.EACCES, "ports below 1024 need administrator rights: use --port 0 or a port above 1023"),
    (errno.EHOSTUNREACH, None)])
def test_each_bind_failure_gets_its_own_hint(monkeypatch, code, words):
    import clipforge.server.runner as runner

    class Refusing(socket.socket):
        def bind(self, address):
            raise OSError(code, f"strerror {code}")

    monkeypatch.setattr(runner.socket, "socket", Refusing)
    with pytest.raises(runner.ServeError) as failed:
        runner.bind_socket("10.1.2.3", 80)
    message = str(failed.value)
    assert message.startswith(f"cannot listen on 10.1.2.3:80: strerror {code}")
    hints = ["not an address of this machine", "another server", "administrator"]
    if words is None:
        assert not any(hint in message for hint in hints), message
    else:
        assert words in message and sum(hint in message for hint in hints) == 1, message
