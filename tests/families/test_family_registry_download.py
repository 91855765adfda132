"""A SigLIP registry entry end to end against a local 127.0.0.1 "hub" (HF_ENDPOINT): the weights
file in open_clip's timm layout and the tokenizer file beside it, both through the verified
downloader, into the one loader.

The hub serves ``open_clip_pytorch_model.bin`` (the ``.safetensors`` answers 404, so the second
file is tried, as open_clip does) holding ViT-B-16-SigLIP's shapes with every tensor expanded from
one element (kilobytes on disk, a full-size model when built), and ``spiece.model`` trained here.
"""

from __future__ import annotations

import hashlib
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from family_fixtures import train_spiece

import clipforge
from clipforge.models import create_model_from_config, get_config
from clipforge.weights.family_layouts import to_open_clip_siglip

pytestmark = pytest.mark.slow


def _timm_layout_bytes() -> bytes:
    with torch.device("meta"):
        meta = create_model_from_config(get_config("ViT-B-16-SigLIP"))
    gen = torch.Generator().manual_seed(0)
    ours = {k: torch.randn((), generator=gen).mul(0.02).expand(v.shape) for k, v in meta.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(to_open_clip_siglip(ours), buffer)
    return buffer.getvalue()


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    files = {"open_clip_pytorch_model.bin": _timm_layout_bytes(),
             "spiece.model": train_spiece(tmp_path / "spm").read_bytes()}
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            name = self.path.rsplit("/", 1)[-1]
            if self.path.startswith("/timm/ViT-B-16-SigLIP/resolve/main/") and name in files:
                body = files[name]
                served.append(name)
                self.send_response(200)
                self.send_header("X-Linked-Etag", f'"{hashlib.sha256(body).hexdigest()}"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("CLIPFORGE_ALLOW_UNPINNED", "1")  # open_clip publishes no hash for hub files
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    yield served
    server.shutdown()


def test_siglip_weights_and_tokenizer_download_and_load(hub) -> None:
    loaded = clipforge.load_model("ViT-B-16-SigLIP:webli", "cpu")
    assert sorted(hub) == ["open_clip_pytorch_model.bin", "spiece.model"]
    assert loaded.name == "ViT-B-16-SigLIP:webli" and type(loaded.model).__name__ == "FamilyCLIP"
    assert loaded.scoring.kind == "sigmoid"
    assert loaded.model.preprocess_cfg["resize_mode"] == "squash" and loaded.model.preprocess_cfg["mean"][0] == 0.5
    ids = loaded.tokenize(["A photo of a cat!"])
    assert ids.shape == (1, 64) and ids[0, -1].item() == 1
    with torch.no_grad():
        features = loaded.model.encode_text(ids)
    assert features.shape == (1, 768) and torch.isfinite(features).all()
    again = clipforge.load_model("ViT-B-16-SigLIP:webli", "cpu")  # cached: nothing fetched twice
    assert sorted(hub) == ["open_clip_pytorch_model.bin", "spiece.model"] and again.tokenizer.path is not None
