"""A SigLIP registry entry end to end against a local 127.0.0.1 "hub" (HF_ENDPOINT): the weights
file in open_clip's timm layout and the tokenizer file beside it, both through the verified
downloader, into the one loader.

The hub serves ``open_clip_pytorch_model.bin`` (the ``.safetensors`` answers 404, so the second
file is tried, as open_clip does) holding ViT-B-16-SigLIP's shapes with every tensor expanded from
one element (kilobytes on disk, a full-size model when built), and ``spiece.model`` trained here.
"""

from __future__ import annotations

import io

import pytest
import torch
from family_fixtures import train_spiece

import clipforge
from clipforge.models import create_model_from_config, get_config
from clipforge.models.family import FamilyCLIP
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
def hub(local_hub, monkeypatch, tmp_path):
    """The hub paths fetched, in order."""
    files = {"open_clip_pytorch_model.bin": _timm_layout_bytes(),
             "spiece.model": train_spiece(tmp_path / "spm").read_bytes()}
    served = local_hub({f"/timm/ViT-B-16-SigLIP/resolve/main/{name}": body for name, body in files.items()})
    monkeypatch.setenv("CLIPFORGE_ALLOW_UNPINNED", "1")  # open_clip publishes no hash for hub files
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    return served


def _names(served: list[str]) -> list[str]:
    return sorted(path.rsplit("/", 1)[-1] for path in served)


def test_siglip_weights_and_tokenizer_download_and_load(hub) -> None:
    loaded = clipforge.load_model("ViT-B-16-SigLIP:webli", "cpu")
    assert _names(hub) == ["open_clip_pytorch_model.bin", "spiece.model"]
    assert loaded.name == "ViT-B-16-SigLIP:webli" and isinstance(loaded.model, FamilyCLIP)
    assert loaded.scoring.kind == "sigmoid"
    assert loaded.model.preprocess_cfg["resize_mode"] == "squash" and loaded.model.preprocess_cfg["mean"][0] == 0.5
    ids = loaded.tokenize(["A photo of a cat!"])
    assert ids.shape == (1, 64) and ids[0, -1].item() == 1
    with torch.no_grad():
        features = loaded.model.encode_text(ids)
    assert features.shape == (1, 768) and torch.isfinite(features).all()
    again = clipforge.load_model("ViT-B-16-SigLIP:webli", "cpu")  # cached: nothing fetched twice
    assert _names(hub) == ["open_clip_pytorch_model.bin", "spiece.model"] and again.tokenizer.path is not None
