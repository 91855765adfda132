"""Review 65 (revstate) of the audit-65 fixes: what those fixes broke or left open, each pinned here.

- the CLI's last-resort log handler printed a server 500's message without its traceback;
- `open_header` asked an opener's `accept` outside its try: a 1-3 byte file was an "unreadable image header";
- while a run log was open, a clipforge warning of another thread reached no log and no terminal;
- the fingerprint's sample used `index_select`, which torch lacks for uint16/32/64;
- a temporary's name passed 255 bytes when its target's *suffix* was long;
- a service (`serve`) started with stdout closed was refused like a command whose results go there.
"""

from __future__ import annotations

import io
import logging
import sys
import threading

import pytest
import torch

from clipforge import atomic
from clipforge.cli import _streams as streams
from clipforge.cli import main as cli_main
from clipforge.evaluate.run_log import open_run_log
from clipforge.image.loading import ImageLoadError, load_image
from clipforge.weights.fingerprint import _sample


def test_a_logged_error_keeps_its_traceback_on_the_terminal(capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's capture is a handler: the last resort is not
    log = logging.getLogger("clipforge.server.errors")
    with streams.log_records_as_lines():
        try:
            raise RuntimeError("bug inside handler")
        except RuntimeError as exc:
            log.error("unhandled error in %s", "POST /api/search", exc_info=exc)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: unhandled error in POST /api/search"
    assert err[1].startswith("Traceback") and err[-1] == "RuntimeError: bug inside handler"


@pytest.mark.parametrize("data", [b"ab", b"abc", b"\x00\x01\x02"])
def test_a_file_of_a_few_bytes_is_not_an_image(data):
    with pytest.raises(ImageLoadError) as caught:
        load_image(data)
    assert caught.value.reason == "not an image (unrecognised or unsupported format)"


def test_a_warning_of_another_thread_while_a_run_log_is_open_reaches_the_last_resort(tmp_path, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's capture is a handler: the last resort is not
    shown = io.StringIO()
    last = logging.StreamHandler(shown)
    last.setLevel(logging.WARNING)
    monkeypatch.setattr(logging, "lastResort", last)
    other = logging.getLogger("clipforge.zeroshot.classifier")
    with open_run_log(tmp_path / "run.log") as log:
        log.warning("inside the run")
        worker = threading.Thread(target=lambda: other.warning("from another thread"))
        worker.start()
        worker.join()
    assert shown.getvalue() == "from another thread\n"  # the run's own line is the run log's alone
    assert "inside the run" in (tmp_path / "run.log").read_text() and \
        "from another thread" not in (tmp_path / "run.log").read_text()
    assert not any(type(h).__name__ == "_OutsideRuns" for h in logging.getLogger("clipforge").handlers)


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_unsigned_tensors_have_a_fingerprint_sample(dtype):
    values = torch.arange(20)
    tensor = values.reshape(4, 5).to(dtype)
    assert _sample(tensor) == _sample(tensor.clone())
    values[-1] = 99  # the last element is always among the samples
    assert _sample(values.reshape(4, 5).to(dtype)) != _sample(tensor)
    assert _sample(values.reshape(5, 4).to(dtype).t()) != b""  # a strided view too


@pytest.mark.parametrize("name", ["r." + "猫" * 80, "r.json." + "数" * 80])
def test_a_legal_name_with_a_long_suffix_is_written(tmp_path, name):
    target = tmp_path / name
    assert len(name.encode()) <= 255
    atomic.write_text_atomic(target, "x")
    assert target.read_text() == "x" and [p.name for p in tmp_path.iterdir()] == [name]


def test_a_service_runs_with_stdout_closed_and_other_commands_are_refused(monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)
    assert streams.standard_streams(["models"], cli_main._OWN_SIGNALS) == streams.CLOSED_STDOUT
    assert sys.stdout is None
    assert streams.standard_streams(["serve", "--port", "0"], cli_main._OWN_SIGNALS) is None
    stream = sys.stdout
    try:
        assert stream is not None and stream.name != 1  # /dev/null (descriptor 1 is the test's, not free)
        print("dropped", file=stream)
    finally:
        stream.close()
