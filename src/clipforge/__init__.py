"""clipforge: a reference-exact CLIP with zero-shot, evaluation, training and image search.

The surface mirrors openai/CLIP (`load`, `tokenize`, `available_models`) so migrating is a
one-line import change. Names are resolved lazily: `import clipforge.models` (or the CLI's
`--help`) must not pay for the tokenizer, the image stack or FAISS.
"""

from __future__ import annotations

from clipforge._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "load": "clipforge.api",
    "load_model": "clipforge.api",
    "create_model": "clipforge.api",
    "available_models": "clipforge.api",
    "tokenize": "clipforge.text",
    "ZeroShotClassifier": "clipforge.zeroshot",
    "Library": "clipforge.library",
    # open_clip's surface (`import clipforge as open_clip`)
    "create_model_and_transforms": "clipforge.zoo",
    "create_model_from_pretrained": "clipforge.zoo",
    "get_tokenizer": "clipforge.zoo",
    "decode": "clipforge.zoo",
    "ClipLoss": "clipforge.train.open_clip_loss",
    "SigLipLoss": "clipforge.train.open_clip_loss",
    "build_zero_shot_classifier": "clipforge.zeroshot.open_clip_api",
    "IMAGENET_CLASSNAMES": "clipforge.zeroshot.open_clip_api",
    "OPENAI_IMAGENET_TEMPLATES": "clipforge.zeroshot.open_clip_api",
    "SIMPLE_IMAGENET_TEMPLATES": "clipforge.zeroshot.open_clip_api",
    "list_models": "clipforge.zoo",
    "list_pretrained": "clipforge.zoo",
    "list_pretrained_tags_by_model": "clipforge.zoo",
    "list_pretrained_models_by_tag": "clipforge.zoo",
    "list_openai_models": "clipforge.zoo",
    "SimpleTokenizer": "clipforge.zoo",
    "get_cast_dtype": "clipforge.zoo_training",
    "get_input_dtype": "clipforge.zoo_training",
    "load_checkpoint": "clipforge.zoo_training",
    "get_pretrained_cfg": "clipforge.zoo",
    "get_model_config": "clipforge.zoo",
    "image_transform": "clipforge.zoo",
    "OPENAI_DATASET_MEAN": "clipforge.zoo",
    "OPENAI_DATASET_STD": "clipforge.zoo",
    "IMAGENET_MEAN": "clipforge.zoo",
    "IMAGENET_STD": "clipforge.zoo",
    "INCEPTION_MEAN": "clipforge.zoo",
    "INCEPTION_STD": "clipforge.zoo",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
