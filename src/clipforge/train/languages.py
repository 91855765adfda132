"""The languages a trained model reads: set on the model before the first step, recorded in every checkpoint.

A checkpoint recorded only its architecture and preprocessing, so one fine-tuned from clipforge-tiny-zh (zh, en),
and the `cifar10-bilingual` recipe's own output (the run that made clipforge-tiny-zh), were taken for English:
a Chinese query got "trained for en only", and `eval zeroshot` / `eval suite` prompted in English by default.
The trainer now sets ``model.languages`` and `weights.save.save_safetensors` writes it into each checkpoint
(``clipforge_languages``), where `zeroshot.languages.model_languages` reads it.

What a run's model reads, first language first (the first is `eval zeroshot`'s default prompt language):

- the config's ``languages`` when given (a recipe declares its own: ``cifar10-bilingual`` says ``["zh", "en"]``;
  ``--set 'languages=["zh"]'`` for a caption CSV in Chinese trained from random weights);
- else the starting model's (a `LoadedModel`: its own record, family config, name or ``languages.json``), with
  the language of each training template set it did not read yet appended (data=labelled: ``--model
  clipforge-tiny --templates zh-cifar10`` teaches zh). Random weights read nothing yet: their templates' languages
  alone, where the run has templates. Captions from files (csv, folder, webdataset) are not read here.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from clipforge.train.config import TrainConfig

__all__ = ["template_languages", "trained_languages"]


def template_languages(templates: str | list[str]) -> tuple[str, ...]:
    """The language of each template set (or template) of a labelled run, in order, each once: ``zh`` for a set
    whose templates are written in Chinese (``zh-cifar10``, ``一张{}的照片``), else ``en``. A spec that cannot be
    read gives nothing here: the data step names it."""
    from clipforge.zeroshot import get_templates
    from clipforge.zeroshot.languages import language_of

    specs = [templates] if isinstance(templates, str) else list(templates)
    if specs and all(any(brace in str(s) for brace in "{}\uff5b\uff5d") for s in specs):
        specs = [specs]  # a list of templates is one set (["A photo of a {}."]), not one set per template
    found: list[str] = []
    for spec in specs:
        try:
            texts = get_templates(spec)
        except (ValueError, KeyError, OSError):
            continue
        language = "zh" if any(language_of(str(t).replace("{}", "")) == "zh" for t in texts) else "en"
        if language not in found:
            found.append(language)
    return tuple(found)


def trained_languages(config: TrainConfig, model: nn.Module, start: Any = None) -> tuple[str, ...]:
    """What the model this run trains reads (see the module docstring). `start`: the `LoadedModel` the run
    starts from (None: an inline `model_config`, random weights); `model`: the module it trains."""
    if config.languages:
        return tuple(config.languages)
    from clipforge.zeroshot.languages import MULTILINGUAL, model_languages

    begun = model_languages(start if start is not None else model)
    taught = template_languages(config.templates) if config.data == "labelled" else ()
    random = start is None or str(getattr(start, "weights", "")).startswith("random")
    if random and taught and MULTILINGUAL not in begun:
        return taught
    if MULTILINGUAL in begun:
        return begun
    return (*begun, *(language for language in taught if language not in begun))
