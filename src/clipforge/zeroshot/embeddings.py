"""Class embeddings: the zero-shot classifier's weight matrix, built from prompts and cached.

A class embedding is normalize(mean over templates of normalize(encode_text(prompt))), the
prompt-ensembling recipe of the CLIP paper. Building one for ImageNet means 80,000 text
forward passes, so two things matter: prompts are batched by token length (`CLIP.encode_text`
only runs the tower up to the batch's longest prompt, so sorting by length makes most batches
short), and the result is cached on disk keyed by everything that determines it, so the
second build is a file read. The cache folder is bounded (least recently used files go first,
`DEFAULT_CACHE_BYTES` or `$CLIPFORGE_CLASS_CACHE_BYTES`), and a caller that may abandon a build
(a server whose request timed out) stops it between chunks with `stop_when`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from clipforge.zeroshot.prompts import fill_template  # the one safe way to format a user's template

__all__ = [
    "CACHE_FORMAT_VERSION", "DEFAULT_CACHE_BYTES", "BuildCancelled", "build_class_embeddings", "cache_budget",
    "cache_key", "default_cache_dir", "encode_texts", "evict_cache", "load_cached_embeddings", "save_cached_embeddings", "stop_when",
    "text_tower_fingerprint",
]

log = logging.getLogger(__name__)

# Bump when the recipe changes in a way that changes the numbers for identical inputs.
CACHE_FORMAT_VERSION = 1
# The tokenizer is part of what determines the embeddings: OpenAI's BPE (shipped) has this id; a
# family's tokenizer file is identified by its bytes (`zeroshot.classifier._tokenizer_id`).
TOKENIZER_ID = "openai-clip-bpe-49408"
# Bytes the cached matrices of one cache folder may hold; least recently used files go first.
DEFAULT_CACHE_BYTES = 64 * 2**20
# Prompts encoded between two checks of `stop_when`'s condition (a fraction of a second of CPU).
STOP_CHUNK = 64

_should_stop: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("clipforge_should_stop",
                                                                                         default=None)


class BuildCancelled(RuntimeError):
    """The caller stopped a class-embedding build (its request was answered or abandoned)."""


@contextlib.contextmanager
def stop_when(should_stop: Callable[[], bool]) -> Iterator[None]:
    """Within this block (in this thread), text encoding checks `should_stop()` between chunks of
    `STOP_CHUNK` prompts and raises BuildCancelled once it is true.

    A server answers a request that took too long, or whose client left, while the thread doing
    its work goes on: without this, an abandoned 8,000-prompt classify went on computing for
    minutes. A context variable, not a parameter, so the layers in between need not pass it on.
    """
    token = _should_stop.set(should_stop)
    try:
        yield
    finally:
        _should_stop.reset(token)


def _check_stop() -> None:
    check = _should_stop.get()
    if check is not None and check():
        raise BuildCancelled("stopped: the request that asked for these class embeddings is gone")


def _chunk(batch_size: int) -> int:
    return min(batch_size, STOP_CHUNK) if _should_stop.get() is not None else batch_size


def cache_budget() -> int:
    """``$CLIPFORGE_CLASS_CACHE_BYTES`` (bytes) or DEFAULT_CACHE_BYTES: the LRU budget of a cache folder."""
    value = os.environ.get("CLIPFORGE_CLASS_CACHE_BYTES", "").strip()
    try:
        return max(0, int(value)) if value else DEFAULT_CACHE_BYTES
    except ValueError:
        log.warning("ignoring CLIPFORGE_CLASS_CACHE_BYTES=%r (not a whole number of bytes)", value)
        return DEFAULT_CACHE_BYTES


def default_cache_dir() -> Path:
    """``class_embeddings`` under clipforge's one cache root (`weights.registry.cache_dir`: ``$CLIPFORGE_CACHE``)."""
    from clipforge.weights.registry import cache_dir

    return cache_dir() / "class_embeddings"


def cache_key(fingerprint: str, classnames: Sequence[str], templates: Sequence[str], context_length: int,
              model_class: str = "", *, tokenizer: str = TOKENIZER_ID) -> str:
    """Hex digest of everything the embeddings depend on (order of classes and templates included).

    `model_class` keeps two classes with equal weights but different `encode_text` apart; `tokenizer`
    two tokenizers over equal weights (`ZeroShotClassifier` passes the model's, files hashed).
    """
    payload = json.dumps({
        "version": CACHE_FORMAT_VERSION, "tokenizer": tokenizer, "fingerprint": fingerprint,
        "model_class": model_class, "context_length": int(context_length), "classnames": list(classnames),
        "templates": list(templates),
    }, ensure_ascii=False, separators=(",", ":"))
    # surrogatepass: a label holding an undecodable command-line byte ("\udcff") hashes as itself (it was a
    # codec error out of classify); keys of valid text are unchanged
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def text_tower_fingerprint(model: torch.nn.Module) -> str:
    """Fingerprint of the weights `encode_text` reads: everything but the image tower and the
    logit scale. Cheaper than the whole model (a third of ViT-L/14) and still correct when
    only the image tower was fine-tuned."""
    from clipforge.weights.fingerprint import part_fingerprint

    # memoised per model and per weights file: a cached classifier costs no pass over the tower
    return part_fingerprint(model, "text_tower", lambda k: not k.startswith("visual.") and k != "logit_scale")


def _cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}.safetensors"


def load_cached_embeddings(cache_dir: str | Path, key: str, num_classes: int) -> torch.Tensor | None:
    """The cached matrix, or None when absent or unreadable (a damaged file is rebuilt, not trusted)."""
    from safetensors.torch import load_file

    path = _cache_path(Path(cache_dir), key)
    if not path.is_file():
        return None
    try:
        tensor = load_file(str(path))["class_embeddings"]
    except Exception as exc:  # any damage means "rebuild"
        log.warning("ignoring unreadable class-embedding cache %s (%s); rebuilding", path, exc)
        return None
    if tensor.ndim != 2 or tensor.shape[0] != num_classes:
        log.warning("ignoring class-embedding cache %s with shape %s (expected %d rows)",
                    path, tuple(tensor.shape), num_classes)
        return None
    with contextlib.suppress(OSError):  # recently used: last to be evicted
        os.utime(path)
    return tensor


def save_cached_embeddings(cache_dir: str | Path, key: str, embeddings: torch.Tensor,
                           metadata: dict[str, str] | None = None, max_bytes: int | None = None) -> Path:
    """Write through clipforge.atomic, so a reader never sees half a file; then evict the least
    recently used files of `cache_dir` until it holds at most `max_bytes` (`cache_budget()`).

    Each new label set adds a file (~100-200 KB for 100 labels at 512-1024 dimensions); a server
    classifying whatever strangers send would otherwise fill the library's disk.
    """
    from safetensors.torch import save_file

    from clipforge.atomic import write_atomic

    path = _cache_path(Path(cache_dir), key)
    tensors = {"class_embeddings": embeddings.detach().float().cpu().contiguous()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    written = write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    evict_cache(Path(cache_dir), cache_budget() if max_bytes is None else max_bytes, keep=written)
    return written


def evict_cache(cache_dir: Path, max_bytes: int, keep: Path | None = None) -> int:
    """Delete the least recently used `*.safetensors` of `cache_dir` until the rest fit in `max_bytes`
    (`keep`, the file just written, goes last); returns how many were deleted."""
    entries = []
    for path in Path(cache_dir).glob("*.safetensors"):
        with contextlib.suppress(OSError):
            info = path.stat()
            entries.append((path == keep, info.st_mtime, info.st_size, path))
    total = sum(size for _, _, size, _ in entries)
    removed = 0
    for _, _, size, path in sorted(entries, key=lambda e: (e[0], e[1])):
        if total <= max_bytes:
            break
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
        total -= size
    return removed


def _prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    # Class-major order: prompt i belongs to class i // len(templates).
    return [fill_template(template, name) for name in classnames for template in templates]


@torch.no_grad()
def build_class_embeddings(model: torch.nn.Module, classnames: str | Sequence[str], templates: str | Sequence[str],
                           batch_size: int = 256, device: str | torch.device | None = None,
                           progress: bool = True) -> torch.Tensor:
    """Return float32 [num_classes, embed_dim] unit vectors (on `device`).

    `classnames`: a list, or one string of comma-separated labels; `templates`: a list, or one string as
    `get_templates` reads it (a template with ``{}``, a set name, a file): never one item per character
    (`clipforge.zeroshot.inputs`).

    Prompts are tokenised once, sorted by EOT position and encoded in batches of similar
    length; each prompt's normalised feature is added to its class's sum, so memory stays
    [num_classes, embed_dim] however many templates there are.
    """
    from clipforge.text import tokenize_for
    from clipforge.zeroshot.inputs import class_names
    from clipforge.zeroshot.prompts import get_templates

    if isinstance(classnames, str):
        classnames = class_names(classnames)
    if isinstance(templates, str):
        templates = get_templates(templates)
    if not classnames:
        raise ValueError("no class names given")
    if not templates:
        raise ValueError("no templates given")
    context_length = int(getattr(model, "context_length", 77))
    tokens = tokenize_for(model, _prompts(classnames, templates), context_length)  # the model's own tokenizer
    return class_embeddings_of_tokens(model, tokens, len(templates), batch_size, device, progress)


@torch.no_grad()
def class_embeddings_of_tokens(model: torch.nn.Module, tokens: torch.Tensor, num_templates: int,
                               batch_size: int = 256, device: str | torch.device | None = None,
                               progress: bool = True) -> torch.Tensor:
    """float32 [num_classes, embed_dim] unit vectors from token rows in class-major order (row i is class
    i // num_templates): the mean of each class's normalised prompt features, normalised. The one loop behind
    `build_class_embeddings` and open_clip's `build_zero_shot_classifier` (`zeroshot.open_clip_api`), whose callers
    tokenize themselves."""
    if num_templates < 1 or len(tokens) == 0 or len(tokens) % num_templates:
        raise ValueError(f"{len(tokens)} prompts are not a whole number of classes of {num_templates} templates")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    sums = torch.zeros(len(tokens) // num_templates, int(model.embed_dim), dtype=torch.float32, device=device)
    for idx, features in _unit_features(model, tokens, batch_size, device, progress, "prompt", "class embeddings"):
        sums.index_add_(0, idx // num_templates, features)
    mean = sums / num_templates
    return mean / mean.norm(dim=-1, keepdim=True)


@torch.no_grad()
def encode_texts(model: torch.nn.Module, texts: str | Sequence[str], batch_size: int = 256,
                 device: str | torch.device | None = None, progress: bool = True) -> torch.Tensor:
    """Normalised float32 text features [len(texts), embed_dim] in input order, computed in
    batches of similar token length (the same trick as `build_class_embeddings`); one string is one text."""
    from clipforge.text import tokenize_for
    from clipforge.zeroshot.inputs import text_list

    texts = text_list(texts)

    device = torch.device(device) if device is not None else next(model.parameters()).device
    tokens = tokenize_for(model, list(texts), int(getattr(model, "context_length", 77)))
    out = torch.empty(len(texts), int(model.embed_dim), dtype=torch.float32, device=device)
    for idx, features in _unit_features(model, tokens, batch_size, device, progress, "text", "texts"):
        out[idx] = features
    return out


def _unit_features(model: torch.nn.Module, tokens: torch.Tensor, batch_size: int, device: torch.device,
                   progress: bool, unit: str, desc: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(row indices on `device`, their normalised float32 features) for every row of `tokens`, in batches
    of similar token length: sorted by end-token position, each batch stops at its own longest prompt
    (`CLIP.encode_text`), so a batch of short prompts never pays for a long one. `stop_when` ends it."""
    order = torch.argsort(tokens.argmax(dim=-1), stable=True)
    batch_size = _chunk(batch_size)
    with tqdm(total=len(order), unit=unit, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            _check_stop()
            idx = order[start:start + batch_size]
            features = model.encode_text(tokens[idx].to(device)).float()
            yield idx.to(device), features / features.norm(dim=-1, keepdim=True)
            bar.update(len(idx))
