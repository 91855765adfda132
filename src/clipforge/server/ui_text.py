"""The web UI's words in English and Chinese, from the package data file `ui_text.json`.

Three kinds of text, three ways of choosing the language:

- `ui`: labels, buttons, tabs and headings. Sent to the browser as gradio `I18n` keys and translated
  there by the browser's language. gradio's frontend picks its locale from `navigator.language` among
  its own built-in languages only (an exact match, else the part before the first ``-``), never among
  the keys of `gr.I18n`: ``zh-CN`` and ``zh-TW`` are built in, but ``zh`` is not, so ``zh``,
  ``zh-Hans``, ``zh-SG``, ``zh-HK``, ``zh-Hant-TW``, ``zh-cn``... all got English labels beside Chinese
  status lines. `browser_locale_script` (put in the page before gradio's code by `ui.mount_ui`) shows
  gradio every Chinese tag as the one of those two that `status_locale` picks for it, so labels and
  status lines are one language. A key must not hold ``}`` or ``.``: gradio finds the end of a
  translation marker at the first ``}``, and svelte-i18n reads dots as nesting.
- `status`: the status lines the server writes after an event, in the language of the request's
  ``Accept-Language`` (`status_locale`): any ``zh`` tag gets Chinese here, Traditional for Taiwan,
  Hong Kong, Macau and ``Hant``. The API's own messages inside them (refusals, "why nothing
  matched", model notices) stay English, the REST API's words, except the ones a class most needs
  (`ui_handlers`): a query or labels in a language the model was not trained for, and a phone photo in
  a format the server cannot read. The offline model's banner is a `ui` key (`offline_model_notice`).
- refusals of the page's own routes (`RefusalWords`): a 429 (too many events, pages or streams from one address)
  or a 507 (the page's upload space is full) answered under ``/gradio_api/`` is shown by gradio's frontend as
  a toast of its JSON; a Chinese browser gets its ``detail`` in Chinese (status, code and headers kept). The
  REST API's answers (``/api/``) stay English.
- `examples`: the values a field starts with (default labels, the search placeholder, the prompt
  template), chosen by the served model's first language, not the browser's: Chinese labels are the
  right default for a Chinese-CLIP model whatever language its user reads.

The file is checked when first read (every locale holds exactly the keys of ``en``), so a missing
translation is one clear error naming the file, the locale and the keys.
"""

from __future__ import annotations

import json
import re
import string
from functools import lru_cache
from importlib import resources
from typing import Any

from clipforge.server.middleware import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ENGLISH",
    "RefusalWords",
    "TextFileError",
    "browser_locale_rule",
    "browser_locale_script",
    "examples_for",
    "i18n",
    "key",
    "status_locale",
    "status_text",
    "ui_keys",
]

FILE = "ui_text.json"
ENGLISH = "en"
SIMPLIFIED = "zh-CN"
TRADITIONAL = "zh-TW"
# Translations also registered under other Chinese tags: gradio's frontend never picks these (see the module
# notes) but svelte-i18n falls back through "zh", and a gradio that did pick them would find them.
_UI_ALIASES = {
    "zh": SIMPLIFIED,
    "zh-Hans": SIMPLIFIED,
    "zh-SG": SIMPLIFIED,
    "zh-Hant": TRADITIONAL,
    "zh-HK": TRADITIONAL,
    "zh-MO": TRADITIONAL,
}
# re.ASCII: Python's case-insensitive match also takes the Kelvin sign for k and the long s for s, JavaScript's
# (`browser_locale_rule`) does not; language tags are ASCII, and both sides now read them alike
_CHINESE_TAG = re.compile(r"^zh(?:-|$)", re.IGNORECASE | re.ASCII)
_TRADITIONAL_TAGS = re.compile(r"^zh-(?:.*-)?(?:hant|tw|hk|mo)(?:-|$)", re.IGNORECASE | re.ASCII)
_SIMPLIFIED_SCRIPT = re.compile(r"-hans(?:-|$)", re.IGNORECASE | re.ASCII)


class TextFileError(ValueError):
    """`ui_text.json` does not hold what the UI needs (a broken install or an incomplete edit)."""


def _fields(text: str) -> set[str]:
    """The `str.format` fields of a status line (``{}`` in a ui text is gradio's business: none there)."""
    try:
        return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    except ValueError as exc:
        raise TextFileError(f"{FILE}: {text[:40]!r} is not a valid format string ({exc})") from None


def _check(data: Any) -> dict[str, dict[str, dict[str, str]]]:
    """The file's sections after checking each one: every locale has exactly the keys of the first
    (English) one, every value is a string, and no `ui` key breaks gradio's marker format."""
    if not isinstance(data, dict):
        raise TextFileError(f"{FILE}: expected a JSON object with sections ui, status, examples")
    out = {}
    for section, first in (("ui", ENGLISH), ("status", ENGLISH), ("examples", ENGLISH)):
        table = data.get(section)
        if not isinstance(table, dict) or not isinstance(table.get(first), dict):
            raise TextFileError(f"{FILE}: section {section!r} must map locales to objects, {first!r} first")
        keys = set(table[first])
        for locale, words in table.items():
            if not isinstance(words, dict) or not all(isinstance(v, str) for v in words.values()):
                raise TextFileError(f"{FILE}: {section}.{locale} must map keys to strings")
            missing, extra = sorted(keys - set(words)), sorted(set(words) - keys)
            if missing or extra:
                raise TextFileError(
                    f"{FILE}: {section}.{locale} must hold the keys of {section}.{first}; "
                    f"missing {missing}, unknown {extra}"
                )
        for locale, words in table.items():  # a translation fills the same fields as the English line
            for name in keys:
                if _fields(words[name]) != _fields(table[first][name]):
                    raise TextFileError(
                        f"{FILE}: {section}.{locale}.{name} must use the fields {sorted(_fields(table[first][name]))} "
                        f"of {section}.{first}.{name}; it uses {sorted(_fields(words[name]))}"
                    )
        bad = [k for k in keys if section == "ui" and not re.fullmatch(r"[a-z0-9_]+", k)]
        if bad:
            raise TextFileError(f"{FILE}: ui keys must be lower-case words joined by '_' (gradio); got {bad}")
        out[section] = table
    return out


@lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, dict[str, str]]]:
    text = resources.files(__package__).joinpath(FILE).read_text(encoding="utf-8")
    try:
        return _check(json.loads(text))
    except json.JSONDecodeError as exc:
        raise TextFileError(f"{FILE}: not valid JSON ({exc})") from None


def ui_keys() -> list[str]:
    """Every key of the UI's fixed text (the English locale's)."""
    return list(_table()["ui"][ENGLISH])


def ui_translations() -> dict[str, dict[str, str]]:
    """locale -> {key: text} as gradio's frontend receives it, aliases included (see the module notes)."""
    table = dict(_table()["ui"])
    for alias, locale in _UI_ALIASES.items():
        table.setdefault(alias, table[locale])
    return table


def i18n() -> Any:
    """The `gr.I18n` of the UI's fixed text (gradio imported here: this module's data needs no gradio)."""
    import gradio as gr

    return gr.I18n(**ui_translations())


def key(name: str) -> Any:
    """The translation marker of one `ui` key; a name not in the file is an error now, not English later."""
    import gradio as gr

    if name not in _table()["ui"][ENGLISH]:
        raise KeyError(f"{FILE}: no ui key {name!r}")
    return gr.i18n.I18nData(name)


def status_locale(accept_language: str | None) -> str:
    """The status lines' locale for an ``Accept-Language`` header: its most preferred tag, ``zh-CN`` for a
    Chinese one (``zh-TW`` for Traditional: Taiwan, Hong Kong, Macau, ``Hant``), else English."""
    best, best_q = "", -1.0
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and quality > max(best_q, 0.0):  # q=0: "not this one" (RFC 9110)
            best, best_q = tag.strip(), quality
    if _CHINESE_TAG.match(best):
        # a script named outright wins over a region: zh-Hans-HK is Simplified Chinese read in Hong Kong
        simplified = _SIMPLIFIED_SCRIPT.search(best)
        return TRADITIONAL if _TRADITIONAL_TAGS.match(best) and not simplified else SIMPLIFIED
    return ENGLISH


def browser_locale_rule() -> str:
    """`status_locale`'s rule for one language tag as a JavaScript function expression (tag -> ``zh-CN``,
    ``zh-TW`` or ``en``), built from the same patterns, so the browser and the server cannot disagree."""
    patterns = [json.dumps(p.pattern) for p in (_CHINESE_TAG, _TRADITIONAL_TAGS, _SIMPLIFIED_SCRIPT)]
    chinese, traditional, simplified = (f"new RegExp({p}, 'i').test(tag)" for p in patterns)
    return (
        f"(tag) => !{chinese} ? {json.dumps(ENGLISH)} : {traditional} && !{simplified} "
        f"? {json.dumps(TRADITIONAL)} : {json.dumps(SIMPLIFIED)}"
    )


def browser_locale_script() -> str:
    """A ``<script>`` for the page's head, run before gradio's code: a browser whose language is any Chinese
    tag shows gradio the locale `status_locale` gives it (``zh-HK`` reads as ``zh-TW``, ``zh``/``zh-SG``/
    ``zh-Hans-HK`` as ``zh-CN``), the one form gradio's frontend matches (module notes). Other languages,
    and the user's own choice under the page's Settings link, are left to gradio."""
    return (
        "<script>(() => { const tag = String(navigator.language || (navigator.languages || [])[0] || '');"
        f" const locale = ({browser_locale_rule()})(tag);"
        f" if (locale !== {json.dumps(ENGLISH)} && locale !== tag) {{"
        " try { Object.defineProperty(navigator, 'language', { get: () => locale, configurable: true }); }"
        " catch (e) {} } })();</script>"
    )


def status_text(locale: str, name: str, /, **fields: Any) -> str:
    """One status line in `locale` (English when the file has no such locale), its fields filled in."""
    table = _table()["status"]
    return table.get(locale, table[ENGLISH])[name].format(**fields)


def examples_for(languages: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Default labels, search placeholder and prompt template for a model trained for `languages`: the
    first language with examples wins (`zeroshot.languages.default_template_set` decides the same way),
    English for any other model (multilingual ones included: they read English)."""
    table = _table()["examples"]
    first = languages[0] if languages else ENGLISH
    return dict(table.get(first, table[ENGLISH]))


_REFUSALS = {(429, "too_many_requests"): "too_many_requests", (507, "insufficient_storage"): "upload_space_full"}
"""(status, code) of a refusal of the page's own routes -> its status line: one sentence per kind, whichever of
the guards' limits answered (their English details name numbers a student cannot act on)."""


def translated_refusal(body: bytes, status: int, locale: str) -> bytes | None:
    """`body` (``{"error": code, "detail": ...}``) with its detail in `locale`'s words when its status and code are
    one of `_REFUSALS` and the locale is not English, else None (leave the answer as it is)."""
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    name = _REFUSALS.get((status, answer.get("error"))) if isinstance(answer, dict) else None
    if name is None or locale == ENGLISH:
        return None
    return json.dumps({**answer, "detail": status_text(locale, name)}, ensure_ascii=False).encode("utf-8")


_HELD_REFUSAL_BYTES = 64 << 10
"""The most of a 429/507 body held to reword it (the server's own refusals are a few hundred bytes)."""


class RefusalWords:
    """ASGI middleware: a 429 or 507 of the page's routes (``/gradio_api/...``) in the language of the request's
    ``Accept-Language`` (`translated_refusal`; module notes). Other answers pass untouched and unbuffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        locale = ENGLISH
        if scope["type"] == "http" and str(scope.get("path", "")).startswith("/gradio_api/"):
            accept = next((v for k, v in scope.get("headers", ()) if k.lower() == b"accept-language"), b"")
            locale = status_locale(accept.decode("latin-1"))
        if locale == ENGLISH:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body: list[bytes] = []

        async def reword(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message.get("status") in (429, 507):
                start = message  # held until its (small, JSON) body is whole
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            held = sum(len(part) for part in body)
            if message.get("more_body", False) and held <= _HELD_REFUSAL_BYTES:
                return
            page = b"".join(body)
            if message.get("more_body", False):  # not one of our small JSON refusals: passed on as it is
                start, held_start = None, start
                body.clear()
                await send(held_start)
                await send({"type": "http.response.body", "body": page, "more_body": True})
                return
            fields = list(start.get("headers", ()))
            worded = translated_refusal(page, int(start["status"]), locale)
            if worded is not None:
                page = worded
                fields = [(k, v) for k, v in fields if k.lower() != b"content-length"]
                fields.append((b"content-length", str(len(page)).encode("latin-1")))
            await send({**start, "headers": fields})
            await send({"type": "http.response.body", "body": page, "more_body": False})

        await self.app(scope, receive, reword)
