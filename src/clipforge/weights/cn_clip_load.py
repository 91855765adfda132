"""The loader hook for Chinese-CLIP: what `clipforge.api.load_model` asks before its own resolution.

Apart from `clipforge.weights.cn_clip` (layouts and HF folders) because it downloads: `cn_clip` is
what `save_hf` reaches, and the downloader reaches `save_hf`'s module through the loader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from clipforge.weights.cn_clip import (
    CN_CLIP_WEIGHTS,
    OPENAI_MEAN,
    OPENAI_STD,
    cn_clip_state_dict,
    cn_config,
    expected_cn_shapes,
    is_cn_clip_state_dict,
    read_cn_torch_file,
    read_transformers_folder,
)
from clipforge.weights.errors import CheckpointFormatError, json_object

# ---- the loader hook: what `clipforge.api.load_model` asks before its own resolution ---------------------
_TORCH_FILES = (".pt", ".pth", ".bin")


def _read_torch(path: Path, strict: bool = False) -> Any:
    """What a torch checkpoint holds, read by the one safe reader (`torch_load_safely`, memory-mapped: a cheap
    look for the hook).

    `strict` (a registry file, or ``cn-*:PATH``: it must be Chinese-CLIP's): read as Chinese-CLIP's download
    check reads one (`read_cn_torch_file`: TorchScript by the restricted reader), its refusal raised as it is,
    the generic loader's one line. Otherwise anything unreadable this way (TorchScript archives, a damaged or
    unsafe file) is not taken as a cn_clip checkpoint and is left to the project's own loader, which reads
    it the same way and refuses it with the same line.

    Only a file whose pickle names Chinese-CLIP's marking tensors is unpickled here (`names_all`: its strings read
    with `pickletools`, nothing run): every other ``.pt`` was unpickled twice, here and by the generic loader,
    and torch's warnings (a protocol 4 pickle's) printed twice."""
    from clipforge.weights.cn_clip import _MARKS
    from clipforge.weights.torch_pickle import names_all, torch_load_safely
    from clipforge.weights.torchscript import is_torchscript_archive

    if strict:
        return read_cn_torch_file(path)
    if is_torchscript_archive(path):  # OpenAI's files: never cn_clip's, and torch.load on one printed
        return {}  # "warning: ... dispatching to 'torch.jit.load'" (which would run the archive's code)
    if not names_all(path, _MARKS):  # not Chinese-CLIP's: left unread, so the generic loader unpickles it once
        return {}
    try:
        return torch_load_safely(path, mmap=True)
    except Exception:  # noqa: BLE001 - whatever it is, it is the main loader's to judge
        return {}


def _read_safetensors(path: Path, arch: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(state dict, config) of a Chinese-CLIP safetensors file (what `clipforge wise-ft` writes for one),
    else None: only the tensor names are read to decide, so other files cost nothing here. The config
    comes from the file's metadata when `save_safetensors` stored one with a ``bert`` part, else from shapes.
    `arch` (``cn-*:PATH``): the file must be one, so damage and other tensors are refused, naming the file."""
    from safetensors import safe_open

    from clipforge.weights.save import CONFIG_KEY, MAX_CONFIG_CHARS

    if arch is not None:
        from clipforge.weights.safetensors_file import read_safetensors as read_whole

        state, metadata = read_whole(path)  # damage: the generic loader's one line
    else:
        from clipforge.weights.damaged import safetensors_refusal, too_many_tensors

        if (refusal := safetensors_refusal(path)) is not None:  # before safetensors parses the header: the
            raise CheckpointFormatError(refusal)  # generic loader's line, without listing 900,000 names first
        try:
            with safe_open(str(path), framework="pt") as handle:
                names = list(handle.keys())  # noqa: SIM118 - a safetensors handle is not a mapping
                refusal = too_many_tensors(path, len(names))  # a header that hid its count: raised below
                if refusal is not None or not is_cn_clip_state_dict(dict.fromkeys(names)):
                    names = None
                else:
                    metadata = handle.metadata() or {}
                    state = {key: handle.get_tensor(key) for key in names}
        except Exception:  # noqa: BLE001 - not readable as safetensors: the main loader explains it
            return None
        if refusal is not None:
            raise CheckpointFormatError(refusal)
        if names is None:
            return None
    state = _cn_state(state, path, arch)
    shapes = cn_config(state, path)
    text = (metadata or {}).get(CONFIG_KEY, "")
    try:
        stored = json.loads(text) if 0 < len(text) <= MAX_CONFIG_CHARS else None
    except ValueError:
        stored = None
    if isinstance(stored, dict) and isinstance(stored.get("bert"), dict):
        shapes["bert"].update({k: v for k, v in stored["bert"].items() if k == "num_attention_heads"})
        if isinstance(stored.get("vision_head_width"), int):
            shapes["vision_head_width"] = stored["vision_head_width"]
    return state, shapes


def _is_safetensors(path: Path) -> bool:
    """Whether `path` starts as a safetensors file (its header length, then ``{``), whatever its name."""
    from clipforge.weights.loading import _looks_like_safetensors

    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
        return _looks_like_safetensors(head, path.stat().st_size)
    except OSError:
        return False


def _finish(model: Any) -> Any:
    """Attributes every Chinese-CLIP carries: its tokenizer, languages and preprocessing."""
    from clipforge.text.wordpiece import get_wordpiece_tokenizer

    model.tokenizer = get_wordpiece_tokenizer()  # callable: texts -> [N, 52] ids (see clipforge.text.wordpiece)
    model.languages = ("zh",)
    model.preprocess_cfg = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                            "resize_mode": "squash"}
    return model.eval()


def _folder_preprocess(model: Any, path: Path) -> Any:
    """A ChineseCLIPModel folder's own image processor, read by the one reader (`hf_preprocess`): a folder
    transformers 5's ``ChineseCLIPProcessor`` saved resizes the shortest side and crops the centre, and was
    squashed (image-feature cosine 0.9955 to transformers'). The hub's OFA-Sys files (size {height, width},
    ``do_center_crop`` false) squash, as cn_clip does; a folder without one, and every cn_clip checkpoint,
    keep cn_clip's transform (`_finish`)."""
    if path.is_dir():
        from clipforge.weights.hf_preprocess import read_hf_preprocess

        found = read_hf_preprocess(path, int(model.visual.input_resolution), model.preprocess_cfg)
        model.preprocess_cfg = found or model.preprocess_cfg
    return model


def load_chinese_clip(spec: str | os.PathLike[str], download_root: str | os.PathLike[str] | None = None,
                      seed: int = 0) -> tuple[Any, str, str] | None:
    """(model, name, weights) when `spec` is a Chinese-CLIP: ``cn-*`` (registry weights, downloaded and
    verified), ``random:cn-*``, ``cn-*:PATH`` (a file or folder of that architecture, as ``ARCH:PATH`` is for
    OpenAI's), a cn_clip checkpoint file, or a ChineseCLIPModel folder; else None, so `load_model` goes on with
    its own resolution. Models come back fp32 in eval mode on the CPU. ``random:cn-*`` weights are drawn from torch's
    generator as it stands: `load_model` calls this under `clipforge.api.sources.seeded` (`seed`, here the label).

    A file that is Chinese-CLIP's by its names (or by the ``cn-*`` before it) but holds something else (a list,
    a bare tensor, a ``state_dict`` that is no dict, missing or misshapen tensors) is one
    `CheckpointFormatError` line naming the file and what was expected."""
    from clipforge.models.chinese_clip import CHINESE_CLIP_CONFIGS, create_chinese_clip

    text = os.fspath(spec)
    text = text.removesuffix(":cn_clip") if text.removesuffix(":cn_clip") in CN_CLIP_WEIGHTS else text  # ARCH:TAG
    if text.startswith("random:") and text[7:] in CHINESE_CLIP_CONFIGS:  # drawn from the generator `load_model`
        # seeded with `seed` and gives back (`api.sources.seeded`): seeding it here reset the caller's for good
        return _finish(create_chinese_clip(text[7:])), text[7:], f"random (seed {seed})"
    if text in CN_CLIP_WEIGHTS:
        from clipforge.weights.cn_clip_data import TAG
        from clipforge.weights.download import download_pretrained

        # the registry's one verified path: refused without a pin unless opted in, then every tensor's shape checked
        path = download_pretrained(text, download_root, tag=TAG)
        state = _cn_state(_read_torch(path, strict=True), path, text)
        # its shapes were checked against `text` when it was accepted into the cache: checked here against the model
        # they describe (building `text` on the meta device again cost 0.3-1 s a command)
        return _from_file(_finish(_build(state, cn_config(state, path), path)), path), text, text
    path = Path(text).expanduser()
    arch, colon, tail = text.partition(":")
    if arch in CHINESE_CLIP_CONFIGS and colon and not path.exists():  # cn-ARCH:PATH
        return _load_as(arch, tail)
    found = _read_local(path)
    if found is None:
        return None
    state, ours, where = found
    model = _folder_preprocess(_finish(_build(state, ours, where)), path)
    return _from_file(model, path), path.name, str(path.resolve())


def _read_local(path: Path, arch: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path] | None:
    """(state dict, constructor config, the file they came from) of a Chinese-CLIP file or folder at `path`, else
    None (another model's: the generic loader reads it). `arch` (``cn-*:PATH``): the user said it is one, so a
    file that is none is refused, naming what it holds."""
    if path.is_dir() and (path / "config.json").exists():
        try:  # the one reader (bounded, one line): a deeply nested config.json was a RecursionError traceback here
            config = json_object(path / "config.json")
        except CheckpointFormatError:
            if arch is not None:
                raise
            return None  # unreadable (too large, no regular file, not JSON): the generic reader says so in one line
        if arch is None and config.get("model_type") != "chinese_clip":
            return None
        state, ours = read_transformers_folder(path)
        return state, ours, path
    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    if suffix == ".safetensors" or (arch is not None and _is_safetensors(path)):
        found = _read_safetensors(path, arch)
        return None if found is None else (*found, path)
    if suffix in _TORCH_FILES or arch is not None:
        data = _read_torch(path, strict=arch is not None)
        inner = data.get("state_dict", data) if isinstance(data, dict) else data
        if arch is None and (not isinstance(inner, dict) or not is_cn_clip_state_dict(inner)):
            return None
        state = _cn_state(data, path, arch)
        return state, cn_config(state, path), path
    return None


def _load_as(arch: str, tail: str) -> tuple[Any, str, str]:
    """``cn-ARCH:PATH``: the Chinese-CLIP file or ChineseCLIPModel folder at PATH, whose tensors must be exactly
    `arch`'s (`check_shapes`), built with `arch`'s head counts and named after the resolved file, as ``ARCH:PATH``
    is. Nothing after the colon (``cn-ARCH:``, ``pretrained=""``) is a ValueError: ``Path("")`` is the current
    directory, which was read as the checkpoint."""
    from clipforge.models.chinese_clip import chinese_clip_config
    from clipforge.weights.errors import CheckpointFormatError

    if not tail.strip():  # Path("") is ".": the current directory was read as the checkpoint
        raise ValueError(f"model {arch + ':' + tail!r} names no file or tag after the colon: pass {arch} for its "
                         f"registry weights or {arch}:PATH for a Chinese-CLIP checkpoint or ChineseCLIPModel folder")
    path = Path(tail).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model {arch}:{tail}: {tail!r} is neither a tag of {arch}'s weights (cn_clip: "
                                f"{arch} alone downloads them) nor an existing file or folder; {arch}:PATH loads a "
                                "Chinese-CLIP checkpoint or ChineseCLIPModel folder")
    found = _read_local(path, arch)
    if found is None:
        raise CheckpointFormatError(f"{path} does not hold {arch} weights: expected a cn_clip checkpoint (.pt), "
                                    "a safetensors file of one, or a ChineseCLIPModel folder (config.json + weights)")
    state, ours, where = found
    named = chinese_clip_config(arch)
    ours = {**ours, "vision_head_width": named["vision_head_width"],
            "bert": {**ours["bert"], "num_attention_heads": named["bert"]["num_attention_heads"]}}
    model = _folder_preprocess(_finish(_build(state, ours, where, arch)), path)
    # named after the file itself, as ARCH:PATH is: "cn-ARCH:." was "cn-ARCH:", a link was named for the link
    return _from_file(model, path), f"{arch}:{path.resolve().name}", str(path.resolve())


def _cn_state(data: Any, path: Path, arch: str | None) -> dict[str, torch.Tensor]:
    """`cn_clip_state_dict` of what `path` held, its refusal one line naming the file (and `arch`, if named)."""
    from clipforge.weights.errors import CheckpointFormatError

    try:
        return cn_clip_state_dict(data)
    except ValueError as err:
        what = f" does not hold {arch} weights" if arch else ""
        raise CheckpointFormatError(f"{path}{what}: {err}") from None


def _build(state: dict[str, torch.Tensor], ours: dict[str, Any], where: Path, arch: str | None = None) -> Any:
    """A `ChineseCLIP` holding exactly `state`. Its tensors are checked first, against `arch` when the user named
    one, else against the model their shapes describe: torch's multi-line "Error(s) in loading state_dict"
    traceback became one line naming the file and the first difference."""
    from clipforge.models.chinese_clip import ChineseCLIP
    from clipforge.weights.errors import CheckpointFormatError, check_shapes, shape_difference

    if arch is not None:
        check_shapes(str(where), arch, state, expected_cn_shapes(arch))
    try:
        model = ChineseCLIP(**ours)
    except (ValueError, TypeError, ZeroDivisionError) as err:  # head counts that do not divide the widths
        raise CheckpointFormatError(f"{where}: its tensors and settings make no Chinese-CLIP ({err})") from None
    expected = {k: tuple(v.shape) for k, v in cn_clip_state_dict(model.state_dict()).items()}
    if (difference := shape_difference(state, expected)) is not None:
        count, want, first = difference
        raise CheckpointFormatError(f"{where} is not a whole Chinese-CLIP checkpoint: {count:,} parameters where "
                                    f"the model its shapes describe has {want:,}; {first}")
    model.load_state_dict(state, strict=True)
    return model


def _from_file(model: Any, path: Path) -> Any:
    """`model`, marked as holding exactly `path`'s tensors: its fingerprint (what a library is keyed by)
    comes from the fingerprint cache after the first command hashed the file (`weights.fingerprint`),
    as for every other checkpoint: 0.3-1 s of hashing per command otherwise. A clipforge safetensors file's own
    records win over cn_clip's defaults (`_finish`): its preprocessing (a model trained from a cropping folder
    was squashed after reloading) and its languages (``["zh", "en"]`` came back as zh only)."""
    from clipforge.weights.fingerprint import seed_from_file
    from clipforge.weights.save import languages_from_metadata, preprocess_from_metadata, read_metadata

    seed_from_file(model, path)
    if path.is_file() and _is_safetensors(path):
        metadata = read_metadata(path)
        model.preprocess_cfg = preprocess_from_metadata(metadata, path) or model.preprocess_cfg
        model.languages = languages_from_metadata(metadata) or model.languages
    return model
