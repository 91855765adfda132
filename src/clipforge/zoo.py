"""open_clip's public surface over clipforge, so ``import clipforge as open_clip`` runs the
common open_clip snippets:

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained="laion2b_s34b_b79k")
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    features = model.encode_image(preprocess(image).unsqueeze(0))

Names and tags mean what they mean in open_clip (``ViT-B-32`` is GELU, ``-quickgelu`` and
``pretrained="openai"`` are QuickGELU). Differences, deliberate: the model is clipforge's CLIP
(OpenAI parameter names, fp32), the "train" transform is the evaluation transform (clipforge
trains with its own recipes), and weights whose activation differs from the name's are built
with the weights' activation (open_clip warns and builds the wrong one).

`build_weights_preprocess` (the preprocessing a set of weights needs) is re-exported from
`clipforge.weights.preprocessing`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from clipforge.image import Preprocess
from clipforge.text.vocab import EOT_TOKEN, SOT_TOKEN, VOCAB_SIZE
from clipforge.weights.preprocessing import WeightsPreprocess, build_weights_preprocess

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD", "OPENAI_DATASET_MEAN",
           "OPENAI_DATASET_STD", "SimpleTokenizer", "Tokenizer", "WeightsPreprocess", "build_weights_preprocess",
           "create_model_and_transforms", "create_model_from_pretrained", "decode", "get_model_config",
           "get_pretrained_cfg", "get_tokenizer", "image_transform", "list_models", "list_openai_models",
           "list_pretrained", "list_pretrained_models_by_tag", "list_pretrained_tags_by_model"]

# open_clip's constants (open_clip/constants.py)
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


def list_pretrained_tags_by_model(model: str) -> list[str]:
    """The registry tags of one architecture, as open_clip's function."""
    from clipforge.weights.registry import list_pretrained_tags_by_model as tags

    return tags(model)


def list_pretrained_models_by_tag(tag: str) -> list[str]:
    """Architectures with weights under `tag`, as open_clip's function (its spellings: ``ViT-B-32``)."""
    from clipforge.weights.registry import list_pretrained_models_by_tag as by_tag

    return by_tag(tag)


def list_openai_models() -> list[str]:
    """OpenAI's released architectures in open_clip's spellings, ``-quickgelu`` names included, as open_clip's
    `list_openai_models`; `clipforge.available_models()` gives OpenAI's own spellings."""
    return list_pretrained_models_by_tag("openai")


def get_pretrained_cfg(model: str, tag: str) -> dict[str, Any]:
    """open_clip's pretrained config dict for (model, tag): url, hf_hub, mean, std, interpolation,
    resize_mode, quick_gelu (and clipforge's sha256 and imagenet_top1); {} when unknown, as open_clip."""
    from clipforge.weights.registry import get_pretrained

    try:
        entry = get_pretrained(model, tag)
    except KeyError:
        return {}
    return {"url": entry.url, "hf_hub": f"{entry.hf_repo}/" if entry.hf_repo else "", "mean": entry.mean,
            "std": entry.std, "interpolation": entry.interpolation, "resize_mode": entry.resize_mode,
            "quick_gelu": entry.activation == "quick_gelu", "sha256": entry.sha256,
            "imagenet_top1": entry.imagenet_top1}


def get_model_config(model_name: str) -> dict[str, Any] | None:
    """The architecture config (clipforge's constructor terms, family knobs included); None when
    unknown, as open_clip's `get_model_config`."""
    from clipforge.models import get_config

    try:
        return get_config(model_name)
    except KeyError:
        return None


def image_transform(image_size: int | tuple[int, int], is_train: bool = False,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    resize_mode: str | None = None, interpolation: str | None = None,
                    **_: Any) -> Preprocess:
    """open_clip's evaluation transform (PIL image -> normalised tensor); `is_train` gives the
    same transform (clipforge trains with its own recipes, see `clipforge.train`)."""
    size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    cfg: dict[str, Any] = {"mean": list(mean or OPENAI_DATASET_MEAN), "std": list(std or OPENAI_DATASET_STD)}
    if resize_mode is not None:
        cfg["resize_mode"] = resize_mode
    if interpolation is not None:
        cfg["interpolation"] = interpolation
    return build_weights_preprocess(int(size), cfg)

def list_models() -> list[str]:
    """Architecture names, as open_clip's `list_models` (plus OpenAI's spellings)."""
    from clipforge.models import list_configs

    return sorted(list_configs())


def list_pretrained(as_str: bool = False) -> list[Any]:
    """Every (architecture, tag) pair with downloadable weights; ``"name:tag"`` with `as_str`."""
    from clipforge.weights.registry import list_pretrained as pairs

    return pairs(as_str=as_str)


_OPEN_CLIP_MARKERS = {SOT_TOKEN: "<start_of_text>", EOT_TOKEN: "<end_of_text>"}


class Tokenizer:
    """open_clip's tokenizer call: ``tokenizer(texts) -> LongTensor[N, context_length]``,
    truncating long texts (keeping ``<|endoftext|>`` last) as open_clip does."""

    def __init__(self, context_length: int = 77) -> None:
        self.context_length = context_length

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        from clipforge.text import tokenize

        return tokenize(texts, context_length or self.context_length, truncate=True)

    def encode(self, text: str) -> list[int]:
        from clipforge.text import get_tokenizer as bpe

        return bpe().encode(text)

    def decode(self, tokens: Iterable[int]) -> str:
        """Text of `tokens` (a list, a tensor row) as open_clip's `SimpleTokenizer.decode` gives it: "</w>"
        becomes a space, bad UTF-8 is U+FFFD, and the markers are spelled open_clip's way
        (``<start_of_text>``, ``<end_of_text>``; OpenAI's `clipforge.text` decoder keeps ``<|startoftext|>``).
        The markers are matched as ids, so a text that spells one out decodes as it was written."""
        from clipforge.text import get_tokenizer as bpe

        ids = tokens.tolist() if hasattr(tokens, "tolist") else list(tokens)
        parts, start = [], 0
        for at, token in enumerate(ids):
            if int(token) in _OPEN_CLIP_MARKERS:
                parts += [bpe().decode(ids[start:at]), _OPEN_CLIP_MARKERS[int(token)]]
                start = at + 1
        return "".join(parts) + bpe().decode(ids[start:])

    # open_clip's SimpleTokenizer attributes (code that builds its own token rows reads them)
    vocab_size: int = VOCAB_SIZE
    sot_token_id: int = SOT_TOKEN
    eot_token_id: int = EOT_TOKEN
    all_special_ids: tuple[int, int] = (SOT_TOKEN, EOT_TOKEN)


class SimpleTokenizer(Tokenizer):
    """open_clip's `SimpleTokenizer` constructor over `Tokenizer` (``open_clip.SimpleTokenizer()``, or with
    ``context_length=``). CLIP's own vocabulary is the only one: a `bpe_path` naming another file, extra
    special tokens, another `clean` or a `reduction_mask` would tokenize differently from the model's
    training, and are refused by name instead of ignored."""

    def __init__(self, bpe_path: str | os.PathLike[str] | None = None, additional_special_tokens: Sequence[str] | None = None,
                 context_length: int | None = 77, clean: str = "lower", reduction_mask: str = "") -> None:
        if bpe_path is not None and not _same_vocab(bpe_path):
            raise ValueError(f"SimpleTokenizer(bpe_path={os.fspath(bpe_path)!r}): clipforge tokenizes with CLIP's "
                             "own BPE vocabulary only (leave bpe_path out); that file's merges differ")
        unsupported = {"additional_special_tokens": additional_special_tokens if additional_special_tokens else None,
                       "clean": clean if clean != "lower" else None, "reduction_mask": reduction_mask or None}
        for name, value in unsupported.items():
            if value is not None:
                raise NotImplementedError(f"SimpleTokenizer({name}={value!r}) is not supported: clipforge tokenizes as "
                                          "CLIP was trained (lower-cased, no extra special tokens, no reduction)")
        super().__init__(77 if context_length is None else int(context_length))


def _same_vocab(path: str | os.PathLike[str]) -> bool:
    """Whether a gzipped BPE merges file holds CLIP's merges (the shipped file's bytes once unzipped)."""
    import gzip

    from clipforge.text.vocab import VOCAB_PATH

    try:
        with gzip.open(path) as theirs, gzip.open(VOCAB_PATH) as ours:
            return theirs.read() == ours.read()
    except (OSError, EOFError):
        return False


def decode(output_ids: Iterable[int]) -> str:
    """open_clip's module-level `decode`: the text of one row of CLIP BPE ids (padding zeros decode as "!",
    as there)."""
    return Tokenizer().decode(output_ids)


def get_tokenizer(model_name: str = "", context_length: int | None = None, cache_dir: Any = None,
                  **_: Any) -> Any:
    """The architecture's tokenizer: CLIP's BPE (`Tokenizer`), or a family's own (SigLIP's
    SentencePiece, SigLIP 2's Gemma, XLM-V; `clipforge.text.ModelTokenizer`, same call), its file
    fetched from the hub repository the config names when not cached."""
    from clipforge.models import get_config
    from clipforge.models.chinese_clip import CONTEXT_LENGTH, is_chinese_clip_name

    if is_chinese_clip_name(model_name):  # its WordPiece vocabulary ships with clipforge: no weights are needed
        from clipforge.text.families import CarriedTokenizer
        from clipforge.text.wordpiece import get_wordpiece_tokenizer

        return CarriedTokenizer(get_wordpiece_tokenizer(), context_length or CONTEXT_LENGTH)
    try:
        config = get_config(model_name) if model_name else {"context_length": 77}
    except KeyError:
        # not an architecture: any --model spec (the shipped clipforge-tiny-zh, a checkpoint, ARCH:TAG) through
        # the one loader, text tower only; its tokenizer is the one the commands use
        from clipforge.api import load_model

        try:
            loaded = load_model(model_name, "cpu", towers=("text",))
        except (FileNotFoundError, ValueError):
            raise KeyError(f"unknown model {model_name!r}: neither an architecture (clipforge.list_models()) nor "
                           "a model clipforge.load_model resolves") from None
        return _ContextTokenizer(loaded.tokenizer, context_length) if context_length else loaded.tokenizer
    length = context_length or config["context_length"]
    spec = config.get("tokenizer")
    if not spec or spec.get("kind") == "openai-bpe":
        return Tokenizer(length)
    from clipforge.text.families import build_tokenizer
    from clipforge.weights.zoo import download_tokenizer

    folder = download_tokenizer(model_name, cache_dir)
    return build_tokenizer(spec, length, [folder] if folder else [])


class _ContextTokenizer:
    """A model's tokenizer called at a context length the caller fixed (`get_tokenizer(..., context_length=)`)."""

    def __init__(self, tokenizer: Any, context_length: int) -> None:
        self.tokenizer, self.context_length = tokenizer, int(context_length)

    def __call__(self, texts: Any, context_length: int | None = None) -> torch.Tensor:
        return self.tokenizer(texts, context_length or self.context_length)


_IGNORED_OPTIONS = {"aug_cfg": "the train transform is the eval transform (no augmentation)",
                    "pretrained_hf": "Hugging Face text towers load with the weights they come with",
                    "require_pretrained": "weights that cannot be found are always an error"}
_REFUSED_OPTIONS = ("force_image_size", "force_patch_dropout", "force_custom_text", "force_context_length",
                    "pretrained_image", "pretrained_text", "load_weights", "model_kwargs")


def _check_open_clip_options(options: dict[str, Any], jit: bool) -> None:
    """open_clip arguments clipforge does not implement: a warning where the model is the same without them, a
    ValueError naming the argument where it would not be (a default value, None, False or 0, is accepted)."""
    import warnings

    if jit:
        warnings.warn("jit=True is ignored: clipforge returns the eager model (as clipforge.load does)", stacklevel=3)
    for name, value in options.items():
        if value in (None, False, 0) or (name == "load_weights" and value is True):
            continue
        if name in _IGNORED_OPTIONS:
            warnings.warn(f"{name} is ignored: {_IGNORED_OPTIONS[name]}", stacklevel=3)
        elif name in _REFUSED_OPTIONS:
            raise ValueError(f"{name}={value!r} is not supported by clipforge's create_model_and_transforms (it would "
                             "change the model open_clip builds); build the architecture as published")
        else:
            raise TypeError(f"create_model_and_transforms() got an unexpected keyword argument {name!r}")


def create_model_from_pretrained(model_name: str, pretrained: str | os.PathLike[str] | None = None, *,
                                 device: str | torch.device | None = "cpu", return_transform: bool = True,
                                 cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Any:
    """(model, preprocess) as open_clip's function; only the model with ``return_transform=False``. In training
    mode, as open_clip's (``model.eval()`` for inference)."""
    model, _, preprocess = create_model_and_transforms(model_name, pretrained, device=device, cache_dir=cache_dir,
                                                       **kwargs)
    return (model, preprocess) if return_transform else model


def create_model_and_transforms(
        model_name: str, pretrained: str | os.PathLike[str] | None = None, precision: str = "fp32",
        device: str | torch.device | None = "cpu", jit: bool = False, force_quick_gelu: bool = False,
        image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
        image_interpolation: str | None = None, image_resize_mode: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None, output_dict: bool = False,
        **open_clip_only: Any) -> tuple[Any, Preprocess, Preprocess]:
    """(model, preprocess_train, preprocess_val) as open_clip returns them (see module docstring).

    `pretrained` is a tag (``"laion2b_s34b_b79k"``), a checkpoint path, or None (random
    weights); `force_quick_gelu` builds the ``-quickgelu`` architecture, as in open_clip. open_clip's
    other arguments are refused when they would change the model (`force_image_size`, ...) and said to be
    ignored otherwise (`jit`, `aug_cfg`): they were all dropped in silence (`force_image_size=336` gave a
    224 px model). The model is in training mode, as open_clip returns it: call ``model.eval()`` for inference.
    """
    import clipforge
    from clipforge.models import ARCH_CONFIGS, get_config

    if precision not in ("fp32", "pure_fp32", "amp", "amp_bf16", "amp_bfloat16"):
        raise ValueError(f"precision {precision!r}: clipforge keeps weights in fp32 (use autocast for bf16/fp16; "
                         "'amp' and 'amp_bf16' mean fp32 weights, as in open_clip)")
    name = model_name
    if force_quick_gelu and not name.endswith("-quickgelu") and f"{name}-quickgelu" in ARCH_CONFIGS:
        name = f"{name}-quickgelu"
    config = get_config(name)  # unknown names fail here, naming the known ones
    size = config.get("image_resolution")
    if open_clip_only.get("force_image_size") in (size, (size, size), [size, size]):
        open_clip_only.pop("force_image_size")  # the published size: nothing to force
    _check_open_clip_options(open_clip_only, jit)
    # training mode, as `create_model` and open_clip's own function return it (open_clip never calls .eval() here;
    # its users do): this returned eval mode, the only `create_model*` that did, against the README
    model = clipforge.create_model(name, pretrained=pretrained, download_root=cache_dir, device=device,
                                   output_dict=output_dict)
    cfg = dict(getattr(model, "preprocess_cfg", None) or {})
    for key, value in (("mean", image_mean), ("std", image_std), ("interpolation", image_interpolation),
                       ("resize_mode", image_resize_mode)):
        if value is not None:
            cfg[key] = list(value) if key in ("mean", "std") else value
    preprocess = build_weights_preprocess(model.image_size, cfg)
    return model, preprocess, preprocess
