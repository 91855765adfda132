"""Chinese-CLIP's weights: registry data, its two published layouts, and a transformers folder writer.

Layouts (the same numbers under different names):
- **cn_clip checkpoints** (``clip_cn_vit-b-16.pt`` ...): ``{"state_dict": {"module.visual...",
  "module.bert...", "module.text_projection", "module.logit_scale"}, ...}``, fp16. Our
  `ChineseCLIP` uses these names, so loading is: unwrap, drop ``module.`` and ``bert.pooler.*``.
- **transformers folders** (``OFA-Sys/chinese-clip-vit-*``, `ChineseCLIPModel`): ``text_model.*`` is
  the BERT tower, ``vision_model.*`` the CLIP ViT in HF names (q/k/v split, ``nn.Embedding``
  positions), ``visual_projection``/``text_projection`` Linear weights (our matrices transposed).
  transformers has no ResNet ChineseCLIP, so cn-RN50 exists only in the first layout.
`to_transformers`/`from_transformers` convert exactly both ways; `save_chinese_hf` writes a folder
`ChineseCLIPModel.from_pretrained` and `ChineseCLIPProcessor.from_pretrained` accept.

Registry: the data is `clipforge.weights.cn_clip_data` (the registry lists the models under the tag
``cn_clip``); downloads go through `download_pretrained`, as every registry file's do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clipforge.weights.cn_clip_data import PUBLISHED, TAG
from clipforge.weights.registry import OPENAI_MEAN, OPENAI_STD, PRETRAINED, PretrainedWeights
from clipforge.weights.torch_pickle import brief, odd_entry, with_article

Tensor = torch.Tensor

__all__ = [
    "CN_CLIP_WEIGHTS", "check_cn_architecture", "cn_clip_state_dict", "config_from_cn_state_dict", "from_transformers",
    "is_cn_clip_state_dict", "save_chinese_hf", "to_transformers",
]

CN_CLIP_WEIGHTS: dict[str, PretrainedWeights] = {name: PRETRAINED[(name, TAG)] for name in PUBLISHED}
"""(name -> weights): the registry's ``(name, "cn_clip")`` entries (`clipforge.list_pretrained()` lists them)."""

_POOLER = re.compile(r"^bert\.pooler\.")
_BUFFERS = re.compile(r"(^|\.)(position_ids|token_type_ids)$")


_MARKS = ("bert.embeddings.word_embeddings.weight", "text_projection")  # what makes a state dict Chinese-CLIP's
_EXPECTED = "expected bert.embeddings.word_embeddings.weight, text_projection and visual.* tensors"


def is_cn_clip_state_dict(state_dict: Mapping[Any, Any]) -> bool:
    """Whether a (possibly wrapped) state dict is Chinese-CLIP's: BERT tower beside OpenAI's visual. Names that
    are not strings (what any pickle may hold) make no state dict Chinese-CLIP's."""
    keys = {k.removeprefix("module.") for k in state_dict if isinstance(k, str)}
    return all(mark in keys for mark in _MARKS)


def cn_clip_state_dict(checkpoint: Any) -> dict[str, Tensor]:
    """Our state dict (fp32) from a cn_clip checkpoint object or its ``state_dict``.

    Raises ValueError saying what the object is instead (a list, a bare tensor, a ``state_dict`` that is no
    dict, a marking tensor that is a list, a sparse, complex, float8 or quantized entry: `odd_entry`): whatever
    ``torch.load`` returned reaches here, and callers put the file's name in front (`CheckpointFormatError` where
    they read a file)."""
    if not isinstance(checkpoint, Mapping):
        held = with_article(type(checkpoint).__name__)
        raise ValueError(f"not a Chinese-CLIP checkpoint: it holds {held}, not a dict of tensors (cn_clip's files "
                         "hold one under 'state_dict')")
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        held = with_article(type(state).__name__)
        raise ValueError(f"not a Chinese-CLIP checkpoint: its 'state_dict' is {held}, not a dict of tensors")
    out = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):  # an epoch count, a name: not a parameter
            continue
        if (odd := odd_entry(key, value)) is not None:  # before `.float()`, which hid float8 and complex
            raise ValueError(odd)
        key = key.removeprefix("module.")
        if _POOLER.match(key) or _BUFFERS.search(key):
            continue
        out[key] = value.float() if value.is_floating_point() else value
    if not is_cn_clip_state_dict(out):
        odd = next((k for k, v in state.items()
                    if isinstance(k, str) and k.removeprefix("module.") in _MARKS and not isinstance(v, Tensor)), None)
        if odd is not None:  # the name is there, its value is no tensor
            held = with_article(type(state[odd]).__name__)
            raise ValueError(f"not a Chinese-CLIP checkpoint: its {odd!r} is {held}, not a tensor")
        raise ValueError(f"not a Chinese-CLIP checkpoint: {_EXPECTED}")
    return out


def config_from_cn_state_dict(sd: dict[str, Tensor]) -> dict[str, Any]:
    """`ChineseCLIP` constructor arguments read from tensor shapes (as cn_clip's configs give them)."""
    bert_layers = len({k.split(".")[3] for k in sd if k.startswith("bert.encoder.layer.")})
    hidden = sd["bert.embeddings.word_embeddings.weight"].shape[1]
    bert = {"vocab_size": sd["bert.embeddings.word_embeddings.weight"].shape[0], "hidden_size": hidden,
            "num_hidden_layers": bert_layers, "num_attention_heads": hidden // 64,
            "intermediate_size": sd["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
            "max_position_embeddings": sd["bert.embeddings.position_embeddings.weight"].shape[0],
            "type_vocab_size": sd["bert.embeddings.token_type_embeddings.weight"].shape[0], "hidden_act": "gelu",
            "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "initializer_range": 0.02, "pad_token_id": 0}
    embed_dim = sd["text_projection"].shape[1]
    if "visual.proj" in sd:
        width, patch = sd["visual.conv1.weight"].shape[0], sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
        return {"embed_dim": embed_dim, "image_resolution": grid * patch, "vision_layers": layers,
                "vision_width": width, "vision_patch_size": patch, "bert": bert,
                "vision_head_width": 80 if width == 1280 else 64}  # ViT-H: 16 heads of 80 (cn_clip's config)
    stages = [len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{i}.")}) for i in (1, 2, 3, 4)]
    grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
    return {"embed_dim": embed_dim, "image_resolution": grid * 32, "vision_layers": stages,
            "vision_width": sd["visual.layer1.0.conv1.weight"].shape[0], "vision_patch_size": None, "bert": bert,
            "vision_head_width": 64}


def _width_disagreement(sd: dict[str, Tensor]) -> str | None:
    """The two projections' embedding widths when they differ. The config takes the width from
    ``text_projection`` alone, so a damaged text projection blamed the intact ``visual.proj``."""
    image = "visual.proj" if "visual.proj" in sd else "visual.attnpool.c_proj.weight"
    text, other = sd["text_projection"], sd.get(image)
    if other is None or text.dim() != 2 or other.dim() != 2:
        return None  # the shape check after the build names what is missing or of another rank
    width = other.shape[1] if image == "visual.proj" else other.shape[0]
    return None if text.shape[1] == width else (f"text_projection {tuple(text.shape)} and {image} {tuple(other.shape)} "
                                                f"disagree on the embedding width ({text.shape[1]} vs {width})")


def cn_config(state: dict[str, Tensor], where: str | os.PathLike[str]) -> dict[str, Any]:
    """`config_from_cn_state_dict`, refused as one `CheckpointFormatError` line naming `where` (the file) when
    the tensors it reads are missing or of another rank: a file can hold Chinese-CLIP's two marking tensors and
    little else (a KeyError traceback before)."""
    from clipforge.weights.errors import CheckpointFormatError

    try:
        config, disagreement = config_from_cn_state_dict(state), _width_disagreement(state)
    except KeyError as err:
        raise CheckpointFormatError(f"{where} is not a whole Chinese-CLIP checkpoint: it lacks {err.args[0]}") from None
    except (IndexError, ValueError, TypeError) as err:
        raise CheckpointFormatError(f"{where} is not a whole Chinese-CLIP checkpoint: its tensors' shapes are "
                                    f"not those of one ({err})") from None
    if disagreement is not None:
        raise CheckpointFormatError(f"{where} is not a whole Chinese-CLIP checkpoint: {disagreement}")
    return config


def expected_cn_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Every tensor Chinese-CLIP `arch` loads (cn_clip's names, no pooler or buffers) and its shape; the model is
    built on the meta device, so this costs no memory for its weights."""
    from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip

    with torch.device("meta"):
        reference = create_chinese_clip(chinese_clip_config(arch)).state_dict()
    return {k: tuple(v.shape) for k, v in cn_clip_state_dict(reference).items()}


def check_cn_architecture(path: str | os.PathLike[str], arch: str) -> None:
    """Refuse a file whose tensors are not exactly those of Chinese-CLIP `arch` (names and shapes): what
    `clipforge.weights.loading.check_architecture` does for the registry's other files, in cn_clip's
    layout. The architecture is built on the meta device (no memory for its weights), and the file's tensors
    are memory-mapped (`torch_load_safely`'s ``mmap``), so checking a ViT-H costs no memory for its weights.

    The file is read as the generic loader reads it: a pickle naming a forbidden global raises that loader's
    `UnsafeCheckpointError` unchanged, and damage (cut short, a web page, bytes no unpickler takes) that
    loader's one-line description, after "<file> does not hold <arch> weights: "."""
    from clipforge.weights.errors import CheckpointFormatError, check_shapes

    name = Path(path).name
    try:  # UnsafeCheckpointError passes as it is
        checkpoint = read_cn_torch_file(path)
    except CheckpointFormatError as err:
        raise CheckpointFormatError(f"{name} does not hold {arch} weights: {err}") from None
    try:
        got = cn_clip_state_dict(checkpoint)
    except ValueError as err:  # readable, but not a cn_clip checkpoint (a list, a bare tensor, other names)
        raise CheckpointFormatError(f"{name} does not hold {arch} weights: {err}") from None
    check_shapes(name, arch, got, expected_cn_shapes(arch))


def read_cn_torch_file(path: str | os.PathLike[str]) -> Any:
    """What a file that should be a cn_clip checkpoint holds, read as the generic loader reads it (TorchScript by
    the restricted reader, its tensors memory-mapped). Bytes that are neither a zip nor a pickle go to no
    unpickler: `damage_of` says what they are (a web page, JSON, an empty file), else one line says they are no
    PyTorch checkpoint. Refusals are the generic loader's `CheckpointFormatError` / `UnsafeCheckpointError`."""
    from clipforge.weights.damaged import damage_of
    from clipforge.weights.errors import CheckpointFormatError
    from clipforge.weights.torch_pickle import read_torch_file

    if Path(path).is_file() and not _zip_or_pickle(path):  # as the generic loader: no unpickler on such bytes
        raise CheckpointFormatError(damage_of(path) or (
            f"{path} is not a PyTorch checkpoint: torch.save writes a zip archive (or a legacy pickle), and its "
            "first bytes are neither"))
    checkpoint, _ = read_torch_file(path, mmap=True)
    return checkpoint


def _zip_or_pickle(path: str | os.PathLike[str]) -> bool:
    """Whether `path` starts as torch.save writes (`torch_pickle.ZIP_HEADS`, `LEGACY_HEAD`): bytes for the
    unpickler, which alone can name a forbidden global. Anything else is first asked what it is (`damage_of`), as
    the generic loader does, so text that happens to parse as a pickle opcode is not called code."""
    from clipforge.weights.torch_pickle import LEGACY_HEAD, ZIP_HEADS

    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith((*ZIP_HEADS, LEGACY_HEAD))


# ---- transformers' ChineseCLIPModel layout -------------------------------------------------------------
_VISION_TOP = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight", "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}
_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
_BLOCK = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_OURS_BLOCK = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.(attn\.in_proj|.+)[._](weight|bias)$")
_HF_BLOCK = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def to_transformers(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our (cn_clip-named) ViT state dict in `ChineseCLIPModel`'s names."""
    if "visual.proj" not in sd:
        raise ValueError("transformers' ChineseCLIPModel has only ViT image towers; cn-RN50 stays in cn_clip's layout")
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key.startswith("bert."):
            out["text_model." + key[5:]] = value
        elif key in _VISION_TOP:
            out[_VISION_TOP[key]] = value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
        elif key == "logit_scale":
            out[key] = value
        elif match := _OURS_BLOCK.match(key):
            block, name, kind = match.groups()
            prefix = f"vision_model.encoder.layers.{block}."
            if name == "attn.in_proj":
                for part, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                    out[f"{prefix}self_attn.{part}_proj.{kind}"] = chunk.contiguous()
            else:
                out[f"{prefix}{_BLOCK[name]}.{kind}"] = value
        else:
            raise ValueError(f"unexpected tensor {key!r} in a Chinese-CLIP state dict")
    return out


def from_transformers(hf: dict[str, Tensor]) -> dict[str, Tensor]:
    """A `ChineseCLIPModel` state dict in our (cn_clip) names; exact inverse of `to_transformers`."""
    top = {v: k for k, v in _VISION_TOP.items()}
    transposed = {v: k for k, v in _TRANSPOSED.items()}
    block_names = {v: k for k, v in _BLOCK.items()}
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in hf.items():
        if _BUFFERS.search(key) or key.startswith("text_model.pooler."):
            continue
        if key.startswith("text_model."):
            out["bert." + key[len("text_model."):]] = value
        elif key in top:
            out[top[key]] = value
        elif key in transposed:
            out[transposed[key]] = value.t().contiguous()
        elif key == "logit_scale":
            out[key] = value
        elif match := _HF_BLOCK.match(key):
            block, name, kind = match.groups()
            if name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((block, kind), {})[name[10]] = value
            else:
                out[f"visual.transformer.resblocks.{block}.{block_names[name]}.{kind}"] = value
        else:
            raise ValueError(f"unexpected tensor {key!r} in a ChineseCLIPModel state dict")
    for (block, kind), parts in qkv.items():
        out[f"visual.transformer.resblocks.{block}.attn.in_proj_{kind}"] = torch.cat([parts[p] for p in "qkv"])
    return out


def hf_config(config: dict[str, Any], logit_scale: float | None = None) -> dict[str, Any]:
    """`ChineseCLIPConfig` as a dict (the folder's config.json) for our constructor `config`."""
    if isinstance(config["vision_layers"], list | tuple):
        raise ValueError("transformers' ChineseCLIPModel has no ResNet image tower (cn-RN50)")
    width = config["vision_width"]
    bert = {k: v for k, v in config["bert"].items()}
    return {
        "architectures": ["ChineseCLIPModel"], "model_type": "chinese_clip", "projection_dim": config["embed_dim"],
        "logit_scale_init_value": float(logit_scale) if logit_scale is not None else 2.6592,
        "text_config": {**bert, "model_type": "chinese_clip_text_model"},
        "vision_config": {"model_type": "chinese_clip_vision_model", "hidden_size": width,
                          "intermediate_size": 4 * width, "num_hidden_layers": config["vision_layers"],
                          "num_attention_heads": width // config.get("vision_head_width", 64),
                          "patch_size": config["vision_patch_size"], "image_size": config["image_resolution"],
                          "projection_dim": config["embed_dim"], "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
    }


def save_chinese_hf(model: Any, directory: str | os.PathLike[str]) -> Path:
    """Write a transformers folder: config.json, model.safetensors, the processor's files and the vocabulary.

    `ChineseCLIPModel.from_pretrained(directory)` and `ChineseCLIPProcessor.from_pretrained(directory)`
    load it; the processor resizes to (S, S) bicubic without a crop and normalises with OpenAI's mean/std,
    as cn_clip's `image_transform` does.
    """
    from safetensors.torch import save_file

    from clipforge.atomic import atomic_path, write_json_atomic
    from clipforge.text.wordpiece import WORDPIECE_VOCAB_PATH

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()
          if not _BUFFERS.search(k)}
    config = hf_config(model.config, float(sd["logit_scale"]))
    size = config["vision_config"]["image_size"]
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(to_transformers(sd), str(tmp), metadata={"format": "pt"})
    write_json_atomic(folder / "config.json", config)
    write_json_atomic(folder / "preprocessor_config.json", {
        "image_processor_type": "ChineseCLIPImageProcessor", "processor_class": "ChineseCLIPProcessor",
        "do_resize": True, "size": {"height": size, "width": size}, "resample": 3, "do_center_crop": False,
        "crop_size": {"height": size, "width": size}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": list(OPENAI_MEAN), "image_std": list(OPENAI_STD),
        "do_convert_rgb": True})
    write_json_atomic(folder / "tokenizer_config.json", {
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": model.context_length,
        "processor_class": "ChineseCLIPProcessor"})
    write_json_atomic(folder / "special_tokens_map.json", {
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"})
    with atomic_path(folder / "vocab.txt") as tmp:
        Path(tmp).write_bytes(WORDPIECE_VOCAB_PATH.read_bytes())
    return folder


def read_transformers_folder(directory: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(our state dict, constructor config) of a ChineseCLIPModel folder (safetensors or pytorch_model.bin).

    Everything read is checked before use, each refusal one `CheckpointFormatError` line naming the file and
    field: config.json's towers, head counts and every size it records (against the tensors,
    `hf_config.check_config_sizes`: 100,000 layers or patch size 0 loaded unnoticed), and that the weights file
    holds ChineseCLIPModel's tensors (``torch.save`` of a list, a bare tensor, other names were AttributeError,
    KeyError or ZeroDivisionError), each one a weight (`torch_pickle.tensor_dict`)."""
    from clipforge.weights.errors import CheckpointFormatError, json_object, member

    folder = Path(directory)
    config_path = folder / "config.json"
    config = json_object(config_path)
    if config.get("model_type") != "chinese_clip":
        raise ValueError(f"{config_path}: model_type is {brief(config.get('model_type'))}, expected chinese_clip")
    heads = {label: _heads(config, config_path, label) for label in ("vision", "text")}
    if member(folder / "model.safetensors"):  # a FIFO or a device is named, not taken for a missing file
        from clipforge.weights.safetensors_file import read_safetensors
        from clipforge.weights.torch_pickle import tensor_dict

        weights = folder / "model.safetensors"
        # the generic reader: damage and more tensors than any CLIP said as there, before any tensor is read
        hf = tensor_dict(read_safetensors(weights)[0], weights)
    elif member(folder / "pytorch_model.bin"):
        from clipforge.weights.torch_pickle import torch_load_safely, unwrap

        weights = folder / "pytorch_model.bin"
        hf = unwrap(torch_load_safely(weights), weights)  # refused as every other torch file is
    else:  # the generic Hugging Face reader's line (`clipforge.weights.hf`), not torch's "[Errno 2] ..."
        raise CheckpointFormatError(f"{folder} has config.json but no model.safetensors or pytorch_model.bin: "
                                    "no weights to load")
    _check_sizes(hf, config, folder)
    try:
        converted = from_transformers(hf)
    except ValueError as err:
        raise CheckpointFormatError(f"{weights}: {err}") from None
    if "visual.proj" not in converted:  # transformers' ChineseCLIPModel is ViT only: read as one, not as a ResNet
        raise CheckpointFormatError(f"{weights} is not a whole ChineseCLIPModel checkpoint: it lacks "
                                    "visual_projection.weight")
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in converted.items()}
    ours = cn_config(sd, weights)
    if heads["vision"]:
        ours["vision_head_width"] = ours["vision_width"] // heads["vision"]
    if heads["text"]:
        ours["bert"]["num_attention_heads"] = heads["text"]
    return sd, ours


def _check_sizes(hf: dict[str, Tensor], config: dict[str, Any], folder: Path) -> None:
    """Refuse, naming `folder`, a config.json whose sizes contradict the ChineseCLIPModel tensors `hf`: the check
    CLIP and SigLIP folders get, with the BERT text tower's table (`hf_config.CN_CLIP_SIZES`)."""
    from clipforge.weights.errors import CheckpointFormatError
    from clipforge.weights.hf_config import CN_CLIP_SIZES, check_config_sizes, tower_config

    try:
        (text, text_from), (vision, vision_from) = (tower_config(config, label) for label in ("text", "vision"))
        check_config_sizes(hf, text, vision, sizes=CN_CLIP_SIZES, top=config, class_token=True,
                           sections={"text": text_from, "vision": vision_from})
    except CheckpointFormatError as err:
        raise CheckpointFormatError(f"{folder}: {err}") from None


def _heads(config: dict[str, Any], config_path: Path, label: str) -> int | None:
    """``<label>_config.num_attention_heads`` of a ChineseCLIPModel's config.json: None when absent (the shapes
    decide), else a positive whole number."""
    from clipforge.weights.errors import CheckpointFormatError

    sub = config.get(f"{label}_config", {})
    if not isinstance(sub, dict):
        raise CheckpointFormatError(f"{config_path} field '{label}_config' must be a JSON object, got "
                                    f"{type(sub).__name__}")
    heads = sub.get("num_attention_heads")
    if heads is None:
        return None
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise CheckpointFormatError(f"{config_path} field '{label}_config.num_attention_heads' must be a positive "
                                    f"whole number, got {brief(heads)}")
    return heads
