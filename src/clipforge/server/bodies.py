"""Request bodies of the REST API: JSON or form data, validated by one model per form of each body.

`POST /api/search` and `/api/classify` take `application/json` (an image as base64, never a URL or
a server path: the server fetches nothing) as well as form data; `POST /api/images` takes a
multipart file. Each field's rule is written once, as a pydantic type whose JSON schema is what
`/openapi.json` publishes and whose validator is what the server runs, so a request is valid
for a generated client exactly when the server accepts it. Patterns are plain regular
expressions that Python, ECMA-262 and Rust engines read alike (explicit character classes, no
`\\s`, no lookarounds, no large bounded repeats).

This module is what a body may be (the models and their published schemas); `body_parsing` reads a
request's body and validates it against them.
"""

# No `from __future__ import annotations`: the models below are built inside a function from local
# types (the bounds come from the server's limits), and pydantic must see those types themselves.

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from PIL import Image
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from clipforge.server.limits import ServerLimits
from clipforge.server.uploads import ACCEPTED_FORMATS
from clipforge.text.labels import LABEL_SEPARATORS
from clipforge.text.typed import invisible_class, invisible_problem, unicode_problem
from clipforge.zeroshot.prompts import MAX_TEMPLATE_CHARS, TEMPLATE_PATTERN, list_template_sets

__all__ = ["IMAGE_MEDIA_TYPES", "BodyKind", "Bodies", "build_bodies"]

# Exactly the characters str.isspace() (and so str.strip()) treats as blank, as one regex class.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A text or label needs a visible character (`text.typed.has_visible`): blanks, and the control, format and other
# invisible characters ("\u200d", "\u202e", "\x00" were searched as an empty prompt and answered hits, audit 63)
_UNSEEN = _SPACE + invisible_class()
NONBLANK_LABEL = f"[^,{_UNSEEN}]"
NONBLANK_TEXT = f"[^{_UNSEEN}]"
# A comma-separated form field is plain text: a JSON object or list sent in its place (which a form
# can only carry as its JSON text, e.g. `{"a": 1}`) is refused instead of read as labels.
NOT_JSON = r'^[^{}\[\]"]*$'
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
JSON_TYPES = ("application/json",)
MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"
# 1x1 red PNG: the example image of /docs (and of schemathesis' example phase).
EXAMPLE_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


def _image_media_types() -> str:
    """The media types of the formats an image part is read in (`uploads.ACCEPTED_FORMATS`, AVIF and HEIF where this
    installation reads them), as Pillow names them: the list was written out by hand and left AVIF out, which the
    server took (201) and its 415 named as accepted."""
    Image.init()
    return ", ".join(Image.MIME.get(fmt, f"image/{fmt.lower()}") for fmt in ACCEPTED_FORMATS)


IMAGE_MEDIA_TYPES = _image_media_types()


def _not_bool(value: Any) -> Any:
    """JSON's true/false is not a number (pydantic's lax mode read `"top_k": true` as 1)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


def _checked(rule: Callable[[str], bool], message: str | Callable[[str], str]) -> AfterValidator:
    """`message`: the refusal, or a function of the refused value that words it (a template's full-width braces)."""

    def check(value: str) -> str:
        if problem := unicode_problem(value):  # the words of the CLI's check (`text.typed`), a request's version
            raise ValueError(problem)
        if not rule(value):
            raise ValueError(message(value) if callable(message) else message)
        return value

    return AfterValidator(check)


class _Query(BaseModel):
    """A search body: a text, an image, or both."""

    @model_validator(mode="after")
    def _text_or_image(self) -> "_Query":
        if getattr(self, "text", None) is None and getattr(self, "image", None) is None:
            raise ValueError("give a text, an image, or both")
        return self


def _text_type(limits: ServerLimits) -> Any:
    # A query text needs a visible character, not only blanks (str.isspace: spaces, tabs, U+3000 ...) nor invisible
    # ones (ZWJ, RLO, NUL: `text.typed.invisible_problem`), as the CLI's `search` refuses them: "   ", "\u3000" and
    # "\u200d" were embedded as they were and answered 200 with hits for nothing asked. Leave `text` out to search by
    # image alone.
    schema = {
        "type": "string",
        "minLength": 1,
        "maxLength": limits.max_text_chars,
        "pattern": NONBLANK_TEXT,
        "description": "what to look for, in words (not only blanks)",
        "examples": ["a dog on the beach"],
    }
    return Annotated[
        str,
        Field(min_length=1, max_length=limits.max_text_chars),
        WithJsonSchema(schema),
        _checked(
            lambda v: invisible_problem(v) is None,  # after min_length: "" keeps pydantic's words
            lambda v: f"{invisible_problem(v)}: give some words, or leave text out to search by image alone",
        ),
    ]


def _label_type(limits: ServerLimits) -> Any:
    schema = {
        "type": "string",
        "minLength": 1,
        "maxLength": limits.max_label_chars,
        "pattern": NONBLANK_LABEL,
    }
    return Annotated[
        str,
        Field(max_length=limits.max_label_chars),
        WithJsonSchema(schema),
        _checked(
            lambda v: re.search(NONBLANK_LABEL, v) is not None,
            "a label needs a visible character other than commas and blanks",
        ),
    ]


def _comma_type(limits: ServerLimits, required: bool) -> Any:
    """`"cat, dog, car"` (or "猫，狗、鸟": the separators of `text.labels.split_labels`): at most max_labels items
    (max_labels - 1 separators) in max_labels_chars characters."""
    separators = "".join(LABEL_SEPARATORS)
    count = rf"^[^{separators}]*(?:[{separators}][^{separators}]*){{0,{limits.max_labels - 1}}}$"
    nonblank = f"[^{separators}{_UNSEEN}]"
    patterns = [{"pattern": count}, {"pattern": NOT_JSON}] + ([{"pattern": nonblank}] if required else [])
    schema = {
        "type": "string",
        "maxLength": limits.max_labels_chars,
        "allOf": patterns,
        "description": f"comma-separated, at most {limits.max_labels} items",
    }
    if required:
        schema["minLength"] = 1
    checks = [
        _checked(
            lambda v: re.search(count, v) is not None,
            f"at most {limits.max_labels} comma-separated items are allowed",
        ),
        _checked(
            lambda v: re.search(NOT_JSON, v) is not None,
            "comma-separated labels as plain text: no brackets, braces or double quotes (send a JSON list "
            "in a JSON body for labels that need them)",
        ),
    ]
    if required:
        checks.append(_checked(lambda v: re.search(nonblank, v) is not None, "give at least one label"))
    return Annotated[(str, Field(max_length=limits.max_labels_chars), WithJsonSchema(schema), *checks)]


def _label_list_type(limits: ServerLimits, required: bool) -> Any:
    label = _label_type(limits)
    return Annotated[list[label], Field(min_length=1 if required else 0, max_length=limits.max_labels)]


def _template_type() -> Any:
    sets = list_template_sets()
    schema = {
        "anyOf": [
            {"type": "string", "enum": sets},
            {"type": "string", "maxLength": MAX_TEMPLATE_CHARS, "pattern": TEMPLATE_PATTERN},
        ],
        "description": "a prompt with exactly one {} where the label goes ({{ and }} for literal braces), "
        "or the name of a template set",
        "examples": ["a photo of a {}."],
    }

    def valid(value: str) -> bool:
        return value in sets or (
            len(value) <= MAX_TEMPLATE_CHARS and re.search(TEMPLATE_PATTERN, value) is not None
        )

    generic = (f"must contain '{{}}' exactly once (no other braces except '{{{{' and '}}}}', "
               f"no format specs) or be a template set name ({', '.join(sets[:6])}, ...)")

    def refusal(value: str) -> str:  # the CLI's words (`check_template`): its limit, its full-width braces
        if len(value) > MAX_TEMPLATE_CHARS:  # the reason, not the braces (one `{}` in 1,001 characters was told both)
            return f"has {len(value)} characters, more than the limit of {MAX_TEMPLATE_CHARS}"
        if "\uff5b" in value or "\uff5d" in value:
            return ("has full-width braces '｛｝', not the ASCII '{}' where the label goes, e.g. '一张{}的照片'")
        return generic

    return Annotated[str, WithJsonSchema(schema), _checked(valid, refusal)]


def _base64_type(limits: ServerLimits) -> Any:
    # Only `format: byte` is published as a constraint: no JSON schema can say "decodes to an image",
    # and a bare format is what lets a test generator plug in real image files for it.
    max_chars = limits.max_base64_chars
    schema = {
        "type": "string",
        "format": "byte",
        "x-max-length": max_chars,
        "description": f"the image file's bytes in standard base64 (not a URL or a path), at most {max_chars:,} "
        f"characters",
    }
    return Annotated[
        str,
        WithJsonSchema(schema),
        _checked(lambda v: len(v) <= max_chars, f"at most {max_chars:,} characters of base64 are accepted"),
        _checked(is_base64, "must be an image file in standard base64 (A-Z a-z 0-9 + /, padded with =)"),
    ]


def is_base64(value: str) -> bool:
    """`value` matches BASE64 (groups of four, `=` padding only at the end), checked in linear time by
    binascii's strict decoder: Python's regex engine took 1-3 s on a 20 MB string, holding the GIL."""
    if len(value) < 4 or len(value) % 4 or not value.isascii():
        return False
    try:
        binascii.a2b_base64(value, strict_mode=True)
    except ValueError:
        return False
    return True


def _file_type(limits: ServerLimits, what: str) -> Any:
    # The byte limit is stated, not schema-enforced: an oversized file is a 413, not a schema violation.
    schema = {
        "type": "string",
        "format": "binary",
        "minLength": 1,
        "x-max-bytes": limits.max_upload_bytes,
        "description": f"{what}: a file part of at most {limits.max_upload_bytes:,} bytes; its format is read "
        f"from its bytes",
    }
    return Annotated[bytes, WithJsonSchema(schema)]


def _strict(
    title: str, examples: list[dict[str, Any]] | None = None, any_of: list[dict[str, Any]] | None = None
) -> ConfigDict:
    extra: dict[str, Any] = {}
    if examples:
        extra["examples"] = examples
    if any_of:
        extra["anyOf"] = any_of
    return ConfigDict(extra="forbid", title=title, json_schema_extra=extra or None)


@dataclass(frozen=True)
class BodyKind:
    """One endpoint's body: a model per accepted media type, and which fields are files."""

    models: dict[str, type[BaseModel]]
    files: dict[str, str]
    """File fields, with the words errors use for them ("query image", "upload")."""
    examples: dict[str, Any]

    def openapi(self) -> dict[str, Any]:
        """The `requestBody` object of this endpoint's OpenAPI operation."""
        content: dict[str, Any] = {}
        for media, model in self.models.items():
            entry: dict[str, Any] = {"schema": _schema(model)}
            if media == MULTIPART and self.files:
                entry["encoding"] = {name: {"contentType": IMAGE_MEDIA_TYPES} for name in self.files}
            if media in self.examples:
                entry["examples"] = self.examples[media]
            content[media] = entry
        return {"required": True, "content": content}


@dataclass(frozen=True)
class Bodies:
    search: BodyKind
    classify: BodyKind
    upload: BodyKind


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    for prop in schema.get("properties", {}).values():
        if prop.get("default", 0) is None:  # "absent", not null: null is not accepted
            del prop["default"]
    return schema


def build_bodies(limits: ServerLimits) -> Bodies:
    """The request models for these limits (bounds are part of the published contract)."""
    TextT, Base64T = _text_type(limits), _base64_type(limits)  # noqa: N806 (types)
    TopK = Annotated[
        int,
        Field(ge=1, le=limits.max_top_k, description="how many results"),  # noqa: N806
        BeforeValidator(_not_bool),
    ]
    default_k = min(20, limits.max_top_k)
    TagList, TagString = _label_list_type(limits, False), _comma_type(limits, False)  # noqa: N806
    LabelList, LabelString = _label_list_type(limits, True), _comma_type(limits, True)  # noqa: N806
    Template = _template_type()  # noqa: N806
    QueryFile, ImageFile, UploadFile = (_file_type(limits, w) for w in ("query image", "image", "file"))  # noqa: N806
    query_needed = [{"required": ["text"]}, {"required": ["image"]}]

    class SearchJSON(_Query):
        model_config = _strict("SearchJSON", any_of=query_needed)
        text: TextT = None
        image: Base64T = None
        top_k: TopK = default_k
        tags: TagList | TagString = None

    class SearchForm(_Query):
        model_config = _strict("SearchForm", any_of=query_needed)
        text: TextT = None
        image: QueryFile = None
        top_k: TopK = default_k
        tags: TagString = None

    class SearchText(_Query):
        model_config = _strict("SearchText", any_of=[{"required": ["text"]}])
        text: TextT = None
        top_k: TopK = default_k
        tags: TagString = None

    class ClassifyJSON(BaseModel):
        model_config = _strict("ClassifyJSON")
        image: Base64T
        labels: LabelList | LabelString
        template: Template = "a photo of a {}."

    class ClassifyForm(BaseModel):
        model_config = _strict("ClassifyForm")
        image: ImageFile
        labels: LabelString
        template: Template = "a photo of a {}."

    class UploadForm(BaseModel):
        model_config = _strict("UploadForm")
        file: UploadFile

    search_examples = {
        "text": {"summary": "by text", "value": {"text": "a photo of a fish", "top_k": 3}},
        "image": {"summary": "by example image (base64)", "value": {"image": EXAMPLE_PNG, "top_k": 5}},
        "both": {
            "summary": "text and image, only some tags",
            "value": {"text": "at night", "image": EXAMPLE_PNG, "top_k": 10, "tags": ["city"]},
        },
    }
    classify_examples = {
        "labels": {
            "summary": "labels and a template",
            "value": {
                "image": EXAMPLE_PNG,
                "labels": ["cat", "dog", "red square"],
                "template": "a photo of a {}.",
            },
        },
        "set": {
            "summary": "a template set",
            "value": {"image": EXAMPLE_PNG, "labels": "cat, dog", "template": "imagenet7"},
        },
    }
    return Bodies(
        search=BodyKind(
            {"application/json": SearchJSON, MULTIPART: SearchForm, URLENCODED: SearchText},
            {"image": "query image"},
            {"application/json": search_examples},
        ),
        classify=BodyKind(
            {"application/json": ClassifyJSON, MULTIPART: ClassifyForm},
            {"image": "image"},
            {"application/json": classify_examples},
        ),
        upload=BodyKind({MULTIPART: UploadForm}, {"file": "upload"}, {}),
    )
