"""Prompt sets by language: Chinese templates and class names, and which set a model's language picks.

A prompt set is templates *and* the class names they are filled with: "一张{}的照片" filled with
"airplane" is neither English nor Chinese. So a language set (``zh-imagenet``, ``zh-cifar10``,
``zh-cifar100``, ``zh-simple``) carries its own class names per dataset, and whoever asks for its
templates also gets the matching names (`classnames_for`). The data are JSON files beside
OpenAI's (`data/zh_*.json`, see `data/NOTICE.txt`): ImageNet's 1,000 Chinese class names and 80
Chinese templates exactly as Chinese-CLIP publishes them in the `cn-clip` 1.6.0 wheel (MIT), the
CIFAR templates Chinese-CLIP uses for CIFAR in its ELEVATER evaluation, and CIFAR-10/100 names
translated for clipforge.

A model's languages (`model_languages`) decide the default set: the first language a model lists
is the one `eval zeroshot` prompts in when no `--templates` is given. A bilingual model lists both.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_LANGUAGES", "LANGUAGE_SETS", "MULTILINGUAL", "classnames_for", "default_template_set",
    "is_language_set", "language_of", "language_templates", "model_languages", "script_counts", "script_of",
    "set_language",
]

DEFAULT_LANGUAGES: tuple[str, ...] = ("en",)
"""What a model speaks when nothing says otherwise: OpenAI's and open_clip's English BPE models."""

# set name -> (language, dataset key in the language's data); "simple" has no class names of its own.
LANGUAGE_SETS: dict[str, tuple[str, str]] = {
    "zh-imagenet": ("zh", "imagenet"), "zh-cifar10": ("zh", "cifar10"), "zh-cifar100": ("zh", "cifar100"),
    "zh-simple": ("zh", "simple"),
}
ZH_SIMPLE_TEMPLATES: tuple[str, ...] = ("一张{}的照片",)  # "a photo of a {}."
_ZH_DATASETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}
_IMAGENET_KEYS = {"imagenet", "imagenet1k", "ilsvrc2012", "imagenetv2"}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _set_key(name: str) -> str | None:
    """The canonical set name of `name` ("zh-cifar10", "ZH_CIFAR10", "zh:cifar-10"), else None."""
    key = _key(name)
    if not key.startswith("zh") or len(key) <= 2:
        return None
    rest = key[2:]
    if rest in _IMAGENET_KEYS:
        rest = "imagenet"
    candidate = f"zh-{rest}"
    return candidate if candidate in LANGUAGE_SETS else None


def is_language_set(name: object) -> bool:
    """Whether `name` names one of the packaged language prompt sets (``zh-...``)."""
    return isinstance(name, str) and _set_key(name) is not None


def set_language(name: object) -> str:
    """The language a template-set spec prompts in: ``zh`` for the zh sets, ``en`` otherwise."""
    return LANGUAGE_SETS[_set_key(name)][0] if is_language_set(name) else "en"


@cache
def _load(filename: str) -> Any:
    with resources.files("clipforge.zeroshot").joinpath("data", filename).open("r", encoding="utf-8") as f:
        return json.load(f)


def language_templates(name: str) -> list[str]:
    """The templates of a language set; KeyError (listing the sets) for any other name."""
    key = _set_key(name)
    if key is None:
        raise KeyError(f"unknown language template set {name!r}; known: {', '.join(LANGUAGE_SETS)}")
    dataset = LANGUAGE_SETS[key][1]
    if dataset == "imagenet":
        return list(_load("zh_imagenet_templates.json"))
    if dataset == "simple":
        return list(ZH_SIMPLE_TEMPLATES)
    return list(_load("zh_prompts_datasets.json")[_ZH_DATASETS[dataset]]["templates"])


def zh_classnames(dataset: str) -> list[str] | None:
    """Chinese class names of `dataset` in label order (None when none are packaged)."""
    key = _key(dataset)
    if key in _IMAGENET_KEYS:
        return list(_load("zh_imagenet_classes.json"))
    name = _ZH_DATASETS.get(key)
    return list(_load("zh_prompts_datasets.json")[name]["classes"]) if name else None


def classnames_for(dataset: str, templates: object, count: int | None = None,
                   own: Sequence[str] | None = None, written: Sequence[str] | None = None) -> list[str] | None:
    """Class names matching `templates` when they are a language set or, for any other spec, when the templates
    it stands for (`written`: what `get_templates` gave for it) are Chinese (`_written_in`), else None (use the
    usual ones).

    ValueError when the set's language has no names for `dataset` (prompting Chinese templates
    with English names would silently measure something else) or their count differs. The dataset's
    `own` names do when they are in the set's language already (a folder dataset of 猫/ 狗/).
    """
    named_set = is_language_set(templates)
    language = set_language(templates) if named_set else _written_in(written)
    if language == "en":
        return None
    names = zh_classnames(dataset)
    if names is None and not named_set:
        return None  # the user's own Chinese template on English names: as given (the run's notice says more)
    if names is None and own and all(language_of(str(n)) == language for n in own):
        return None
    if names is None:
        raise ValueError(f"template set {templates!r} is Chinese but no Chinese class names are packaged for "
                         f"dataset {dataset!r} (packaged: imagenet, cifar10, cifar100); pass --classnames FILE "
                         "(Chinese names, one a line, in the dataset's class order) or an English --templates set")
    if count is not None and len(names) != count:
        raise ValueError(f"{len(names)} Chinese class names packaged for {dataset!r}, but the dataset has {count}")
    return names


def _written_in(templates: Sequence[str] | None) -> str:
    """``zh`` when every template of a spec that is no language set (one template, a file, a list) is written in
    Chinese, else ``en``: `eval zeroshot --templates 一张{}的照片` on CIFAR-10 prompted 一张airplane的照片 (6.67%
    where zh-cifar10's names gave 66.67% on clipforge-tiny-zh) instead of taking the dataset's Chinese names."""
    texts = [t.replace("{}", "") for t in templates or ()]
    return "zh" if texts and all(_chinese_template(t) for t in texts) else "en"


_KANA_HANGUL = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")


def _chinese_template(text: str) -> bool:
    """Chinese, not merely holding ideographs: no kana or hangul (``{}の写真`` is Japanese: it took the Chinese names,
    ``飞机の写真``) and no more Latin words than ideographs (``a photo of a {}, 照片`` is English with a gloss)."""
    ideographs = len(re.findall(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]", text))
    words = len(re.findall(r"[A-Za-z]+", text))
    return ideographs > 0 and not _KANA_HANGUL.search(text) and ideographs >= words


def default_template_set(dataset: str, languages: Sequence[str], english_default: str) -> str:
    """The set `eval zeroshot` prompts `dataset` with for a model speaking `languages` (first wins).

    A first language with no class names packaged for `dataset` gives way to English where the model
    reads English too: `clipforge-tiny-zh` (zh, en) on CUB was refused by default ("no Chinese class
    names ... for 'cub'"), in `eval zeroshot` and in every suite cell of a dataset without them.
    """
    first = languages[0] if languages else "en"
    if first == "en":
        return english_default
    key = _key(dataset)
    key = "imagenet" if key in _IMAGENET_KEYS else key
    candidate = f"{first}-{key}"
    if candidate in LANGUAGE_SETS:
        return candidate
    if first == "zh" and zh_classnames(dataset) is None and "en" in languages:
        return english_default
    return f"{first}-simple"


MULTILINGUAL = "multilingual"
"""A model's language entry that covers every script (its notice never fires): SigLIP 2, MetaCLIP 2
worldwide, the XLM-R/NLLB/mT5 towers (their architecture config says so: ``languages``)."""


# A letter's script is the first word of the Unicode name of its NFKC form ("CYRILLIC SMALL LETTER KA"; ｃ, 𝐜 and
# ª are Latin, µ Greek, ｱ katakana); these read as one script, and these name none (ʻ in Hawaiʻi: part of the word)
_SCRIPT_ALIASES = {"CJK": "Han", "IDEOGRAPHIC": "Han", "BOPOMOFO": "Han", "HIRAGANA": "kana", "KATAKANA": "kana",
                   "KATAKANA-HIRAGANA": "kana", "HENTAIGANA": "kana", "HANGUL": "Hangul"}
_NO_SCRIPT = {"", "MODIFIER", "COMBINING", "CARON", "SPACE", "TURNED", "VERTICAL", "ROMAN", "MASU"}
_PER_CHARACTER = {"Han", "kana"}  # written without spaces: each character is a word's worth ("猫 cat" is half Chinese)
# script -> the tag `language_of` gives (the language most written in it); any other script: its name, lower case
_SCRIPT_TAGS = {"Han": "zh", "Japanese": "ja", "Hangul": "ko", "Arabic": "ar", "Devanagari": "hi", "Cyrillic": "ru",
                "Greek": "el", "Hebrew": "he", "Thai": "th", "Latin": "en", "": "en", "emoji": "emoji", "mixed": "mixed"}
# script -> the language codes a model may declare that read it (beside MULTILINGUAL)
_READ_BY = {"Han": {"zh", "yue", "ja"}, "Japanese": {"ja"}, "Hangul": {"ko"}, "Arabic": {"ar", "fa", "ur", "ps", "ku", "sd", "ug"},
            "Devanagari": {"hi", "mr", "ne", "sa"}, "Greek": {"el"}, "Hebrew": {"he", "iw", "yi"}, "Thai": {"th"},
            "Cyrillic": {"ru", "uk", "be", "bg", "sr", "mk", "kk", "ky", "mn", "tg"}}


@lru_cache(maxsize=4096)
def _script_of_letter(char: str) -> str:
    word = (unicodedata.name(unicodedata.normalize("NFKC", char)[:1], "").split() or [""])[0]
    return "" if word in _NO_SCRIPT else _SCRIPT_ALIASES.get(word, word.title())


def script_counts(text: str) -> tuple[dict[str, int], bool]:
    """({script: words in it}, whether `text` holds emoji), scripts in their first order. A word is a run of
    letters (their marks included: बिल्ली is one) of one script, or one Han or kana character (Chinese and
    Japanese put no spaces between words; `_chinese_template` weighs ideographs against Latin words likewise).
    Kana make the Han characters beside them Japanese (三毛猫の子猫). Digits, punctuation and emoji are no words."""
    counts: dict[str, int] = {}
    emoji, run = False, ""
    for char in text:
        kind = unicodedata.category(char)
        if kind[0] == "M":
            continue  # a vowel sign, an accent, a variation selector: part of the word (or emoji) before it
        if kind[0] != "L":
            emoji = emoji or (kind == "So" and ord(char) >= 0x2190)  # arrows, symbols, dingbats, the emoji planes
            run = ""
            continue
        script = "Latin" if char < "\u0250" else _script_of_letter(char)  # ASCII, Latin-1 (µ, ª) and Latin Extended
        if not script:
            continue
        if script != run or script in _PER_CHARACTER:
            counts[script] = counts.get(script, 0) + 1
        run = script
    if "kana" in counts:
        counts["Japanese"] = counts.pop("kana") + counts.pop("Han", 0)
    return counts, emoji


def _ranked(counts: dict[str, int]) -> list[str]:
    """Scripts by their words, most first; a tie goes to Han or kana ("猫 cat" is Chinese, as tests/chinese pin it),
    then to Latin ("α-helix" is English), then to the script written first."""
    return sorted(counts, key=lambda script: (-counts[script], script not in _PER_CHARACTER, script != "Latin"))


def script_of(text: str) -> str:
    """The script most of `text` is written in: one that holds at least half its words (``Latin``, ``Han``,
    ``Japanese``, ``Hangul``, ``Cyrillic``, ...), ``mixed`` when none does, ``emoji`` for emoji and no words,
    ``""`` for neither (digits, punctuation)."""
    counts, emoji = script_counts(text)
    return _main_script(counts, emoji)


def _main_script(counts: dict[str, int], emoji: bool) -> str:
    if not counts:
        return "emoji" if emoji else ""
    main = _ranked(counts)[0]
    return main if 2 * counts[main] >= sum(counts.values()) else "mixed"


def language_of(text: str) -> str:
    """A rough language tag for `text`, by the script most of it is written in (`script_of`): ``zh`` (Han),
    ``ja`` (kana, with any kanji), ``ko``, ``ar``, ``hi``, ``ru``, ``el``, ``he``, ``th``, ``en`` (Latin, or no
    words), ``emoji``, ``mixed``, else the script's name. It had been ``zh`` for any ideograph and ``en`` for all
    else: Korean, Arabic and Russian were "en", and Korean words with one ideograph "zh" (audit 63)."""
    script = script_of(text)
    return _SCRIPT_TAGS.get(script, script.lower())


def _reads(languages: Sequence[str], script: str) -> bool:
    """Whether a model trained for `languages` reads `script`: Latin always (every model here reads it: English
    BPE, Chinese-CLIP's vocabulary too), every script when it is MULTILINGUAL, else a language written in it."""
    codes = {str(code).lower().replace("_", "-").split("-")[0] for code in languages}
    return script in ("Latin", "") or MULTILINGUAL in codes or bool(codes & _READ_BY.get(script, {script.lower()}))


@cache
def _multilingual_example() -> str | None:
    """The first pretrained ``ARCH:TAG`` of the registry (as `clipforge models --all` lists it) whose text tower
    is multilingual, for the notice's advice; None when the registry lists none."""
    from clipforge.models.configs import ARCH_CONFIGS
    from clipforge.weights.registry import PRETRAINED

    return next((f"{arch}:{tag}" for arch, tag in PRETRAINED
                 if MULTILINGUAL in ((ARCH_CONFIGS.get(arch) or {}).get("languages") or ())), None)


def _config_languages(model: Any) -> tuple[str, ...] | None:
    """``languages`` of the architecture config a model (or the `LoadedModel` around it) was built from."""
    for module in (model, getattr(model, "model", None)):
        config = getattr(module, "arch_config", None)
        if isinstance(config, dict) and config.get("languages"):
            return tuple(config["languages"])
    return None


def model_languages(model: Any) -> tuple[str, ...]:
    """The languages a model (a `LoadedModel`, a name, or a shipped model folder) was trained for.

    Order: the model's own `languages` attribute (the trainer sets it), its architecture config's ``languages``
    (the multilingual families), the registry names of Chinese-CLIP (``cn-...``), the architecture a name
    (``ARCH`` or ``ARCH:TAG``) names, the languages a ``.safetensors`` file records (``clipforge_languages``:
    what `clipforge train` saves, so a checkpoint fine-tuned from clipforge-tiny-zh reads zh, en as its source
    did; it had been taken for English), a shipped model's (or a model folder's) `languages.json`, else English.
    """
    for module in (model, getattr(model, "model", None)):
        own = getattr(module, "languages", None)
        if own and isinstance(own, list | tuple):
            return tuple(own)
    configured = _config_languages(model)
    if configured:
        return configured
    from clipforge.models.configs import ARCH_CONFIGS
    from clipforge.weights.save import recorded_languages
    from clipforge.weights.shipped import SHIPPED_MODELS_DIR

    for name in (getattr(model, "name", model), getattr(model, "weights", None)):
        if not isinstance(name, str | Path) or not str(name):
            continue
        text = str(name).removeprefix("random:")
        if text.startswith("cn-"):
            return ("zh",)
        named = ARCH_CONFIGS.get(text.split(":", 1)[0])
        if named and named.get("languages"):
            return tuple(named["languages"])
        for where in (Path(text).expanduser(), SHIPPED_MODELS_DIR / text):
            if recorded := recorded_languages(where):
                return recorded
    return DEFAULT_LANGUAGES


def text_notices(texts: Sequence[str], model: Any, name: str, tokenizer: Any = None, what: str = "query",
                 done: str = "searched") -> list[str]:
    """Every notice about texts a model embeds, one line each: a script it was not trained for (`query_notice`,
    over them all), then each text whose end its context cut (`text.context_cut.unread_part`: only the beginning
    was embedded; clipforge-tiny-zh reads 16 tokens, about four Chinese characters). The one wording of the
    CLI's `search` and `similarity` and of the server's search. `tokenizer`: the model's (default: built from
    ``model.model``, a library's encoder, or `model`)."""
    from clipforge.text.context_cut import cut_notice, unread_part
    from clipforge.text.families import tokenizer_of

    texts = [text for text in texts if text and text.strip()]
    if not texts:
        return []
    notices = [notice] if (notice := query_notice(" ".join(texts), model)) else []
    if tokenizer is None:
        inner = getattr(model, "model", model)
        tokenizer = tokenizer_of(inner) if hasattr(inner, "context_length") else None
    if tokenizer is not None:
        context = int(tokenizer.context_length)
        notices += [cut_notice(text, tail, name, context, what, done)
                    for text in dict.fromkeys(texts) if (tail := unread_part(tokenizer, text))]
    return notices


def templates_for_labels(templates: object, labels: Sequence[str]) -> object:
    """A prompt set in the labels' language: when every label is Chinese, ``simple`` ("a photo of a {}.": the
    CLI's and the server's default, as a set name or written out) becomes ``zh-simple`` ("一张{}的照片"), and a
    set with a Chinese twin becomes the twin (``imagenet``, `tag`'s default -> ``zh-imagenet``, Chinese-CLIP's
    80; ``cifar10`` -> ``zh-cifar10``): "a bad photo of a 猫." is neither English nor Chinese. A set without a
    twin (``imagenet7``), a template or a file of one's own is kept as given. A one-template list stays a
    list, so callers that report the templates they used report the Chinese one. Chinese as for templates
    (`_chinese_template`): Japanese labels with kanji (三毛猫の子猫) had taken "一张{}的照片" (audit 63)."""
    simple = ("simple", "photo", "default", "a photo of a {}.")
    chinese = bool(labels) and all(_chinese_template(str(label)) for label in labels)  # not 三毛猫の子猫
    if chinese and isinstance(templates, str) and templates.strip().lower() in simple:
        return "zh-simple"
    if (chinese and isinstance(templates, str) and "{" not in templates and not is_language_set(templates)
            and not Path(templates).expanduser().is_file() and (twin := _set_key(f"zh-{templates}"))):
        return twin
    if chinese and isinstance(templates, list | tuple) and [str(t).strip().lower() for t in templates] == [simple[-1]]:
        return list(ZH_SIMPLE_TEMPLATES)
    return templates


def query_notice(text: str, model: Any, what: str = "query") -> str | None:
    """A one-line notice when `text` is in a script `model` was not trained for, else None.

    A model's tokenizer may encode any script and still know nothing of it: OpenAI's byte-level BPE
    turns Chinese into byte pieces an English-only model never learned, and Chinese-CLIP's WordPiece
    maps scripts outside its vocabulary to [UNK]. Both give confident-looking but meaningless scores.
    `what` names the text in the sentence: ``query`` (search, similarity), or a plural such as ``labels``
    (classify, tag: "the labels '猫, 狗' are written in zh ...": they had been called "the query"), ``class names``
    or ``templates`` (`eval zeroshot`: "the class names '鸟 猫 狗' are written in zh ...").

    Said when the script most of it is written in (`script_of`) is one the model's languages do not read
    (`_reads`), or, for text of mixed scripts, when half its words are, naming each script it does not read.
    Chinese alone keeps its sentence and its advice (a Chinese model); any other script is advised a multilingual
    model of the registry. Emoji without words are said to be no words. It had known Chinese only: Korean,
    Japanese kana, Arabic, Hindi, Russian and emoji got no notice, and Korean with one ideograph was "zh" (audit 63).
    """
    languages = model_languages(model)
    counts, emoji = script_counts(text)
    main = _main_script(counts, emoji)
    unread = [script for script in _ranked(counts) if not _reads(languages, script)]
    said = main in unread or (main == "mixed" and 2 * sum(counts[script] for script in unread) >= sum(counts.values()))
    plural = what.endswith("s")
    them, are = ("them", "are") if plural else (f"this {what}", "is")
    name = getattr(model, "name", None) or (model if isinstance(model, str | Path) else type(model).__name__)
    trained = f"model {name} was trained for {', '.join(languages)}"
    if said and unread == ["Han"]:
        return (f"notice: the {what} {text[:40]!r} {are} written in zh but {trained} only; its scores for {them} "
                f"are not meaningful (use a zh model, e.g. clipforge-tiny-zh offline or cn-ViT-B-16)")
    if said:
        scripts = ", ".join(unread[:-1]) + (" and " if len(unread) > 1 else "") + unread[-1]
        example = _multilingual_example()
        advice = f" (use a multilingual model, e.g. {example})" if example else ""
        return (f"notice: the {what} {text[:40]!r} {are} written in {scripts} script but {trained} only; its scores "
                f"for {them} are not meaningful{advice}")
    if main == "emoji" and not _reads(languages, main):
        return (f"notice: the {what} {text[:40]!r} {are} emoji, not words; {trained} text only, so its scores for "
                f"{them} are not meaningful (write them as words)")
    tokenizer = getattr(model, "tokenizer", None) or getattr(getattr(model, "model", None), "tokenizer", None)
    unknown = getattr(tokenizer, "unknown_fraction", None)
    if callable(unknown) and unknown(text) > 0:
        return (f"notice: {unknown(text):.0%} of the {what} {text[:40]!r} is outside the model's vocabulary "
                f"([UNK]); that part cannot be {'searched' if what == 'query' else 'read'}")
    return None
