"""Write checkpoints as safetensors, with the architecture config riding along as metadata.

safetensors cannot run code when read, which is why it is the format clipforge writes. The
config is stored because shapes do not determine everything (a text tower's head count), so
a file written here rebuilds exactly the model that was saved.

The languages the weights were trained for ride along too (``clipforge_languages``, a JSON list such as
``["zh", "en"]``): a checkpoint fine-tuned from clipforge-tiny-zh recorded none and was taken for English
(a false "trained for en only" notice on Chinese queries, English prompts by default). They are a key of
their own, not a field of the config: ``languages`` there is a family knob, and a ResNet CLIP's config with
it would be built as a `FamilyCLIP` (which refuses ResNets) by every clipforge, this one and older ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CONFIG_KEY = "clipforge_config"
PREPROCESS_KEY = "clipforge_preprocess"
LANGUAGES_KEY = "clipforge_languages"
MAX_CONFIG_CHARS = 100_000
MAX_LANGUAGES = 8


def model_config(model: torch.nn.Module) -> dict[str, Any]:
    """The constructor arguments of a built CLIP, read back from its shapes and attention heads
    (a family model keeps the config it was built from: that is returned as it is)."""
    from clipforge.models import config_from_state_dict

    if isinstance(getattr(model, "arch_config", None), dict):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in model.arch_config.items()}
    own = getattr(model, "config", None)
    if isinstance(own, dict) and isinstance(own.get("bert"), dict):  # Chinese-CLIP: its constructor config
        return {k: list(v) if isinstance(v, tuple) else v for k, v in own.items()}

    config = config_from_state_dict(model.state_dict())
    blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
    if blocks is not None and len(blocks) and hasattr(blocks[0].attn, "heads"):
        config["transformer_heads"] = int(blocks[0].attn.heads)
    # What shapes cannot show, read from the model itself: a file must rebuild the same numbers.
    config["activation"] = str(getattr(model, "activation", "quick_gelu"))
    for key, default in (("vision_head_width", 64), ("vision_mlp_ratio", 4.0)):
        value = getattr(model, key, default)
        config.pop(key, None)
        if value != default:
            config[key] = value
    return config


def _atomic_write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    from clipforge.atomic import write_atomic

    plain = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    write_atomic(path, lambda tmp: save_file(plain, str(tmp), metadata=metadata))


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def save_safetensors(model_or_state_dict: torch.nn.Module | dict[str, torch.Tensor],
                     path: str | os.PathLike[str], config: dict[str, Any] | None = None,
                     preprocess: dict[str, Any] | None = None, languages: Sequence[str] | None = None) -> Path:
    """Save weights (OpenAI layout) to `path`, atomically, with `config` as JSON metadata.

    Given a model and no config, the model's own config is stored (activation included);
    given a bare state dict and no config, none is stored and loaders fall back to inferring
    it from shapes. `preprocess` (mean, std, interpolation, resize_mode; default: the
    model's ``preprocess_cfg`` when registry weights set one) is stored beside it, so the
    file rebuilds the same features from the same pixels. `languages` (default: the model's
    ``languages``, which the trainer and Chinese-CLIP's loader set) is stored as ``clipforge_languages``.
    """
    import torch

    if isinstance(model_or_state_dict, torch.nn.Module):
        state_dict = model_or_state_dict.state_dict()
        if config is None:
            config = model_config(model_or_state_dict)
        if preprocess is None:
            preprocess = getattr(model_or_state_dict, "preprocess_cfg", None)
        if languages is None:
            languages = getattr(model_or_state_dict, "languages", None)
    else:
        state_dict = dict(model_or_state_dict)
    metadata = {"format": "pt"}
    if config is not None:
        metadata[CONFIG_KEY] = json.dumps(_jsonable(config), sort_keys=True)
    if preprocess is not None:
        metadata[PREPROCESS_KEY] = json.dumps(_jsonable(dict(preprocess)), sort_keys=True)
    if languages:
        checked = _checked_languages(list(languages))
        if checked is None:
            raise ValueError(f"languages must be 1-{MAX_LANGUAGES} language codes (e.g. ['zh', 'en']), "
                             f"got {list(languages)!r}")
        metadata[LANGUAGES_KEY] = json.dumps(list(checked))
    path = Path(path)
    _atomic_write_safetensors(state_dict, path, metadata)
    return path


def config_from_metadata(metadata: dict[str, str] | None, source: object = "") -> dict[str, Any] | None:
    """The config `save_safetensors` stored, ready for `CLIP(**config)`; None when absent."""
    from clipforge.models import ConfigError, validate_config
    from clipforge.weights.errors import CheckpointFormatError

    if not metadata or CONFIG_KEY not in metadata:
        return None
    text = metadata[CONFIG_KEY]
    if len(text) > MAX_CONFIG_CHARS:
        raise CheckpointFormatError(f"{source}: metadata {CONFIG_KEY!r} is {len(text)} characters long; "
                                    f"a model config is a few hundred")
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise CheckpointFormatError(f"{source}: metadata {CONFIG_KEY!r} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise CheckpointFormatError(f"{source}: metadata {CONFIG_KEY!r} is not a JSON object")
    try:
        # Files written before the activation was recorded came from clipforge 0.1, whose only
        # activation was QuickGELU: a missing key keeps meaning that.
        return validate_config(config)
    except ConfigError as err:
        raise CheckpointFormatError(f"{source}: metadata {CONFIG_KEY!r}: {err}") from None


def preprocess_from_metadata(metadata: dict[str, str] | None, source: object = "") -> dict[str, Any] | None:
    """The preprocessing `save_safetensors` stored (checked), or None when the file has none."""
    from clipforge.weights.errors import CheckpointFormatError
    from clipforge.weights.preprocess_cfg import PreprocessConfigError, validate_preprocess

    if not metadata or PREPROCESS_KEY not in metadata:
        return None
    try:
        return validate_preprocess(json.loads(metadata[PREPROCESS_KEY][:MAX_CONFIG_CHARS]))
    except (ValueError, RecursionError) as err:
        kind = "invalid" if isinstance(err, PreprocessConfigError) else "not valid JSON"
        raise CheckpointFormatError(f"{source}: metadata {PREPROCESS_KEY!r} is {kind}: {err}") from None


def _checked_languages(value: Any) -> tuple[str, ...] | None:
    """`value` as language codes when it is a list of 1-8 short strings (the family config's rule), else None."""
    if not isinstance(value, list) or not 0 < len(value) <= MAX_LANGUAGES:
        return None
    if not all(isinstance(code, str) and 0 < len(code) <= 16 and code.strip() == code for code in value):
        return None
    return tuple(value)


def languages_from_metadata(metadata: dict[str, str] | None) -> tuple[str, ...] | None:
    """The languages `save_safetensors` recorded, or None when the file records none (or nothing usable: the
    record only picks prompts and notices, so a bad one is passed over rather than stopping a load)."""
    if not metadata or LANGUAGES_KEY not in metadata:
        return None
    try:
        return _checked_languages(json.loads(metadata[LANGUAGES_KEY][:MAX_CONFIG_CHARS]))
    except (ValueError, RecursionError):
        return None


def file_languages(path: str | os.PathLike[str]) -> tuple[str, ...] | None:
    """The languages a clipforge ``.safetensors`` file records (header only, no torch); None for other files,
    files that record none, and files that cannot be read (the loader names those)."""
    from clipforge.weights.errors import CheckpointFormatError

    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        return languages_from_metadata(read_metadata(path))
    except CheckpointFormatError:
        return None


def recorded_languages(path: str | os.PathLike[str]) -> tuple[str, ...] | None:
    """The languages weights at `path` record: a clipforge ``.safetensors`` file's ``clipforge_languages``, else a
    ``languages.json`` (``{"languages": [...]}``) in the model's folder (the shipped clipforge-tiny-zh's); None when
    neither says (the loader then leaves the model's languages to its family). ``languages.json`` is read by the one
    bounded reader (`errors.json_value`, at most 1 MB: a real one is under 100 bytes); one that cannot be read (too
    large, a FIFO, nested past the decoder's depth) is passed over like any unusable record, never waited on."""
    from clipforge.weights.errors import CheckpointFormatError, json_value

    path = Path(path)
    if not path.exists():  # a bare name (`clipforge-tiny`, `RN50`): a ./languages.json must not speak for it
        return None
    if recorded := file_languages(path):
        return recorded
    folder = path if path.is_dir() else path.parent
    if not (folder / "languages.json").exists():
        return None
    try:
        data = json_value(folder / "languages.json")
    except CheckpointFormatError:
        return None
    listed = data.get("languages") if isinstance(data, dict) else None
    return _checked_languages([str(code) for code in listed]) if isinstance(listed, list) else None


def read_metadata(path: Path) -> dict[str, str] | None:
    """A safetensors file's metadata from its header alone, without torch (`clipforge models` lists the shipped
    models' configs without importing it); a damaged file is one `CheckpointFormatError` line."""
    from safetensors import SafetensorError, safe_open

    from clipforge.weights.damaged import safetensors_refusal
    from clipforge.weights.errors import CheckpointFormatError

    if (refusal := safetensors_refusal(path)) is not None:  # a FIFO; more tensors than any CLIP, before the parse
        raise CheckpointFormatError(refusal)
    try:
        with safe_open(str(path), framework="numpy") as fh:
            return fh.metadata()
    except (SafetensorError, OSError) as err:
        raise CheckpointFormatError(f"cannot read {path} as safetensors: {err}") from None
