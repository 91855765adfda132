"""open_clip's zero-shot API over clipforge's, for ``import clipforge as open_clip``: `build_zero_shot_classifier`
and the ImageNet metadata (`IMAGENET_CLASSNAMES`, `OPENAI_IMAGENET_TEMPLATES`, `SIMPLE_IMAGENET_TEMPLATES`),
computed by the same class-embedding loop and read from the same prompt files as `ZeroShotClassifier`."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["build_zero_shot_classifier"]
# and, read on first use (`__getattr__`): IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES


def build_zero_shot_classifier(model: torch.nn.Module, tokenizer: Any, classnames: str | Sequence[str],
                               templates: str | Sequence[Any], num_classes_per_batch: int | None = 10,
                               device: str | torch.device = "cpu", use_tqdm: bool = False) -> torch.Tensor:
    """open_clip's zero-shot head: [embed_dim, num_classes], each column the normalised mean of a class's
    normalised prompt features. `templates`: format strings ("a photo of a {}.") or callables (open_clip's
    `OPENAI_IMAGENET_TEMPLATES`). Computed by clipforge's class-embedding loop (prompts encoded in batches of
    similar length, each stopping at its longest prompt), so `num_classes_per_batch` is accepted and not needed:
    memory stays [num_classes, embed_dim] whatever the batch. One string is never read a character at a time
    (`clipforge.zeroshot.inputs`): `classnames` as comma-separated labels, `templates` as `get_templates` reads it."""
    from clipforge.zeroshot.embeddings import class_embeddings_of_tokens
    from clipforge.zeroshot.inputs import class_names
    from clipforge.zeroshot.prompts import fill_template, get_templates

    if isinstance(classnames, str):
        classnames = class_names(classnames)
    if isinstance(templates, str):
        templates = get_templates(templates)

    if not classnames or not templates:
        raise ValueError("build_zero_shot_classifier needs at least one class name and one template")
    texts = [fill_template(template, name) if isinstance(template, str) else template(name)
             for name in classnames for template in templates]
    return class_embeddings_of_tokens(model, tokenizer(texts), len(templates), device=device, progress=use_tqdm).T


def __getattr__(name: str) -> Any:
    """open_clip's ImageNet metadata, read from the shipped prompt files on first use: `IMAGENET_CLASSNAMES`
    (OpenAI's 1,000 names), `OPENAI_IMAGENET_TEMPLATES` (their 80 templates) and `SIMPLE_IMAGENET_TEMPLATES`
    (the 7 of OpenAI's notebook), as open_clip's tuples (templates as callables: ``t("cat")``)."""
    from clipforge.zeroshot.prompts import fill_template, get_classnames, get_templates

    if name == "IMAGENET_CLASSNAMES":
        return tuple(get_classnames("imagenet"))
    if name in ("OPENAI_IMAGENET_TEMPLATES", "SIMPLE_IMAGENET_TEMPLATES"):
        chosen = get_templates("imagenet" if name.startswith("OPENAI") else "imagenet7")
        return tuple(functools.partial(fill_template, template) for template in chosen)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
