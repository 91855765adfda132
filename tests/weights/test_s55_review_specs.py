"""Model specs that look like URLs, and the spec named for a URL's weights (review of session 55).

Found in review:
- ``C://models/x.pt`` (a Windows drive written with two slashes) was answered "is a URL ... download the file
  yourself and pass its path instead: ./x.pt"; a one-letter "scheme" is a drive, so the line is now the one
  for a missing file.
- Two registry entries share the hub repository ``timm/ViT-SO400M-14-SigLIP-384`` (open_clip maps the -378
  model to it); ``hf-hub:timm/ViT-SO400M-14-SigLIP-384`` was told to pass ``ViT-SO400M-14-SigLIP-378:webli``.
- A Chinese-CLIP transformers folder without weights said torch's "[Errno 2] No such file or directory"
  inside "cannot read .../pytorch_model.bin as a PyTorch checkpoint"; now the generic folder reader's line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipforge.api import resolve_spec
from clipforge.weights.registry import PRETRAINED, get_pretrained, spec_for_url


def _refusal(spec: str) -> str:
    with pytest.raises((FileNotFoundError, ValueError)) as caught:
        resolve_spec(spec)
    return str(caught.value)


@pytest.mark.parametrize("spec", ["C://models/x.pt", "c://x", "D:\\models\\x.pt", "runs/a://b.pt", "./a://b.pt"])
def test_paths_that_look_like_urls_get_the_missing_file_line(spec: str) -> None:
    assert _refusal(spec).startswith(f"model '{spec}' is neither a known name (")  # as typed: no repr


def test_an_existing_path_containing_a_scheme_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "https:" / "host").mkdir(parents=True)
    (tmp_path / "https:" / "host" / "m.pt").write_bytes(b"")
    source = resolve_spec("https://host/m.pt")  # the path https:/host/m.pt
    assert source.checkpoint == tmp_path / "https:" / "host" / "m.pt"


@pytest.mark.parametrize("spec", ["random:ViT-B/32", "ViT-B-32:laion2b_s34b_b79k", "RN50"])
def test_registry_and_random_specs_are_not_urls(spec: str) -> None:
    from clipforge.api import _url_spec

    assert _url_spec(spec) is None


def test_a_shared_hub_repository_names_the_model_it_is_named_after() -> None:
    assert spec_for_url("hf-hub:timm/ViT-SO400M-14-SigLIP-384") == "ViT-SO400M-14-SigLIP-384:webli"
    assert spec_for_url("https://huggingface.co/timm/ViT-SO400M-14-SigLIP-384/resolve/main/x") == (
        "ViT-SO400M-14-SigLIP-384:webli")
    # the e32 entry borrows the e31 repository: its weights are e31's
    assert spec_for_url("hf-hub:timm/vit_base_patch16_plus_clip_240.laion400m_e31") == (
        "ViT-B-16-plus-240:laion400m_e31")


def test_every_registry_url_and_repository_names_a_spec_of_the_same_weights() -> None:
    checked = 0
    for entry in PRETRAINED.values():
        urls = [entry.url] if entry.url else []
        if entry.hf_repo:
            urls += [f"https://huggingface.co/{entry.hf_repo}/resolve/main/x", f"hf-hub:{entry.hf_repo}"]
        for url in urls:
            arch, _, tag = spec_for_url(url).partition(":")
            named = get_pretrained(arch, tag or ("cn_clip" if arch.startswith("cn-") else "openai"))
            assert named.url == entry.url or named.hf_repo == entry.hf_repo, url
            checked += 1
    assert checked > 300


def test_a_chinese_clip_folder_without_weights_says_so(tmp_path: Path) -> None:
    from clipforge.weights import CheckpointFormatError
    from clipforge.weights.cn_clip import read_transformers_folder

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "chinese_clip"}), encoding="utf-8")
    with pytest.raises(CheckpointFormatError) as caught:
        read_transformers_folder(tmp_path)
    assert str(caught.value) == (f"{tmp_path} has config.json but no model.safetensors or pytorch_model.bin: no "
                                 "weights to load")
