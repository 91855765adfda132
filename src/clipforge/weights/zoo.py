"""From a name the user gave to (architecture config, checkpoint file, preprocessing), never silently wrong.

Three cases, one rule: the activation and preprocessing always come from something that knows.

- Registry weights (``ViT-B-32:laion2b_s34b_b79k``): the entry knows both. When the name the
  user gave means another activation than the weights were trained with (open_clip's
  ``ViT-B-32`` + ``laion400m_e31``, QuickGELU weights), the weights win and a note says so.
- A file that records them (clipforge's safetensors, a Hugging Face folder, OpenAI's archives).
- A plain state dict, which cannot know: with an architecture name (``ViT-B-32:/path/ckpt.pt``,
  ``create_model("ViT-B-32", pretrained=path)``) that name's activation is used; without one
  the shapes pick QuickGELU for OpenAI's shapes (what OpenAI's and clipforge 0.1's files are)
  and for shapes of no published architecture (clipforge's own training), GELU for shapes only
  open_clip publishes (its default), and a note says which was assumed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clipforge.weights.errors import CheckpointFormatError
from clipforge.weights.loading import Checkpoint
from clipforge.weights.registry import PretrainedWeights

__all__ = ["activation_note", "checkpoint_config", "download_entry", "download_tokenizer"]


def activation_note(arch: str, entry: PretrainedWeights) -> str | None:
    """Why the weights' activation overrides the one `arch` means (None when they agree, and for
    ``pretrained="openai"``, which means QuickGELU under every spelling, as in open_clip)."""
    from clipforge.models import activation_of, get_config

    asked = activation_of(get_config(arch))
    if asked == entry.activation or entry.tag == "openai":
        return None
    return (f"{arch}:{entry.tag} weights were trained with {entry.activation}; building {entry.name} "
            f"(the name {arch} alone means {asked}, which would give wrong features)")


def download_entry(arch: str, entry: PretrainedWeights, root: str | os.PathLike[str] | None = None,
                   progress: bool = True) -> Path:
    """The verified local file of a registry entry (looked up on `clipforge.weights` at call time,
    so tests and tools can substitute the downloader)."""
    import clipforge.weights as weights

    if entry.tag == "openai":  # OpenAI's checkpoint, by its OpenAI name
        return weights.download_pretrained(entry.name, root=root)
    return weights.download_pretrained(arch, root=root, tag=entry.tag, progress=progress)


def download_tokenizer(arch: str, root: str | os.PathLike[str] | None = None, progress: bool = True) -> Path | None:
    """The folder holding `arch`'s tokenizer file (SentencePiece / tokenizers JSON), fetched from
    the hub repository its config names into ``<cache>/tokenizers/<repo>/`` through the verified
    downloader; None for OpenAI's BPE (shipped in the package)."""
    import clipforge.weights as weights
    from clipforge.models.configs import ARCH_CONFIGS
    from clipforge.weights.registry import HF_ENDPOINT_ENV, cache_dir

    spec = ARCH_CONFIGS.get(arch, {}).get("tokenizer") or {}
    repo, name = spec.get("hub_repo"), spec.get("file")
    if not repo or not name:
        return None
    folder = cache_dir(root) / "tokenizers" / str(repo).replace("/", "--")
    endpoint = os.environ.get(HF_ENDPOINT_ENV, "").rstrip("/") or "https://huggingface.co"
    for file in (name, *spec.get("extra_files", ())):  # transformers' tokenizers: their config files too
        if not (folder / file).is_file():
            weights.download(f"{endpoint}/{repo}/resolve/main/{file}", folder, None, filename=file, progress=progress)
    return folder


def checkpoint_config(checkpoint: Checkpoint, arch: str | None = None) -> tuple[dict[str, Any], str | None]:
    """The config to build `checkpoint` with, and a note when its activation had to be assumed.

    `arch` is the architecture the user named for these weights; its shapes must fit the
    file's (a mismatch is an error, not a silent rebuild), and for plain state dicts its
    activation is used.
    """
    from clipforge.models import (
        OPENAI_MODELS,
        activation_of,
        config_from_state_dict,
        get_config,
        matching_architectures,
    )
    from clipforge.models.configs import same_shape

    try:
        inferred = checkpoint.config or config_from_state_dict(checkpoint.state_dict)
    except (KeyError, IndexError, ValueError) as err:
        raise CheckpointFormatError(f"{checkpoint.path}: not a CLIP state dict ({err})") from None
    if arch is not None:
        named = get_config(arch)
        if not same_shape(named, inferred):
            raise CheckpointFormatError(f"{checkpoint.path} does not hold {arch} weights: its tensor shapes "
                                        f"are those of {', '.join(matching_architectures(inferred)) or 'no known architecture'}")
        if checkpoint.activation_known and activation_of(inferred) != activation_of(named):
            raise CheckpointFormatError(f"{checkpoint.path} records activation {activation_of(inferred)}, "
                                        f"but {arch} means {activation_of(named)}")
        return (inferred if checkpoint.config else named), None
    if checkpoint.activation_known:
        return {**inferred, "activation": activation_of(inferred)}, None
    from clipforge.models.family_keys import is_family_config

    if is_family_config(inferred) and (inferred.get("activation") == "gelu_tanh" or inferred.get("text_hf")):
        return inferred, None  # SigLIP, transformers towers: one activation each, no -quickgelu twin
    matches = matching_architectures(inferred)
    openai = [m for m in matches if m in OPENAI_MODELS]
    # OpenAI's shapes: QuickGELU (OpenAI's and clipforge 0.1's files). open_clip-only shapes: GELU,
    # open_clip's default. Shapes of no published architecture come from clipforge's own training,
    # whose default is QuickGELU.
    activation = "quick_gelu" if openai or not matches else "gelu"
    shape = (openai or matches or ["no published architecture"])[0]
    quick_name = next((m for m in matches if m.endswith("-quickgelu")), "ARCH-quickgelu")
    gelu_name = quick_name.removesuffix("-quickgelu") if quick_name != "ARCH-quickgelu" else "ARCH"
    other = gelu_name if activation == "quick_gelu" else quick_name
    note = (f"{checkpoint.path.name} is a plain state dict that does not record its activation; assumed "
            f"{activation} (shapes of {shape}); if that is wrong, load it as {other}:{checkpoint.path}")
    return {**inferred, "activation": activation}, note
