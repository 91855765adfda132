"""Zero-shot classification: prompt templates, class names, class embeddings, classifier."""

from clipforge._lazy import lazy_exports

_LAZY = {"ZeroShotClassifier": "classifier", "build_class_embeddings": "embeddings", "cache_key": "embeddings",
         "default_cache_dir": "embeddings", "clean_cub_classname": "prompts", "cub_classnames": "prompts",
         "get_classnames": "prompts", "get_templates": "prompts", "list_datasets": "prompts",
         "list_template_sets": "prompts"}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
