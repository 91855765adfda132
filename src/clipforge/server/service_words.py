"""What a request says, read by the server's one rule for each: its query text, labels and template checked within
the limits (`clean_*`, the same refusals for the REST API and the web page), and the sentences shown beside its
answer (`*_notice`, the CLI's own words: a language the model was not trained for, text its context cut away,
labels that cannot be what was meant). A part of `service.LibraryService`."""

from __future__ import annotations

from typing import Any

from clipforge.server.errors import APIError
from clipforge.server.limits import ServerLimits

__all__ = ["DEFAULT_TEMPLATE", "RequestWords"]

DEFAULT_TEMPLATE = "a photo of a {}."


class RequestWords:
    """The validation and notice methods of `LibraryService` (see the module docstring)."""

    library: Any
    limits: ServerLimits
    model_name: str

    def language_notice(self, text: str | None, what: str = "query") -> str | None:
        """A sentence to show beside results when `text` (a query, or the labels joined: `what` is then
        ``labels``) is in a language the model was not trained for: a Chinese query to an English-only CLIP gets
        confident-looking but meaningless scores. The CLI prints the same sentence
        (`zeroshot.languages.query_notice`); REST classify had called its labels "the query" (audit 63)."""
        from clipforge.zeroshot.languages import query_notice

        notice = query_notice(text, self.library.encoder, what) if text and text.strip() else None
        return notice.removeprefix("notice: ") if notice else None

    def classify_notice(self, labels: list[str]) -> str | None:
        """What to show beside a classify's probabilities, as the CLI's `classify` says it (`labels` as given, not
        ranked: the split it suggests keeps their order; no `--labels` flag, which nobody types here): labels that cannot be what
        was meant (one label under a softmax; Chinese words separated by spaces, "猫 狗 鸟" scored as one label at
        100% with no word: `zeroshot.label_notices`), then a language the model was not trained for."""
        from clipforge.zeroshot.label_notices import label_notice

        softmax = self.library.encoder.scoring().kind == "softmax"
        notices = [label_notice(labels, softmax=softmax, flag=""), self.language_notice(", ".join(labels), "labels")]
        return " ".join(n.removeprefix("notice: ") for n in notices if n) or None

    def search_notice(self, text: str | None) -> str | None:
        """What to show beside a text search's results, as the CLI's `search` says it
        (`zeroshot.languages.text_notices`): a language the model was not trained for, and what of the text its
        context cut away (the search ran on its beginning only)."""
        from clipforge.zeroshot.languages import text_notices

        notices = text_notices([text or ""], self.library.encoder, self.model_name)
        return " ".join(notice.removeprefix("notice: ") for notice in notices) or None

    # -- validation -------------------------------------------------------------------------
    def clean_text(self, text: str | None) -> str | None:
        """The query text, trimmed; None when there is none, or no visible character (blanks, or invisible ones such
        as a zero-width joiner: `text.typed.has_visible`), as the CLI reads a query: the REST body refuses such text
        (`bodies`), and the UI's blank text beside an image searches by the image."""
        text = text or ""
        if len(text) > self.limits.max_text_chars:
            raise APIError(
                400,
                "text_too_long",
                f"query text has {len(text)} characters, more than the limit of {self.limits.max_text_chars}",
            )
        from clipforge.text.typed import has_visible

        text = text.strip()
        return text if has_visible(text) else None

    def clean_labels(self, labels: str | list[str] | None, what: str = "labels") -> list[str]:
        """Labels by the one rule of `clipforge.text.labels.split_labels` (a string split on ",", "，" and "、";
        trimmed, blanks ignored, duplicates dropped, first order kept), within the server's limits.

        A string may hold `max_labels_chars` characters; each item of a list `max_label_chars`; at most
        `max_labels` labels in all. No label gives ``[]``: callers decide whether that is an error.
        """
        if isinstance(labels, str):
            if len(labels) > self.limits.max_labels_chars:
                raise APIError(
                    400,
                    "labels_too_long",
                    f"{what}: {len(labels)} characters, more than the limit of "
                    f"{self.limits.max_labels_chars}",
                )
        else:
            labels = [str(item) for item in labels or []]
            for item in labels:
                if len(item.strip()) > self.limits.max_label_chars:
                    raise APIError(
                        400,
                        "label_too_long",
                        f"{what}: {item[:40]!r}... is longer than {self.limits.max_label_chars} characters",
                    )
        from clipforge.text.labels import split_labels

        out = split_labels(labels, what, required=False)
        if len(out) > self.limits.max_labels:
            raise APIError(
                400, "too_many_labels", f"{len(out)} {what} given, the limit is {self.limits.max_labels}"
            )
        return out

    def clean_template(self, template: str | None) -> str | list[str]:
        """A known template set name, or one template (as a one-element list) that passed the one
        template check of `clipforge.zeroshot.prompts` (only `{}`, bounded length); else TemplateError."""
        from clipforge.zeroshot.prompts import TemplateError, check_template, list_template_sets

        value = (template or "").strip() or DEFAULT_TEMPLATE
        sets = list_template_sets()
        if value in sets:
            return value
        if "{" not in value and "}" not in value:
            raise TemplateError(
                f"template {value[:80]!r} is neither a string containing '{{}}' such as "
                f"{DEFAULT_TEMPLATE!r} nor a template set name ({', '.join(sets[:8])}, ...)"
            )
        return [check_template(value)]  # a TemplateError (a UserError) says what is wrong
