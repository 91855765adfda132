"""Every published checkpoint clipforge can fetch by name, and where it lives once downloaded.

Two sources (data in `clipforge.weights.zoo_data`): OpenAI's nine checkpoints, and open_clip's
zoo for the CLIPs of OpenAI's shape. An entry is an (architecture, tag) pair, as in open_clip
(``("ViT-B-32", "laion2b_s34b_b79k")``); OpenAI's spellings (``"ViT-B/32"``) have the tag
``"openai"`` only. Each entry carries what is needed to use the weights correctly: the
activation they were trained with, their preprocessing, and the published ImageNet top-1.

Hashes (the policy is `clipforge.weights.download`'s): a file is trusted only through a full
sha256 pinned here. OpenAI's URLs end in ``<sha256>/<file>``; any other file is pinned by
`zoo_data.PINNED_SHA256` (the hub's LFS sha256 or a release file's published digest) where one
is known. open_clip's release files publish only the first 8 hex digits (kept as a prefix check)
and a hub announces its own (``X-Linked-Etag``), which a mirror named by ``HF_ENDPOINT`` can make
up: without a pin such files are refused unless the user opts in (``CLIPFORGE_ALLOW_UNPINNED=1``),
and then their tensors' shapes must match the entry's architecture before they are cached.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import ParseResult, urlparse

from clipforge.weights import zoo_data

CACHE_ENV = "CLIPFORGE_CACHE"
HF_ENDPOINT_ENV = "HF_ENDPOINT"  # the variable huggingface_hub reads: mirrors and tests point it elsewhere
DEFAULT_CACHE = Path("~/.cache/clipforge")
HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's own preference
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Source:
    """One place a checkpoint can be fetched from, with the file name it gets in the cache."""

    url: str
    filename: str
    sha256: str | None  # full hex digest (trusted) or a published prefix (>= 8 hex digits); None: not pinned


@dataclass(frozen=True)
class PretrainedWeights:
    """One downloadable checkpoint: architecture, tag, where it lives and how to use it.

    `name` is the architecture to build (its activation already resolved: the ``-quickgelu``
    config for QuickGELU weights), `url`/`sha256`/`filename` the primary source; `hf_repo`
    adds the hub copies tried when the primary source fails (or is absent).
    """

    name: str
    url: str
    sha256: str | None
    filename: str
    tag: str = "openai"
    hf_repo: str = ""
    activation: str = "quick_gelu"
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    imagenet_top1: float | None = None
    listed_as: str = ""  # the architecture name the entry is listed under (open_clip's or OpenAI's)
    notes: tuple[str, ...] = field(default=())
    hf_files: tuple[str, ...] = HF_FILES  # the hub files of `hf_repo` (Chinese-CLIP names its own)

    @property
    def preprocess(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation,
                "resize_mode": self.resize_mode}

    def sources(self) -> list[Source]:
        """Where to fetch from, in order: the primary URL, then the hub files."""
        out = [Source(self.url, self.filename, self.sha256)] if self.url else []
        endpoint = os.environ.get(HF_ENDPOINT_ENV, "").rstrip("/") or "https://huggingface.co"
        for file in self.hf_files if self.hf_repo else ():
            out.append(Source(f"{endpoint}/{self.hf_repo}/resolve/main/{file}",
                              f"{self.hf_repo.replace('/', '--')}--{file}",
                              zoo_data.PINNED_SHA256.get(f"{self.hf_repo}/{file}")))
        return out


def sha256_from_url(url: str) -> str:
    """The hex digest OpenAI embed as the parent folder of the file in their URLs."""
    parts = urlparse(url).path.rstrip("/").split("/")
    digest = parts[-2] if len(parts) >= 2 else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"URL {url} does not carry a sha256 in its path (expected .../<sha256>/<file>)")
    return digest


def _release_sha_prefix(url: str) -> str | None:
    """The full pinned sha256 of a release file when known, else the first 8 hex digits that
    open_clip's release file names end in (``-<8 hex>.pt``), a prefix check only."""
    pinned = zoo_data.PINNED_SHA256.get(os.path.basename(urlparse(url).path))
    if pinned:
        return pinned
    match = re.search(r"-([0-9a-f]{8})\.pth?$", urlparse(url).path)
    return match.group(1) if match else None


def _openai_entry(name: str, listed_as: str, tag: str = "openai") -> PretrainedWeights:
    path, _, hub, top1 = zoo_data.OPENAI[name]
    url = f"{zoo_data.OPENAI_BASE}/{path}"
    return PretrainedWeights(name=name, url=url, sha256=sha256_from_url(url), filename=path.rsplit("/", 1)[-1],
                             tag=tag, hf_repo=hub, imagenet_top1=top1, listed_as=listed_as)


def _zoo_entry(row: tuple, listed_as: str) -> PretrainedWeights:
    arch, tag, url, hub, quick_gelu, top1, preprocess = row
    extra = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in preprocess.items()}
    filename = f"{arch}--{tag}--{os.path.basename(urlparse(url).path)}" if url else ""
    return PretrainedWeights(
        name=f"{arch}-quickgelu" if quick_gelu else arch, url=url, sha256=_release_sha_prefix(url) if url else None,
        filename=filename or f"{hub.replace('/', '--')}--{HF_FILES[0]}", tag=tag, hf_repo=hub,
        activation="quick_gelu" if quick_gelu else _gelu_of(arch), imagenet_top1=top1, listed_as=listed_as, **extra)


def _gelu_of(arch: str) -> str:
    """The GELU an architecture's non-QuickGELU weights use: erf GELU, or tanh-GELU (SigLIP).
    (From the registry's own data: importing `clipforge.models` here would pull in torch.)"""
    if arch in zoo_data.HF_TOWER_ACTIVATION:  # open_clip's transformers text towers (their image tower's)
        return zoo_data.HF_TOWER_ACTIVATION[arch]
    return "gelu_tanh" if arch in zoo_data.SIGLIP_ARCHS else "gelu"


def _build() -> dict[tuple[str, str], PretrainedWeights]:
    table: dict[tuple[str, str], PretrainedWeights] = {}
    for name in zoo_data.OPENAI:
        table[(name, "openai")] = _openai_entry(name, name)
    for name, (_, open_clip_name, _, _) in zoo_data.OPENAI.items():
        # open_clip: `pretrained="openai"` means OpenAI's QuickGELU model under either spelling.
        for listed in (open_clip_name, f"{open_clip_name}-quickgelu"):
            table.setdefault((listed, "openai"), _openai_entry(name, listed))
    for row in zoo_data.ENTRIES:
        arch, tag, quick_gelu = row[0], row[1], row[4]
        table[(arch, tag)] = _zoo_entry(row, arch)
        if quick_gelu:  # open_clip lists QuickGELU weights under the -quickgelu name too
            table[(f"{arch}-quickgelu", tag)] = _zoo_entry(row, f"{arch}-quickgelu")
    from clipforge.weights import cn_clip_data  # Chinese-CLIP: hub files under its own tag, cn_clip

    table.update({(name, cn_clip_data.TAG): PretrainedWeights(**cn_clip_data.entry_fields(name))
                  for name in cn_clip_data.PUBLISHED})
    return table


PRETRAINED: dict[tuple[str, str], PretrainedWeights] = _build()
OPENAI_WEIGHTS: dict[str, PretrainedWeights] = {name: PRETRAINED[(name, "openai")] for name in zoo_data.OPENAI}


def _clean_tag(tag: str) -> str:
    return tag.lower().replace("-", "_")


def list_pretrained(as_str: bool = False) -> list[Any]:
    """Every (architecture, tag) pair with downloadable weights, as open_clip's `list_pretrained`
    (``"name:tag"`` strings with `as_str`). OpenAI's spellings come first."""
    return [f"{name}:{tag}" if as_str else (name, tag) for name, tag in PRETRAINED]


def list_pretrained_tags_by_model(name: str) -> list[str]:
    from clipforge.models import canonical_name

    return [tag for arch, tag in PRETRAINED if arch == canonical_name(name)]


def list_pretrained_models_by_tag(tag: str) -> list[str]:
    """Architectures with weights under `tag` (any case, ``-`` or ``_``), in open_clip's spellings and order;
    OpenAI's own spellings (``ViT-B/32``) are left out: they name the same weights as ``ViT-B-32``."""
    wanted = _clean_tag(tag)
    return [arch for arch, entry_tag in PRETRAINED if entry_tag == wanted and "/" not in arch and "@" not in arch]


def get_pretrained(name: str, tag: str = "openai") -> PretrainedWeights:
    """Registry entry for an architecture (any spelling) and tag; KeyError names what exists."""
    from clipforge.models import canonical_name

    arch, tag = canonical_name(name), _clean_tag(tag)
    entry = PRETRAINED.get((arch, tag))
    if entry is None:
        tags = list_pretrained_tags_by_model(arch)
        if tags:
            raise KeyError(f"no pretrained weights {tag!r} for {name}; known tags: {', '.join(tags)}")
        archs = sorted({a for a, _ in PRETRAINED})
        raise KeyError(f"no pretrained weights named {name!r}; known: {', '.join(archs)}")
    return entry


_HUB_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")


def _hub_repo(parsed: ParseResult) -> str:
    """``<owner>/<name>`` of a URL on the Hugging Face hub or under the endpoint ``HF_ENDPOINT`` names, else "".
    The endpoint may carry a path (a mirror at ``http://host:8080/mirror``): its repositories lie under that
    prefix, as `PretrainedWeights.sources` builds their URLs, and the prefix is not part of their names."""
    host = parsed.netloc.lower()
    parts = [part for part in parsed.path.split("/") if part]
    if not host:
        return ""
    if host in _HUB_HOSTS:
        return "/".join(parts[:2])
    endpoint = urlparse(os.environ.get(HF_ENDPOINT_ENV, "").strip())
    prefix = [part for part in endpoint.path.split("/") if part]
    if host != endpoint.netloc.lower() or parts[:len(prefix)] != prefix:
        return ""
    return "/".join(parts[len(prefix):][:2])


def spec_for_url(url: str) -> str | None:
    """The model spec (``ViT-B/32``, ``ARCH:TAG``, ``cn-RN50``) of the registry weights `url` names, else None:
    an entry's release URL, a Hugging Face hub page or file of an entry's repository
    (``https://huggingface.co/<repo>/...``, whichever endpoint ``HF_ENDPOINT`` names), or open_clip's
    ``hf-hub:<repo>``. For a user who gave that URL as the model: the spec downloads the same weights and
    verifies them, which a URL alone cannot be."""
    text = url.strip()
    repo = ""
    if text.lower().startswith("hf-hub:"):
        repo = text[len("hf-hub:"):].strip("/")
    else:
        repo = _hub_repo(urlparse(text))
    found = [(arch, tag) for (arch, tag), entry in PRETRAINED.items()
             if (entry.url and entry.url == text) or (repo and entry.hf_repo.lower() == repo.lower())]
    # one repository may serve two entries (open_clip maps ViT-SO400M-14-SigLIP-378 to the -384 repository): the
    # one the repository is named after, as the user asked for it
    arch, tag = next((m for m in found if m[0].lower() in repo.lower()), found[0]) if found else ("", "")
    if not arch:
        return None
    return arch if (tag == "openai" and arch in zoo_data.OPENAI) or arch.startswith("cn-") else f"{arch}:{tag}"


def cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """clipforge's one cache root: the argument, else $CLIPFORGE_CACHE, else $CLIPFORGE_CACHE_DIR (the
    class-embedding cache's older name), else $XDG_CACHE_HOME/clipforge, else ~/.cache/clipforge.

    Downloads go here, and under it every other cache: fingerprints/, class_embeddings/, features/,
    milvus-server/. One variable moves them all (the test suite points it at a folder of its run).
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    for name in (CACHE_ENV, "CLIPFORGE_CACHE_DIR"):
        env = os.environ.get(name, "")
        if env:
            return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return Path(xdg).expanduser() / "clipforge" if xdg else DEFAULT_CACHE.expanduser()


def cached_path(name: str, root: str | os.PathLike[str] | None = None, tag: str = "openai") -> Path:
    """Where the checkpoint is in the cache: the first source's file present that the downloader would
    trust (a full pinned sha256, or the ``.sha256`` record of a file accepted under the opt-in), else the
    primary's. A stray file (say, what a mirror left before hashes were pinned) does not count."""
    entry = get_pretrained(name, tag)
    base = cache_dir(root)
    for source in entry.sources():
        path = base / source.filename
        pinned = source.sha256 is not None and len(source.sha256) == 64  # (the downloader's `is_full_sha256`)
        if path.is_file() and (pinned or path.with_name(path.name + ".sha256").is_file()):
            return path
    return base / entry.filename


def is_cached(name: str, root: str | os.PathLike[str] | None = None, tag: str = "openai") -> bool:
    """Whether the checkpoint's file is present; cheap (no hashing), so fine for listings.

    Downloads are renamed into place only after their hash was checked, so presence means a
    verified download unless someone replaced the file by hand; `download_pretrained`
    re-verifies before use.
    """
    return cached_path(name, root, tag).is_file()
