"""`clipforge serve`: model choice, binding, warnings and errors (uvicorn's loop is not entered)."""

from __future__ import annotations

import socket

import httpx
import pytest
from fastapi.testclient import TestClient

from clipforge.cli.main import main
from clipforge.server import ServerLimits, parse_size


@pytest.fixture()
def captured_run(monkeypatch):
    """Replace uvicorn's serving loop: record the app and sockets instead of serving forever."""
    import uvicorn

    seen: dict = {}

    def fake_run(self, sockets=None):
        seen["app"], seen["sockets"] = self.config.app, sockets
        seen["ports"] = [s.getsockname() for s in sockets or []]
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


def test_serve_binds_loopback_and_mounts_ui_over_the_api(tiny_library, captured_run, capsys, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("t0k\n")
    code = main(["serve", "--library", str(tiny_library), "--port", "0", "--token-file", str(token_file)])
    assert code == 0
    out, err = capsys.readouterr()
    host, port = captured_run["ports"][0]
    assert host == "127.0.0.1" and port > 0
    assert f"at http://127.0.0.1:{port}/" in out and "model test-vit-tiny" in out
    assert "random weights" in err and "warning" not in err  # the library's own model; no exposure warning
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
    assert "cannot read size 'lots'" in capsys.readouterr().err


def test_model_notice_names_the_offline_model():
    from clipforge.server.service import model_notice

    assert "clipforge-tiny" in model_notice("clipforge-tiny") and "--model ViT-B/32" in model_notice("clipforge-tiny")
    assert "random weights" in model_notice("test-rn-tiny")
    assert model_notice("ViT-B/32") is None and model_notice(None) is None
