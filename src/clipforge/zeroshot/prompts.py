"""Prompt templates and class names, shipped as JSON package data.

Zero-shot accuracy depends as much on the words as on the weights: OpenAI's published
ImageNet numbers use their 80 templates and their hand-edited class names, not the WordNet
synset names. So the exact lists are data files copied from OpenAI (MIT, see
`data/LICENSE.openai-clip.txt`), and lookups here are by forgiving names ("cars",
"StanfordCars", "stanford-cars" all work) so CLI users need not know the file layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from clipforge.errors import UserError

__all__ = [
    "MAX_PROMPT_CHARS", "MAX_TEMPLATE_CHARS", "TEMPLATE_PATTERN", "TemplateError", "check_prompts", "check_template",
    "clean_cub_classname", "cub_classnames", "fill_template", "get_classnames", "get_templates",
    "list_datasets", "list_template_sets",
]

MAX_TEMPLATE_CHARS = 1000
"""Longest template accepted (OpenAI's longest is under 60 characters; CLIP reads 77 tokens)."""
MAX_PROMPT_CHARS = 4000
"""Longest prompt a template and a class name may make together."""

# A template is plain text with exactly one `{}` (where the class name goes); `{{` and `}}` are literal
# braces. Nothing else str.format understands is allowed: no field names or indexes (`{0}`, `{a.b}`,
# `{a[0]}`), no conversions (`{!r}`) and no format specs (`{:>1500000000}` would allocate 1.5 GB).
# The same pattern is published in the server's OpenAPI spec, so clients and server agree exactly.
_PLAIN = r"(?:[^{}]|\{\{|\}\})*"
TEMPLATE_PATTERN = rf"^{_PLAIN}\{{\}}{_PLAIN}$"
_TEMPLATE = re.compile(TEMPLATE_PATTERN)


class TemplateError(UserError, ValueError):
    """A prompt template that is not plain text with one `{}`; the message names the template."""


def check_template(template: object, origin: str = "template") -> str:
    """`template` itself when it is safe to fill, else a TemplateError saying why.

    The one gate every template from a user passes (CLI, files, the web API and UI, the
    classifier): after it, `fill_template` can only ever substitute one label.
    """
    if not isinstance(template, str):
        raise TemplateError(f"{origin} {template!r} is not a string (expected text containing '{{}}')")
    shown = template if len(template) <= 80 else template[:77] + "..."
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"{origin} {shown!r} has {len(template)} characters, more than the limit of "
                            f"{MAX_TEMPLATE_CHARS}")
    if not _TEMPLATE.search(template) and ("\uff5b" in template or "\uff5d" in template):  # ｛ ｝
        raise TemplateError(f"{origin} {shown!r} has full-width braces '｛｝' (typed in a Chinese input method's "
                            f"full-width mode), not the ASCII '{{}}' where the class name goes, e.g. '一张{{}}的照片'")
    if not _TEMPLATE.search(template):
        raise TemplateError(f"{origin} {shown!r} is not a valid template: it must contain '{{}}' exactly once, "
                            f"where the class name goes, and no other braces except '{{{{' and '}}}}' for literal "
                            f"ones (no field names, indexes, conversions or format specs)")
    return template


def _too_long(template: str, label: str, length: int) -> TemplateError:
    return TemplateError(f"the prompt for label {label[:40]!r}... from template {template[:40]!r} would have "
                         f"{length} characters, more than the limit of {MAX_PROMPT_CHARS}")


def fill_template(template: str, label: str) -> str:
    """The prompt for `label`: the only way a template is ever formatted."""
    prompt = check_template(template).format(label)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _too_long(template, label, len(prompt))
    return prompt


def check_prompts(templates: Sequence[str], labels: Sequence[str]) -> None:
    """Refuse, with `fill_template`'s line for the first prompt it would refuse (labels in order, then templates),
    a label that makes a prompt of `templates` longer than `MAX_PROMPT_CHARS`, from lengths alone: before any
    prompt is made or tokenized. Every path that prompts labels (`ZeroShotClassifier`, and before it the cut count
    of `prompt_fit.templates_cut` that `classify`, `tag` / `Library.classify` and `eval zeroshot` make) checks
    here first: a 10 MB label had been tokenized 186 times by that count (90 s, 2.4 GB) before being refused."""
    extra = [len(check_template(template).format("")) for template in templates]  # a prompt is these + its label
    most = max(extra, default=0)
    for label in labels:
        if len(label) + most > MAX_PROMPT_CHARS:
            template, size = next((t, n) for t, n in zip(templates, extra, strict=True)
                                  if len(label) + n > MAX_PROMPT_CHARS)
            raise _too_long(template, label, len(label) + size)

# Dataset keys of openai_prompts_all_datasets.json, addressed by normalised aliases.
_DATASET_ALIASES: dict[str, str] = {
    "cifar10": "CIFAR10", "cifar100": "CIFAR100",
    "cars": "StanfordCars", "stanfordcars": "StanfordCars",
    "food101": "Food101", "food": "Food101",
    "pets": "OxfordPets", "oxfordpets": "OxfordPets", "oxfordiiitpet": "OxfordPets",
    "flowers": "Flowers102", "flowers102": "Flowers102", "oxfordflowers102": "Flowers102",
    "caltech101": "Caltech101", "sun397": "SUN397",
    "dtd": "DescribableTextures", "describabletextures": "DescribableTextures",
    "eurosat": "EuroSAT",
    "aircraft": "FGVCAircraft", "fgvcaircraft": "FGVCAircraft",
    "gtsrb": "GTSRB", "mnist": "MNIST", "stl10": "STL10",
    "country211": "Country211", "resisc45": "RESISC45",
    "birdsnap": "Birdsnap", "ucf101": "UCF101", "kinetics700": "Kinetics700",
    "pascalvoc2007": "PascalVOC2007", "voc2007": "PascalVOC2007",
    "kitti": "KITTI", "clevrcounts": "CLEVRCounts", "sst2": "SST2", "hatefulmemes": "HatefulMemes",
    "patchcamelyon": "PatchCamelyon", "pcam": "PatchCamelyon",
    "fer2013": "FacialEmotionRecognition2013", "facialemotionrecognition2013": "FacialEmotionRecognition2013",
}

_IMAGENET = {"imagenet", "imagenet1k", "ilsvrc2012", "imagenetv2", "imagenet80", "openaiimagenet"}
_IMAGENET7 = {"imagenet7", "openaiimagenet7", "ensemble7"}
_CUB = {"cub", "cub200", "cub2002011", "birds"}
_SIMPLE = {"simple", "photo", "default"}

# OpenAI did not publish CUB prompts; their Birdsnap template is the natural one for birds.
CUB_TEMPLATES: tuple[str, ...] = ("a photo of a {}, a type of bird.",)
SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@cache
def _load(filename: str):
    with resources.files("clipforge.zeroshot").joinpath("data", filename).open("r", encoding="utf-8") as f:
        return json.load(f)


def _all_datasets() -> dict[str, dict[str, list]]:
    return _load("openai_prompts_all_datasets.json")


def list_datasets() -> list[str]:
    """Dataset names `get_classnames` understands without a root folder."""
    return ["imagenet", *sorted(_all_datasets())]


def list_template_sets() -> list[str]:
    from clipforge.zeroshot.languages import LANGUAGE_SETS

    return ["imagenet", "imagenet7", "simple", "cub", *sorted(_all_datasets()), *LANGUAGE_SETS]


def _validate_templates(templates: Sequence[str], origin: str) -> list[str]:
    out = list(templates)
    if not out:
        raise TemplateError(f"{origin}: no templates (expected at least one string containing '{{}}')")
    prefix = "" if origin in ("template", "templates") else f"{origin}: "
    return [check_template(t, f"{prefix}template") for t in out]


def _read_template_file(path: Path) -> list[str]:
    """A templates file (UTF-8 text, one per line, or JSON), read by the rules of `clipforge.text.labels`:
    a GBK file, a folder or broken JSON is one line naming the file, a BOM is not part of a template.

    A line (or a JSON list's item) holding a control character other than a tab (`text.typed.control_character`:
    a NUL, an ESC) is refused naming the file and the line: "a photo<NUL> of {}" went into every prompt. Lines
    are counted as an editor counts them (LF, CRLF or CR ends one), so a form feed inside a line is named too."""
    from clipforge.text.labels import parse_json_file, read_text_file

    expected = "a JSON list of template strings or {\"templates\": [...]}"
    text = read_text_file(path, "template file", "a file of templates (one per line, or a JSON list)")
    if path.suffix.lower() == ".json":
        data = parse_json_file(text, path, expected)
        if isinstance(data, dict) and "templates" in data:
            data = data["templates"]
        if not isinstance(data, list):
            raise TemplateError(f"{path}: expected {expected}")
        for number, item in enumerate(data, 1):
            _no_control(item, path, f"template {number}")
        return _validate_templates(data, str(path))
    kept = []
    for number, line in enumerate(re.split(r"\r\n|\r|\n", text), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            kept.append(_no_control(line, path, f"line {number}"))
    return _validate_templates(kept, str(path))


def _no_control(template: object, path: Path, where: str) -> object:
    """`template` (read from `path` at `where`) unless it is a string holding a control character other than a tab."""
    from clipforge.text.typed import control_character

    if isinstance(template, str) and (char := control_character(template)):
        shown = template if len(template) <= 80 else template[:77] + "..."
        raise TemplateError(f"template file {path} {where}: {shown!r} holds a control character ({char}), which is "
                            "no text; remove it")
    return template


def get_templates(name_or_list: str | Sequence[str]) -> list[str]:
    """Resolve templates from a set name, a file, a single template, or a list of templates.

    Names: ``imagenet`` (OpenAI's 80), ``imagenet7`` (the 7 chosen in OpenAI's notebook),
    ``simple`` ("a photo of a {}."), ``cub`` and any dataset of `list_datasets()`. A string
    containing ``{}`` is one template; a path to a ``.json`` list or a text file with one
    template per line is read.
    """
    if not isinstance(name_or_list, str):
        return _validate_templates(list(name_or_list), "templates")
    value = name_or_list
    if any(brace in value for brace in "{}\uff5b\uff5d"):  # a template (full-width braces: said by check_template)
        return _validate_templates([value], "template")
    path = Path(value).expanduser()
    if path.suffix.lower() in {".json", ".txt"} or path.is_file():  # a missing file or a folder: one line
        return _read_template_file(path)
    from clipforge.zeroshot.languages import is_language_set, language_templates

    if is_language_set(value):  # zh-imagenet, zh-cifar10, ...: Chinese-CLIP's templates (see languages.py)
        return language_templates(value)
    key = _key(value)
    if key in _IMAGENET:
        return list(_load("openai_imagenet_templates.json"))
    if key in _IMAGENET7:
        return list(_load("openai_imagenet_templates_7.json"))
    if key in _SIMPLE:
        return list(SIMPLE_TEMPLATES)
    if key in _CUB:
        return list(CUB_TEMPLATES)
    dataset = _DATASET_ALIASES.get(key) or {_key(k): k for k in _all_datasets()}.get(key)
    if dataset is None and path.is_dir():  # it was "unknown template set 'imgs'"
        raise ValueError(f"--templates {value}: is a folder; expected a .json or .txt file of templates, a template "
                         "containing '{}', or a set name (" + ", ".join(list_template_sets()[:4]) + ", ...)")
    if dataset is None:
        from clipforge.models.configs import closest_name  # the one guesser, as a mistyped --model gets

        guess = closest_name(value, list_template_sets())
        hint = f" (did you mean {guess}?)" if guess else ""
        raise ValueError(f"unknown template set {value!r}{hint}; known: {', '.join(list_template_sets())} "
                         "(or pass a template containing '{}', or a .json/.txt file of templates)")
    return list(_all_datasets()[dataset]["templates"])


def clean_cub_classname(raw: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black footed Albatross`` (number and underscores gone)."""
    name = re.sub(r"^\s*\d+\s*\.", "", raw.strip())
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip()


def cub_classnames(classes_txt: str | Path) -> list[str]:
    """Clean class names from CUB-200-2011's ``classes.txt`` (``<id> <NNN.Name>`` lines), in id order."""
    path = Path(classes_txt)
    if path.is_dir():
        path = path / "classes.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: CUB-200-2011 keeps its class list in classes.txt "
                                "with lines '<class_id> <NNN.Class_Name>'")
    entries: list[tuple[int, str]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<class_id> <NNN.Class_Name>', got {line!r}")
        entries.append((int(parts[0]), clean_cub_classname(parts[1])))
    return [name for _, name in sorted(entries)]


def get_classnames(dataset: str, root: str | Path | None = None) -> list[str]:
    """Class names in the dataset's standard label order, as OpenAI wrote them for prompting.

    CUB-200 has no OpenAI list; its names come cleaned from ``classes.txt`` under `root`.
    """
    key = _key(dataset)
    if key in _IMAGENET | _IMAGENET7:
        return list(_load("openai_imagenet_classes.json"))
    if key in _CUB:
        if root is None:
            raise ValueError("CUB-200 class names are read from its classes.txt: pass root=<CUB_200_2011 folder>")
        return cub_classnames(root)
    name = _DATASET_ALIASES.get(key) or {_key(k): k for k in _all_datasets()}.get(key)
    if name is None:
        raise ValueError(f"no class names for dataset {dataset!r}; known: {', '.join(list_datasets())}, cub")
    classes = _all_datasets()[name]["classes"]
    # FER2013 stores synonyms as lists; the first synonym is the canonical name.
    return [c[0] if isinstance(c, list) else c for c in classes]
