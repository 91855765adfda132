"""The pretrained registry, offline: every entry is complete, and registry downloads (release
files with a published hash prefix, hub files with the hub's announced sha256, both accepted only
with the user's opt-in and a shape check) go through the verified downloader against a local
127.0.0.1 server."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from clipforge.models import ARCH_CONFIGS, activation_of, get_config
from clipforge.weights import (
    DownloadError,
    download_pretrained,
    get_pretrained,
    list_pretrained,
    load_checkpoint,
)
from clipforge.weights.registry import PRETRAINED
from clipforge.weights.zoo import checkpoint_config

# What the issue names: every tag family open_clip publishes for these architectures.
EXPECTED = [("ViT-B-32", "laion2b_s34b_b79k"), ("ViT-L-14", "laion2b_s32b_b82k"), ("ViT-H-14", "laion2b_s32b_b79k"),
            ("ViT-g-14", "laion2b_s12b_b42k"), ("ViT-g-14", "laion2b_s34b_b88k"), ("ViT-bigG-14", "laion2b_s39b_b160k"),
            ("ViT-B-16", "laion2b_s34b_b88k"), ("ViT-B-32", "laion400m_e31"), ("ViT-B-32", "laion400m_e32"),
            ("ViT-B-32", "laion2b_e16"), ("RN50", "yfcc15m"), ("RN50", "cc12m"), ("RN101", "yfcc15m"),
            ("ViT-B-32-quickgelu", "metaclip_400m"), ("ViT-B-32", "datacomp_xl_s13b_b90k"),
            ("ViT-B-16", "commonpool_l_clip_s1b_b8k"), ("ViT-B-32-256", "datacomp_s34b_b86k"),
            ("ViT-B-16-plus-240", "laion400m_e32"), ("ViT-L-14-336", "openai"), ("ViT-B-32", "openai"),
            ("RN50-quickgelu", "openai"), ("ViT-H-14-quickgelu", "dfn5b")]


def test_every_entry_is_complete():
    pairs = [pair for pair in list_pretrained() if pair[1] != "cn_clip"]  # Chinese-CLIP: tests/chinese
    # open_clip's 94 for OpenAI's shapes + OpenAI's spellings (98), and the families of issue 16:
    # 26 SigLIP / SigLIP 2, DFN at 378 px and MetaCLIP 2 worldwide (33), open_clip's transformers text towers (9),
    # CLIPA-v2 (7)
    assert len(pairs) == len(set(pairs)) == 98 + 33 + 9 + 7
    assert set(EXPECTED) <= set(pairs)
    assert list_pretrained(as_str=True)[0] == "RN50:openai"
    for (arch, tag), entry in ((pair, PRETRAINED[pair]) for pair in pairs):
        assert arch in ARCH_CONFIGS and entry.name in ARCH_CONFIGS, (arch, tag)
        assert entry.sources() and all(s.url.startswith("https://") for s in entry.sources()), (arch, tag)
        assert entry.activation == activation_of(get_config(entry.name)), (arch, tag)
        # bilinear: CLIPA's, as open_clip's own entries say (tests/families/test_family_clipa.py)
        assert entry.interpolation == ("bilinear" if "CLIPA" in arch else "bicubic"), (arch, tag)
        assert entry.resize_mode in ("shortest", "squash")
        assert len(entry.mean) == len(entry.std) == 3
        assert entry.imagenet_top1 is None or 0 < entry.imagenet_top1 < 100
        if arch.endswith("-quickgelu") or tag == "openai":
            assert entry.activation == "quick_gelu", (arch, tag)
        if "openaipublic" in entry.url:
            assert len(entry.sha256) == 64
        elif "mlfoundations" in entry.url:
            assert len(entry.sha256) == 8  # the prefix open_clip's file names publish


def test_registry_equals_open_clips_own_table():
    """Same (architecture, tag) pairs, URLs, hub repositories, activation and preprocessing as
    open_clip's `pretrained.py` (read from the installed open-clip-torch without running its
    package __init__, which imports torchvision; `pretrained.py` itself does not)."""
    import importlib
    import importlib.util
    import json
    import sys
    import types
    from pathlib import Path

    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open-clip-torch is not installed (pip install --no-deps open-clip-torch)")
    package = types.ModuleType("_open_clip_registry")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("_open_clip_registry", package)
    theirs_module = importlib.import_module("_open_clip_registry.pretrained")
    from clipforge.models import OPEN_CLIP_MODELS

    theirs = {pair for pair in theirs_module.list_pretrained() if pair[0] in OPEN_CLIP_MODELS}
    ours = {pair for pair in list_pretrained() if "/" not in pair[0] and pair[1] != "cn_clip"}  # not open_clip's
    assert theirs <= ours and ours <= set(theirs_module.list_pretrained())  # every pair of ours is open_clip's
    for arch, tag in ours:
        cfg, entry = theirs_module.get_pretrained_cfg(arch, tag), get_pretrained(arch, tag)
        assert cfg["url"] == entry.url and cfg["hf_hub"].rstrip("/") == entry.hf_repo, (arch, tag)
        # QuickGELU where the pretrained config or the model config says so (roberta-ViT-B-32's JSON does)
        model_json = Path(next(iter(spec.submodule_search_locations))) / "model_configs" / f"{arch}.json"
        quick = cfg.get("quick_gelu", False) or (
            model_json.is_file() and json.loads(model_json.read_text()).get("quick_gelu", False))
        assert quick == (entry.activation == "quick_gelu"), (arch, tag)
        assert (tuple(cfg["mean"]), tuple(cfg["std"])) == (entry.mean, entry.std), (arch, tag)
        assert (cfg["interpolation"], cfg["resize_mode"]) == (entry.interpolation, entry.resize_mode), (arch, tag)


def test_entries_carry_what_the_weights_need():
    assert get_pretrained("ViT-B-32", "laion2b_s34b_b79k").activation == "gelu"
    assert get_pretrained("ViT-B-32", "openai").name == "ViT-B/32"  # pretrained="openai" implies QuickGELU
    laion400m = get_pretrained("ViT-B-32", "laion400m_e31")  # QuickGELU weights listed under the GELU name
    assert laion400m.name == "ViT-B-32-quickgelu" and laion400m.imagenet_top1 == 62.94
    assert get_pretrained("ViT-L-14", "laion2b_s32b_b82k").mean == (0.5, 0.5, 0.5)  # Inception mean/std
    assert get_pretrained("ViT-H-14", "dfn5b").resize_mode == "squash"
    assert get_pretrained("ViT-B-32", "laion2b_s34b_b79k").imagenet_top1 == 66.56
    assert get_pretrained("ViT-B-32", "LAION2B-S34B-B79K").tag == "laion2b_s34b_b79k"  # open_clip's tag cleaning
    with pytest.raises(KeyError, match="no pretrained weights 'nope' for ViT-B-32; known tags: openai, laion400m_e31"):
        get_pretrained("ViT-B-32", "nope")


def test_spec_parsing(tmp_path, monkeypatch):
    """ARCH:TAG is split by the one loader (`clipforge.api.resolve_spec`); an existing file whose name
    merely contains a colon is a file."""
    from clipforge import api

    asked = []
    monkeypatch.setattr(api, "_pretrained_source", lambda name, arch, tag, root: asked.append((arch, tag)))
    api.resolve_spec("ViT-B-32:laion2b_s34b_b79k")
    api.resolve_spec("ViT-L/14-336:openai")
    assert asked == [("ViT-B-32", "laion2b_s34b_b79k"), ("ViT-L/14@336px", "openai")]
    with pytest.raises(FileNotFoundError, match="neither a known name"):
        api.resolve_spec("nonsense:tag")
    odd = tmp_path / "ViT-B-32:x"
    odd.write_bytes(b"")
    assert api.resolve_spec(str(odd)).checkpoint == odd.resolve()  # an existing path is never split


def _checkpoint_bytes(arch: str) -> bytes:
    """torch.save of a state dict with `arch`'s shapes, one stored element per tensor (kilobytes)."""
    import io

    buffer = io.BytesIO()
    torch.save(_shapes_only(arch), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bodies() -> dict[str, bytes]:
    return {"B": _checkpoint_bytes("ViT-B-32"), "L": _checkpoint_bytes("ViT-L-14")}


class _Hub(BaseHTTPRequestHandler):
    """A tiny Hugging Face hub: /resolve/ answers 302 with X-Linked-Etag, like the real one, for
    ``open_clip_pytorch_model.bin`` (its ``.safetensors`` answers 404); ViT-L-14 repositories hold
    a file with ViT-L-14's shapes, the others ViT-B-32's."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _body(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        server = self.server
        server.requests.append(self.path)  # type: ignore[attr-defined]
        if self.path.endswith("/resolve/main/open_clip_pytorch_model.bin"):
            key = "L" if "ViT-L-14" in self.path else "B"
            self.send_response(302)
            announced = server.announced or hashlib.sha256(server.bodies[key]).hexdigest()  # type: ignore[attr-defined]
            self.send_header("X-Linked-Etag", f'"{announced}"')
            self.send_header("Location", f"/cdn/{key}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/cdn/"):
            self._body(server.bodies[self.path.removeprefix("/cdn/")])  # type: ignore[attr-defined]
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


@pytest.fixture()
def hub(monkeypatch, bodies):
    """The hub, with the user's opt-in to files without a pinned sha256 (these tests check what is
    still checked then: the announced hash, the tensors' shapes)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    server.requests, server.announced, server.bodies = [], None, bodies
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("CLIPFORGE_ALLOW_UNPINNED", "1")
    yield server
    server.shutdown()


LAION_B32 = "/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/"


def test_hub_entry_downloads_through_hash_checking(hub, tmp_path, bodies):
    path = download_pretrained("ViT-B-32", tmp_path, tag="laion2b_s34b_b79k", progress=False, backoff=0.001)
    assert path.read_bytes() == bodies["B"]
    assert path.name == "laion--CLIP-ViT-B-32-laion2B-s34B-b79K--open_clip_pytorch_model.bin"
    assert hub.requests == [LAION_B32 + "open_clip_model.safetensors", LAION_B32 + "open_clip_pytorch_model.bin",
                            "/cdn/B"]
    hub.requests.clear()
    assert download_pretrained("ViT-B-32", tmp_path, tag="laion2b_s34b_b79k", progress=False) == path
    assert hub.requests == []  # cached: no network


def test_hub_file_with_the_wrong_bytes_is_refused(hub, tmp_path):
    hub.announced = "0" * 64
    with pytest.raises(DownloadError) as info:
        download_pretrained("ViT-B-32", tmp_path, tag="laion2b_s34b_b79k", progress=False, backoff=0.001, retries=0)
    message = str(info.value)
    assert "does not match the server's announced" in message
    assert "\n" not in message and message.count(". ") == 0
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-written left behind


def test_offline_says_which_file_to_fetch_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("CLIPFORGE_ALLOW_UNPINNED", raising=False)
    with pytest.raises(DownloadError) as info:
        download_pretrained("ViT-L-14", tmp_path, tag="laion2b_s32b_b82k", progress=False, retries=0)
    message = str(info.value)
    expected = tmp_path / "laion--CLIP-ViT-L-14-laion2B-s32B-b82K--open_clip_model.safetensors"
    assert "http://127.0.0.1:9/laion/CLIP-ViT-L-14-laion2B-s32B-b82K/resolve/main/open_clip_model.safetensors" in message
    assert f"save it as {expected} and set CLIPFORGE_ALLOW_UNPINNED=1" in message
    assert message.endswith("pass the file's path instead.") and "\n" not in message
    monkeypatch.setenv("CLIPFORGE_ALLOW_UNPINNED", "1")  # allowed: tried, refused at once, not retried
    with pytest.raises(DownloadError, match="127.0.0.1:9: .*refused"):
        download_pretrained("ViT-L-14", tmp_path, tag="laion2b_s32b_b82k", progress=False)


def test_release_file_hash_prefix_is_checked(hub, tmp_path, bodies):
    """open_clip's release files publish 8 hex digits of their sha256 in the name: not a pin (refused
    without the opt-in), and with it the download must start with them."""
    from clipforge.weights import download

    assert get_pretrained("RN50", "yfcc15m").sha256 == "455df137"
    url = f"http://127.0.0.1:{hub.server_address[1]}/cdn/B"
    digest = hashlib.sha256(bodies["B"]).hexdigest()
    with pytest.raises(DownloadError, match="only the 8-digit sha256 prefix"):
        download(url, tmp_path, digest[:8], filename="ok.pt", progress=False, allow_unpinned=False)
    good = download(url, tmp_path, digest[:8], filename="ok.pt", progress=False)
    assert good.read_bytes() == bodies["B"]
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    with pytest.raises(DownloadError, match=f"does not match the expected {wrong}"):
        download(url, tmp_path, wrong, filename="bad.pt", progress=False, retries=0)
    assert not (tmp_path / "bad.pt").exists()
    with pytest.raises(ValueError, match="not a hex sha256"):
        download(url, tmp_path, "abc", filename="short.pt", progress=False)


def test_resolved_registry_weights_build_the_right_activation(hub, tmp_path, bodies):
    from clipforge.api import resolve_spec

    resolved = resolve_spec("ViT-B-32", pretrained="laion400m_e31", download_root=tmp_path)
    assert resolved.checkpoint.read_bytes() == bodies["B"]  # (the hub serves one file per architecture)
    assert resolved.activation == "quick_gelu"
    assert "trained with quick_gelu" in resolved.note and "ViT-B-32 alone means gelu" in resolved.note
    assert resolved.preprocess_cfg["mean"][0] == pytest.approx(0.48145466)
    assert resolve_spec("ViT-B-32-quickgelu:laion400m_e31", download_root=tmp_path).note is None
    inception = resolve_spec("ViT-L-14:laion2b_s32b_b82k", download_root=tmp_path)
    assert inception.preprocess_cfg["mean"] == [0.5, 0.5, 0.5] and inception.activation == "gelu"


def _shapes_only(arch: str) -> dict[str, torch.Tensor]:
    """A state dict with `arch`'s shapes whose tensors share one element (a file of kilobytes)."""
    from clipforge.models import create_model_from_config

    with torch.device("meta"):
        meta = create_model_from_config(get_config(arch))
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in meta.state_dict().items()}


def test_plain_state_dict_says_which_activation_it_assumed(tmp_path):
    state = _shapes_only("ViT-B-32")
    torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}},
               tmp_path / "epoch_3.pt")  # an open_clip training checkpoint
    checkpoint = load_checkpoint(tmp_path / "epoch_3.pt")
    assert set(checkpoint.state_dict) == set(state) and not checkpoint.activation_known
    config, note = checkpoint_config(checkpoint)
    assert config["activation"] == "quick_gelu"  # OpenAI's shape: what OpenAI's and clipforge 0.1's files are
    assert note == ("epoch_3.pt is a plain state dict that does not record its activation; assumed quick_gelu "
                    f"(shapes of ViT-B/32); if that is wrong, load it as ViT-B-32:{tmp_path / 'epoch_3.pt'}")
    named, note = checkpoint_config(checkpoint, arch="ViT-B-32")  # the user's name decides
    assert named["activation"] == "gelu" and note is None
    with pytest.raises(Exception, match="does not hold ViT-L-14 weights"):
        checkpoint_config(checkpoint, arch="ViT-L-14")


def test_models_all_lists_every_pretrained_pair(capsys):
    import json

    from clipforge.cli.main import main

    assert main(["models", "--all", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    rows = {k: r for k, r in rows.items() if r.get("tag") != "cn_clip"}  # Chinese-CLIP's: tests/chinese
    laion = rows["ViT-B-32:laion2b_s34b_b79k"]
    assert (laion["activation"], laion["imagenet_top1"], laion["builds"]) == ("gelu", 66.56, "ViT-B-32")
    assert rows["ViT-B-32:laion400m_e31"]["builds"] == "ViT-B-32-quickgelu"
    assert rows["ViT-bigG-14"]["params"] == 2_539_567_105 and rows["ViT-B-32"]["activation"] == "gelu"
    assert sum(r["kind"] == "pretrained" for r in rows.values()) == 98 + 33 + 9 + 7  # + issue 16's families, CLIPA
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "ViT-H-14-quickgelu" in table and "laion2b" not in table  # pairs only with --all


def test_reference_numbers_page_matches_the_registry():
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "reference-numbers.md").read_text(encoding="utf-8")
    commands = re.findall(r"--model (\S+:\S+) .*--expect top1=([0-9.]+)", page)
    assert len(commands) == 57 + 7  # + open_clip's transformers text towers with a top-1
    for spec, top1 in commands:
        arch, tag = spec.split(":")
        assert get_pretrained(arch, tag).imagenet_top1 == float(top1), spec
    listed = {spec for spec, _ in commands}
    for (arch, tag), entry in PRETRAINED.items():
        if entry.imagenet_top1 is not None and "/" not in arch and tag != "openai" and not arch.endswith("-quickgelu"):
            assert f"{arch}:{tag}" in listed, (arch, tag)
