"""The nine OpenAI CLIP checkpoints and where they live on disk once downloaded.

OpenAI publish each file under a URL whose second-to-last path segment is the file's sha256,
so the URL alone is enough to verify a download; the registry derives the hash from it rather
than keeping a second copy that could drift.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

CACHE_ENV = "CLIPFORGE_CACHE"
DEFAULT_CACHE = Path("~/.cache/clipforge")

_BASE = "https://openaipublic.azureedge.net/clip/models"
_URLS: dict[str, str] = {
    "RN50": f"{_BASE}/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": f"{_BASE}/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": f"{_BASE}/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": f"{_BASE}/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": f"{_BASE}/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": f"{_BASE}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": f"{_BASE}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": f"{_BASE}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": f"{_BASE}/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/"
                      "ViT-L-14-336px.pt",
}


@dataclass(frozen=True)
class PretrainedWeights:
    """One downloadable checkpoint: its architecture name, URL, expected sha256 and file name."""

    name: str
    url: str
    sha256: str
    filename: str


def sha256_from_url(url: str) -> str:
    """The hex digest OpenAI embed as the parent folder of the file in their URLs."""
    parts = urlparse(url).path.rstrip("/").split("/")
    digest = parts[-2] if len(parts) >= 2 else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"URL {url} does not carry a sha256 in its path (expected .../<sha256>/<file>)")
    return digest


def _entry(name: str, url: str) -> PretrainedWeights:
    return PretrainedWeights(name=name, url=url, sha256=sha256_from_url(url),
                             filename=urlparse(url).path.rsplit("/", 1)[-1])


OPENAI_WEIGHTS: dict[str, PretrainedWeights] = {name: _entry(name, url) for name, url in _URLS.items()}


def list_pretrained() -> list[str]:
    """Names with downloadable weights, in OpenAI's order."""
    return list(OPENAI_WEIGHTS)


def get_pretrained(name: str) -> PretrainedWeights:
    """Registry entry for a name or alias (``ViT-B-32`` works as well as ``ViT-B/32``)."""
    from clipforge.models import canonical_name

    key = canonical_name(name)
    if key not in OPENAI_WEIGHTS:
        raise KeyError(f"no pretrained weights named {name!r}; known: {', '.join(OPENAI_WEIGHTS)}")
    return OPENAI_WEIGHTS[key]


def cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Where downloads go: the argument, else $CLIPFORGE_CACHE, else ~/.cache/clipforge."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(CACHE_ENV, "")
    return Path(env).expanduser() if env else DEFAULT_CACHE.expanduser()


def cached_path(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Where the named checkpoint is (or would be) in the cache."""
    return cache_dir(root) / get_pretrained(name).filename


def is_cached(name: str, root: str | os.PathLike[str] | None = None) -> bool:
    """Whether the checkpoint's file is present; cheap (no hashing), so fine for listings.

    Downloads are renamed into place only after their hash was checked, so presence means a
    verified download unless someone replaced the file by hand; `download_pretrained`
    re-verifies before use.
    """
    return cached_path(name, root).is_file()
