"""What a model spec resolves to (`_Source`) and the small facts `clipforge.api.load_model` asks about one.

Which weights a bare architecture name means (`_default_tag`), whether a tag is the registry's
(`_is_registry_tag`), seeded random weights (`_random_model`, `seeded`), a file's cached fingerprint
(`_known_fingerprint`) and where a family's downloaded tokenizer lies (`_cached_tokenizer_dirs`). None of
them decides anything about a spec on its own: `clipforge.api.resolve_spec` and `load_model` do.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from clipforge.models import CLIP, OPENAI_MODELS, create_model_from_config, get_config

Spec = str | os.PathLike[str]


@dataclass(frozen=True)
class _Source:
    """What a spec resolved to: a checkpoint to read, or an architecture to initialise randomly."""

    name: str
    checkpoint: Path | None = None
    random_arch: str | None = None
    weights: str = ""
    arch: str | None = None  # the architecture the user named for a checkpoint file (its activation)
    activation: str | None = None  # registry weights: the activation they were trained with
    preprocess_cfg: dict | None = None  # registry weights: their mean/std/interpolation/resize mode
    note: str | None = None  # said as a warning when the model is built
    tokenizer_dir: str | None = None  # registry weights: where their tokenizer file was downloaded


def _cached_tokenizer_dirs(model: torch.nn.Module, download_root: Spec | None) -> tuple[str, ...]:
    """Where a family's tokenizer file lands when downloaded (`weights.zoo.download_tokenizer`)."""
    spec = getattr(model, "tokenizer_cfg", None) or {}
    if not spec.get("hub_repo"):
        return ()
    from clipforge.weights.registry import cache_dir

    return (str(cache_dir(download_root) / "tokenizers" / str(spec["hub_repo"]).replace("/", "--")),)


def offline_test_configs() -> list[str]:
    """The test configs (``test-*``: random weights for tests and smoke runs) that run with nothing beside them:
    those read with OpenAI's BPE, which ships. The others (SigLIP's, CLIPA's, the transformers towers') read a
    tokenizer file sized to their 512-token towers that no install has (the tests write one beside a saved
    checkpoint), so they are not offered where a user is told what to pass."""
    from clipforge.models import ARCH_CONFIGS

    return [name for name, config in ARCH_CONFIGS.items() if name.startswith("test-")
            and (config.get("tokenizer") or {}).get("kind", "openai-bpe") == "openai-bpe"]


def _default_tag(arch: str) -> str | None:
    """The weights a bare architecture name means (open_clip zoo entries may add theirs here)."""
    return "openai" if arch in OPENAI_MODELS else None


def _is_registry_tag(arch: str, tag: str) -> bool:
    """Registry tags win over same-named files: `ViT-B/32` with pretrained="openai" never reads ./openai."""
    from clipforge.weights.registry import list_pretrained_tags_by_model

    return tag in list_pretrained_tags_by_model(arch)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's CPU generator seeded with `seed` inside, the caller's state given back after: random weights follow
    the seed alone, and a notebook's later shuffles, dropout masks and samples are what they would have been. The
    one save and restore of every random model (`_random_model`; Chinese-CLIP's ``random:cn-*``, drawn in the
    loader hook `weights.cn_clip_load`, which reseeded the process for good: audit 65 citizen #4). Only the CPU
    generator: models are built there, and `torch.manual_seed` would queue a reseed of every CUDA one too. Random
    models built in threads at once take turns (`_SEEDING`): the generator is the process's, and two interleaved
    builds drew from each other's streams (review 65); a caller's own draws in another thread meanwhile are its own."""
    with _SEEDING:
        state = torch.random.get_rng_state()
        torch.random.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            torch.random.set_rng_state(state)


_SEEDING = threading.RLock()  # re-entrant: a random Chinese-CLIP's loader hook runs inside load_model's `seeded`


def _random_model(arch: str, seed: int) -> CLIP:
    """Seeded random weights without disturbing the caller's random state (`seeded`)."""
    with seeded(seed):
        return create_model_from_config(get_config(arch))


def _known_fingerprint(path: Path) -> tuple[str | None, str | None]:
    """(the file's identity, its cached weights digest or None) (`clipforge.weights.fingerprint`)."""
    from clipforge.weights.fingerprint import cached_file_fingerprint, file_identity

    identity = file_identity(path)
    return identity, cached_file_fingerprint(identity)
