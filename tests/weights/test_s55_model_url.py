"""A model given as a URL gets one line saying URLs are not loaded and what to pass instead (session 55).

Before: ``--model https://host/model.pt`` (or open_clip's ``hf-hub:<repo>``) said "is neither a known name (...)
nor an existing checkpoint file or directory. For random weights pass a test config ...": true, and no help to
a user who had a link to weights. Now the line says clipforge downloads only the registry's weights (whose
sha256 it checks), names the registry spec of the same weights when the URL is one of them, and otherwise says
to download the file and pass its path. Nothing is fetched: every URL here is refused before any network use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clipforge.weights.registry import get_pretrained
from tests.weights.conftest import classify_error

_NOT_LOADED = "clipforge does not load models from URLs directly"




@pytest.mark.parametrize("url", ["http://example.com/models/my-clip.pt", "https://example.com/models/my-clip.pt"])
def test_a_url_says_to_download_the_file_and_pass_its_path(image: str, url: str, capsys) -> None:
    assert classify_error(image, url, capsys) == (
        f"error: model {url!r} is a URL: {_NOT_LOADED}: it downloads only the registry's weights, whose sha256 it "
        f"checks; download the file yourself (e.g. curl -LO '{url}') and pass its path instead: ./my-clip.pt"
    )


@pytest.mark.parametrize(
    ("url", "spec"),
    [
        (get_pretrained("ViT-B/32").url, "ViT-B/32"),
        ("https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_model.safetensors",
         "ViT-B-32:laion2b_s34b_b79k"),
        ("https://huggingface.co/OFA-Sys/chinese-clip-rn50", "cn-RN50"),
    ],
)
def test_a_url_of_registry_weights_names_their_spec(image: str, url: str, spec: str, capsys) -> None:
    assert classify_error(image, url, capsys) == (
        f"error: model {url!r} is a URL: {_NOT_LOADED}; these are the registry's {spec} weights: pass {spec!r} "
        "instead, which downloads them and checks their sha256"
    )


def test_open_clips_hub_reference_is_named_as_such(image: str, capsys) -> None:
    known, unknown = "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "hf-hub:someone/their-clip"
    head = "is a Hugging Face hub reference: clipforge does not load models from the hub directly"
    assert classify_error(image, known, capsys) == (
        f"error: model {known!r} {head}; these are the registry's ViT-B-32:laion2b_s34b_b79k weights: pass "
        "'ViT-B-32:laion2b_s34b_b79k' instead, which downloads them and checks their sha256"
    )
    assert classify_error(image, unknown, capsys) == (
        f"error: model {unknown!r} {head}, and no registry weights come from that repository "
        "(clipforge.list_pretrained() lists them as ARCH:TAG): download its files and pass their folder"
    )


def test_a_file_url_names_the_path(image: str, tmp_path: Path, capsys) -> None:
    url = f"file://{tmp_path}/my%20clip.pt"
    assert classify_error(image, url, capsys) == (
        f"error: model {url!r} is a URL: {_NOT_LOADED}; pass the file's path instead: {tmp_path}/my clip.pt"
    )


def test_an_unknown_name_keeps_its_line(image: str, capsys) -> None:
    assert classify_error(image, "no-such-model", capsys).startswith("error: model 'no-such-model' is neither a known name")


@pytest.mark.parametrize("how", ["spec", "pretrained"])
def test_weights_given_as_a_url_for_an_architecture_say_the_same(how: str) -> None:
    """`ViT-B/32:https://...` or `load("ViT-B/32", pretrained="https://...")`: "no pretrained weights
    'https://...' for ViT-B/32" with the known tags listed; now the URL's own line, before any download."""
    from clipforge.api import resolve_spec

    url = "https://example.com/weights/my-finetune.pt"
    with pytest.raises(FileNotFoundError) as raised:
        resolve_spec(f"ViT-B/32:{url}") if how == "spec" else resolve_spec("ViT-B/32", pretrained=url)
    message = str(raised.value)
    assert "is a URL" in message and "download the file yourself" in message and "./my-finetune.pt" in message
    assert "no pretrained weights" not in message
