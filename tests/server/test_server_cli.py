"""`clipforge serve`: model choice, binding, warnings and errors (uvicorn's loop is not entered)."""

from __future__ import annotations

import os
import socket

import httpx
import pytest
from fastapi.testclient import TestClient

from clipforge.cli.main import main
from clipforge.server import ServerLimits, parse_size


@pytest.fixture(autouse=True)
def _default_port_is_any_free_port(monkeypatch):
    """`serve` without --port listens on 7860; in this file its default is any free port, so two tests run at once
    (the suite's two pytest-xdist workers) never both bind 7860: the second failed "Address already in use"."""
    from clipforge.server import runner

    bind = runner.bind_socket
    monkeypatch.setattr(runner, "bind_socket", lambda host, port: bind(host, 0 if port == 7860 else port))


@pytest.fixture()
def captured_run(monkeypatch):
    """Replace uvicorn's serving loop: record the app and sockets instead of serving forever."""
    import uvicorn

    seen: dict = {}

    def fake_run(self, sockets=None):
        seen["app"], seen["sockets"] = self.config.app, sockets
        seen["ports"] = [s.getsockname() for s in sockets or []]
        seen["gradio_dir"] = os.environ.get("GRADIO_TEMP_DIR")
        seen["gradio_dir_mode"] = os.stat(seen["gradio_dir"]).st_mode & 0o777 if seen["gradio_dir"] else None
        for sock in sockets or []:
            sock.close()

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    return seen


@pytest.fixture()
def tiny_library(tmp_path, kit):
    from clipforge.library import Library

    photos = kit.write_photos(tmp_path / "photos")
    with Library(tmp_path / "lib", model="test-vit-tiny") as library:
        library.add(photos[:3], workers=0, progress=False)
    return tmp_path / "lib"


def test_serve_binds_loopback_and_mounts_ui_over_the_api(tiny_library, captured_run, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("t0k\n")
    code = main(["serve", "--library", str(tiny_library), "--port", "0", "--token-file", str(token_file)])
    assert code == 0
    out, err = capsys.readouterr()
    host, port = captured_run["ports"][0]
    assert host == "127.0.0.1" and port > 0
    assert f"at http://127.0.0.1:{port}/" in out and "model test-vit-tiny" in out
    assert "random weights" in err and "warning" not in err  # the library's own model; no exposure warning
    # gradio got a private upload folder for the server's lifetime, removed when it stopped.
    assert captured_run["gradio_dir"] and captured_run["gradio_dir_mode"] == 0o700
    assert not os.path.exists(captured_run["gradio_dir"]) and "GRADIO_TEMP_DIR" not in os.environ
    client = TestClient(captured_run["app"])
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    # The API keeps its routes and error format with the UI mounted at /.
    assert client.get("/api/images/abc").json()["error"] == "invalid_id"
    assert client.get("/healthz").json()["write_token_required"] is True
    upload = client.post("/api/images", files={"file": ("x.png", (tiny_library.parent / "photos" / "red.png")
                                                        .read_bytes())})
    assert upload.status_code == 401
    request = client.build_request("GET", "http://testserver/")
    request.url = httpx.URL("http://testserver/").copy_with(raw_path=b"/../../etc/passwd")
    outside = client.send(request)
    assert outside.status_code == 404 and "root:" not in outside.text


def test_serve_on_all_interfaces_warns(tiny_library, captured_run, capsys, monkeypatch):
    import clipforge.server.runner as runner

    bound = []

    def fake_bind(host, port):
        bound.append(host)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        return sock

    monkeypatch.setattr(runner, "bind_socket", fake_bind)
    assert main(["serve", "--library", str(tiny_library), "--host", "0.0.0.0", "--no-ui"]) == 0
    err = capsys.readouterr().err
    assert bound == ["0.0.0.0"]
    assert "warning: listening on 0.0.0.0" in err and "--token" in err


def test_serve_refuses_a_model_the_library_was_not_built_with(tiny_library, captured_run, capsys):
    assert main(["serve", "--library", str(tiny_library), "--model", "test-rn-tiny", "--no-ui"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "test-vit-tiny" in err
    assert "app" not in captured_run


def test_serve_without_any_model_says_what_to_do(tmp_path, captured_run, capsys, monkeypatch):
    import clipforge.api
    import clipforge.weights

    def no_download(*args, **kwargs):
        raise OSError("could not download ViT-B-32.pt (no network)")

    monkeypatch.setattr(clipforge.api, "_shipped_models", lambda: {})
    monkeypatch.setattr(clipforge.weights, "is_cached", lambda *a, **k: False)
    monkeypatch.setattr(clipforge.weights, "download_pretrained", no_download)
    assert main(["serve", "--library", str(tmp_path / "new-lib"), "--no-ui", "--create"]) == 2
    err = capsys.readouterr().err
    assert "cannot load model 'ViT-B/32'" in err and "no network" in err
    assert "clipforge-tiny is not installed" in err and "--model" in err
    assert "app" not in captured_run


def test_port_in_use_is_a_clear_error(tiny_library, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "--library", str(tiny_library), "--port", str(port), "--no-ui"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_sizes_and_limits():
    assert parse_size("20MB") == 20_000_000 and parse_size("512KiB") == 524_288 and parse_size(1000) == 1000
    assert parse_size(" 1.5 gb ") == 1_500_000_000
    for bad in ("", "12 parsecs", "-5MB", "0", 0):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)
    with pytest.raises(ValueError, match="max_pixels"):
        ServerLimits(max_pixels=0)
    assert ServerLimits(max_upload_bytes=100, form_overhead_bytes=10).max_body_bytes == 110


def test_bad_cli_limit_is_an_error(tiny_library, capsys):
    assert main(["serve", "--library", str(tiny_library), "--max-upload", "lots"]) == 2
    assert capsys.readouterr().err == "error: --max-upload 'lots': expected a positive size such as 20MB or 512KiB\n"


def test_model_notice_names_the_offline_model():
    from clipforge.server.service import model_notice

    assert "clipforge-tiny" in model_notice("clipforge-tiny") and "--model ViT-B/32" in model_notice("clipforge-tiny")
    assert "random weights" in model_notice("test-rn-tiny")
    assert model_notice("ViT-B/32") is None and model_notice(None) is None


def test_the_token_comes_from_a_file_or_the_environment(tiny_library, captured_run, capsys, tmp_path, monkeypatch):
    from clipforge.server.runner import read_token_file

    token_file = tmp_path / "token"
    token_file.write_text("  from-file \n")
    assert read_token_file(token_file) == "from-file"
    monkeypatch.setenv("CLIPFORGE_TOKEN", "from-env")
    assert main(["serve", "--library", str(tiny_library), "--port", "0", "--no-ui"]) == 0
    client = TestClient(captured_run["app"])
    assert client.get("/healthz").json()["write_token_required"] is True
    image = {"file": ("x.png", (tiny_library.parent / "photos" / "white.png").read_bytes())}
    assert client.post("/api/images", files=image, headers={"X-Token": "from-file"}).status_code == 401
    assert client.post("/api/images", files=image, headers={"X-Token": "from-env"}).status_code == 201
    assert "warning" not in capsys.readouterr().err
    # The file wins over the environment; --token works but warns that `ps` shows it.
    assert main(["serve", "--library", str(tiny_library), "--port", "0", "--no-ui", "--token-file",
                 str(token_file)]) == 0
    client = TestClient(captured_run["app"])
    assert client.post("/api/images", files=image, headers={"X-Token": "from-env"}).status_code == 401
    assert main(["serve", "--library", str(tiny_library), "--port", "0", "--no-ui", "--token", "T"]) == 0
    assert "visible to other users in the process list" in capsys.readouterr().err


def test_a_bad_token_file_is_a_one_line_error(tiny_library, captured_run, capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path, words in ((tmp_path / "missing", "cannot read --token-file"), (empty, "must hold the token")):
        assert main(["serve", "--library", str(tiny_library), "--no-ui", "--token-file", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and str(path) in err and len(err.splitlines()) == 1
    assert "app" not in captured_run


def test_port_out_of_range_is_a_usage_error(tiny_library, capsys):
    from clipforge.server import ServeError
    from clipforge.server.runner import bind_socket

    for port in ("99999", "-1", "http"):
        with pytest.raises(SystemExit) as exited:
            main(["serve", "--library", str(tiny_library), "--port", port])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "argument --port: expected a port number 0-65535" in err and "Traceback" not in err
    with pytest.raises(ServeError, match="between 0 and 65535, got 70000"):
        bind_socket("127.0.0.1", 70000)


def test_a_missing_library_is_an_error_unless_create(tmp_path, captured_run, capsys):
    missing = tmp_path / "typo-lib"
    assert main(["serve", "--library", str(missing), "--model", "test-vit-tiny", "--no-ui"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no library at {missing}") and "--create" in err and len(err.splitlines()) == 1
    assert not missing.exists() and "app" not in captured_run
    # `search` agrees: a missing library is an error there too.
    assert main(["search", "--library", str(missing), "a cat"]) == 2
    assert "no library" in capsys.readouterr().err and not missing.exists()
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    assert main(["serve", "--library", str(a_file), "--no-ui", "--create"]) == 2
    assert f"--library {a_file} is a file, not a library folder" in capsys.readouterr().err
    # --create starts an empty library.
    assert main(["serve", "--library", str(missing), "--model", "test-vit-tiny", "--no-ui", "--create",
                 "--port", "0"]) == 0
    assert (missing / "library.sqlite3").exists()
    assert TestClient(captured_run["app"]).get("/api/images").json()["images"] == []


def test_the_access_log_never_shows_a_token(library):
    import logging

    from clipforge.server import create_app
    from clipforge.server.runner import build_server, redact_query

    assert redact_query("/x?token=abc&a=1&access_token=zz") == "/x?token=***&a=1&access_token=***"
    build_server(create_app(library, ui=False), ServerLimits(), log_level="info")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    access = logging.getLogger("uvicorn.access")
    handler = Keep()
    access.addHandler(handler)
    try:
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/api/stats?token=s3cret&x=1", "1.1", 200)
    finally:
        access.removeHandler(handler)
    assert records == ['127.0.0.1:5 - "GET /api/stats?token=***&x=1 HTTP/1.1" 200']


def test_a_damaged_library_is_a_one_line_error(tmp_path, captured_run, capsys):
    damaged = tmp_path / "lib"
    damaged.mkdir()
    (damaged / "library.sqlite3").write_bytes(b"\x00garbage" * 600)
    assert main(["serve", "--library", str(damaged), "--no-ui"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "damaged" in err and len(err.splitlines()) == 1
    assert (damaged / "library.sqlite3").read_bytes() == b"\x00garbage" * 600 and "app" not in captured_run


@pytest.mark.parametrize("timeout", ["nan", "inf", "0", "-3"])
def test_a_timeout_that_is_not_a_positive_number_is_one_line(tiny_library, capsys, timeout):
    """`--timeout nan` passed the `<= 0` check and reached asyncio.wait_for."""
    assert main(["serve", "--library", str(tiny_library), "--timeout", timeout]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --timeout {timeout!r}: expected a positive number of seconds such as 60\n", err


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_a_blank_token_in_the_environment_is_refused_not_ignored(tiny_library, captured_run, capsys, monkeypatch,
                                                                  blank):
    """`CLIPFORGE_TOKEN="   "` started the server with no token and no word: whoever set it meant to
    protect the library."""
    monkeypatch.setenv("CLIPFORGE_TOKEN", blank)
    assert main(["serve", "--library", str(tiny_library), "--port", "0", "--no-ui"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CLIPFORGE_TOKEN is set but blank" in err and "app" not in captured_run
    assert main(["serve", "--library", str(tiny_library), "--port", "0", "--no-ui", "--token", "   "]) == 2
    assert "must not be empty" in capsys.readouterr().err


@pytest.mark.parametrize("path", [
    "/x?%74oken=SECRET", "/x?a=1;token=SECRET", "/x;token=SECRET", "/x?api-key=SECRET", "/x?password=SECRET",
    "/x?auth=SECRET", "/x?Authorization=Bearer%20SECRET", "/x?passwd=SECRET&b=2", "/x?client_secret=SECRET",
    "/x?X-Token=SECRET", "/x?a=1&access_token=SECRET", "/x?%61pi_key=SECRET", "/x?session_token=SECRET",
    "/x?tok%65n=SECRET#f", "/x?key=SECRET", "/x?apikey=SECRET", "/x?pwd=SECRET", "/x?%2574oken=SECRET"])
def test_the_access_log_masks_every_credential_like_name(path):
    from clipforge.server.runner import redact_query

    masked = redact_query(f'127.0.0.1:5 - "GET {path} HTTP/1.1" 200')
    assert "SECRET" not in masked and "***" in masked, masked
    assert masked.endswith(' HTTP/1.1" 200')
    assert redact_query("/x?monkey=banana&tokens_left=3") == "/x?monkey=banana&tokens_left=3"


def test_the_access_log_escapes_what_decoding_the_query_brings_in():
    """The masking decodes the query up to three times, so `%1b[2J` reached the log as a raw escape (clearing
    the terminal that tails it) and `%250d%250a` as a line break that forged a log line of its own."""
    from clipforge.server.runner import redact_query

    line = redact_query('127.0.0.1:5 - "GET /api/stats?q=%1b%5b2J%250d%250aINFO:%20fake&token=T HTTP/1.1" 200')
    assert line == '127.0.0.1:5 - "GET /api/stats?q=\\x1b[2J\\x0d\\x0aINFO: fake&token=*** HTTP/1.1" 200'
    assert line.isprintable()
    assert redact_query("/x?q=%E7%8C%AB%20dog") == "/x?q=猫 dog"
