"""Zero-shot classification: prompt templates, class names, class embeddings, classifier."""

from clipforge.zeroshot.classifier import ZeroShotClassifier
from clipforge.zeroshot.embeddings import build_class_embeddings, cache_key, default_cache_dir
from clipforge.zeroshot.prompts import (
    clean_cub_classname,
    cub_classnames,
    get_classnames,
    get_templates,
    list_datasets,
    list_template_sets,
)

__all__ = [
    "ZeroShotClassifier", "build_class_embeddings", "cache_key", "clean_cub_classname", "cub_classnames",
    "default_cache_dir", "get_classnames", "get_templates", "list_datasets", "list_template_sets",
]
