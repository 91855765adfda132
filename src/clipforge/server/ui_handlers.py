"""The web UI's event handlers (`ui.build_ui` wires them to its buttons), testable without a browser.

Each handler takes what gradio sends, goes through `LibraryService` as the REST API does, and
answers with the values its outputs show; a refusal changes only the status line of its tab,
in the API's words (`_refused`). Model work and paging take turns between clients in the
service's fair gates. Status lines follow the request's Accept-Language (`ui_text.status_text`), and so do
the refusals only this page makes (nothing typed, no image or file chosen, the token field): they name its
fields as the page shows them, so a Chinese page does not tell its user to fill in "the Server token field".
So do the notices a class most needs (`_worded_notice`, `_photo_words`): a query or labels in a language the model
was not trained for, and a phone photo in a format the server cannot read (HEIC without pillow-heif).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry calls

import gradio as gr  # noqa: E402

from clipforge.library.dbfile import display_path  # noqa: E402
from clipforge.server.errors import APIError, api_error, user_error  # noqa: E402
from clipforge.server.fair import client_key  # noqa: E402
from clipforge.server.schemas import gone_files  # noqa: E402
from clipforge.server.service import LibraryService  # noqa: E402
from clipforge.server.ui_files import client_name, read_upload_file  # noqa: E402
from clipforge.server.ui_text import ENGLISH, status_locale, status_text  # noqa: E402
from clipforge.server.uploads import SniffedImage, UnreadablePhoto  # noqa: E402

__all__ = ["PAGE_SIZE", "Handlers"]

PAGE_SIZE = 24


def _base_url(request: Any) -> str:
    """`http://host:port` as the browser reached this server (root of the API)."""
    inner = getattr(request, "request", None)
    if inner is not None and hasattr(inner, "base_url"):
        return str(inner.base_url).rstrip("/")
    headers = dict(getattr(request, "headers", {}) or {})
    return f"http://{headers.get('host', '127.0.0.1')}".rstrip("/")


def _locale(request: Any) -> str:
    """The status lines' locale: the browser's preferred language as its requests say (`ui_text.status_locale`)."""
    headers = getattr(request, "headers", None)
    try:
        return status_locale(headers.get("accept-language") if headers is not None else None)
    except AttributeError:
        return status_locale(None)


def _host(request: Any) -> str | None:
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


_MARKDOWN = re.compile(r"([\\`*_\[\]<>&!|~$])")  # what starts emphasis, code, links, images, HTML, tables, LaTeX
_AUTOLINK = re.compile(r"(?i)\bwww\.|:(?=//)|@")  # the mark of each that GFM needs, escaped
_BLOCK_START = re.compile(r"^(\d*)([#+\-=>.)])")  # what makes a heading, a list or a quote of a line's start
# bidi controls: a file name holding U+202E reversed every link after it in the originals line (review)
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def plain(text: str) -> str:
    """`text` as the status lines' Markdown shows it, character for character: the marks Markdown, its HTML or its
    LaTeX could read are backslash-escaped, line breaks become spaces, bidi controls (which reorder the text after
    them, past the name) become U+FFFD. HTML escapes were shown as written inside the
    hints' code spans (`--labels &quot;cat, dog&quot;`), and a refused file named `![b](https:host).jpg` was drawn
    as an image fetched from that host."""
    escaped = _MARKDOWN.sub(r"\\\1", " ".join(_BIDI.sub("\ufffd", str(text)).split()))
    # GFM's autolinks: `www.x`, `scheme://x` and `a@b.c` became links (a refused `www.evil.example.jpg`)
    escaped = _AUTOLINK.sub(lambda m: m.group(0)[:-1] + "\\" + m.group(0)[-1], escaped)
    return _BLOCK_START.sub(r"\1\\\2", escaped)


def _message(exc: APIError) -> str:
    """The API's own words for a refused request, as one Markdown line where the user is looking."""
    return f"⚠️ **{exc.status} {exc.code.replace('_', ' ')}**: {plain(exc.detail)}"


def _refused(event: str, exc: BaseException, say: str = ENGLISH) -> str:
    """The status line for any failure of an event, through the server's one error edge: a user's mistake
    (an APIError, any `UserError`) is one log line and its own words; a bug is its traceback in the log
    and a generic sentence on the page. Either way the other outputs keep what they showed. A phone photo the
    server cannot read is said in the page's language, without the code's "not an image" (`_photo_words`)."""
    error = api_error(exc, f"UI {event}", logging.WARNING)
    worded = _photo_words(exc, say)
    return _message(error) if worded is None else f"⚠️ **{error.status}**: {worded}"


def _photo_words(exc: BaseException, say: str) -> str | None:
    """An `UnreadablePhoto` refusal as a Markdown line in `say`'s words, else None: a student told that their
    photo "is not an image" in English learnt neither why nor what to do."""
    if not isinstance(exc, UnreadablePhoto):
        return None
    named = {"query image": "query_image", "image": "image"}.get(exc.what)
    what = status_text(say, named) if named else plain(exc.what)
    return status_text(say, "unreadable_photo", what=what, format=plain(exc.format), package=plain(exc.package))


def _number(value: Any, name: str) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise APIError(400, f"invalid_{name}", f"{name} must be a number") from None


class Handlers:
    """The UI's callbacks (a class so the pieces stay small and testable without a browser).

    A request the API would refuse leaves every output as it was except the status line of its
    tab, which says why in the API's words (no red "Error" badges, no wiped gallery or file
    list, no traceback in the server log). Model work takes turns with every other client's
    through `service.gate`, keyed by address and gradio session.
    """

    def __init__(self, service: LibraryService, upload_dir: str) -> None:
        self.service = service
        self.upload_dir = upload_dir

    def _image(self, value: Any, what: str) -> SniffedImage:
        return read_upload_file(value, self.service, self.upload_dir, what)

    async def _in_turn(self, request: Any, fn: Any, *args: Any) -> Any:
        client = client_key(_host(request), getattr(request, "session_hash", None))
        return await self.service.gate.run(client, fn, *args)

    def thumb(self, base: str, image_id: int) -> str:
        return f"{base}/api/images/{image_id}/thumb?size={self.service.limits.thumb_size}"

    @staticmethod
    def originals(base: str, shown: list[tuple[int, str]], say: str) -> str:
        """A line of links to the originals of the photos a gallery shows, in its order (`GET /api/images/{id}`,
        which anyone may read): the gallery holds 256-px thumbnails, its download buttons saved those, and a
        gallery `select` event would send gradio's item, a server path the upload guard refuses. Names are
        escaped as every status line's (`plain`) and cut to 40 characters; the link is the integer id's."""
        if not shown:
            return ""
        links = []
        for image_id, path in shown:
            name = display_path(os.path.basename(path))
            name = name if len(name) <= 40 else name[:39] + "…"
            links.append(f"[{plain(name)}]({base}/api/images/{int(image_id)})")
        return "\n\n" + status_text(say, "originals") + " · ".join(links)

    def _worded_notice(self, notice: str | None, text: str | None, say: str, what: str) -> str | None:
        """`notice` (the service's English sentences, joined) as Markdown, its sentence on the language of `text`
        (`zeroshot.languages.query_notice`: a Chinese query to an English-only model) in `say`'s words; `what`:
        ``query`` or ``labels``. English pages, and the other sentences, keep the service's words."""
        if not notice:
            return None
        from clipforge.zeroshot.languages import MULTILINGUAL, language_of, model_languages, query_notice

        encoder = self.service.library.encoder
        english = query_notice(text, encoder, what) if say != ENGLISH and text and text.strip() else None
        sentence = english.removeprefix("notice: ") if english else ""
        languages, script = model_languages(encoder), language_of(text or "")
        if not sentence or sentence not in notice or script != "zh" or {script, MULTILINGUAL} & set(languages):
            return plain(notice)  # none, or the other kind ([UNK] of a model that reads the script)
        before, _, after = notice.partition(sentence)
        worded = status_text(say, f"language_{what}", text=plain((text or "")[:40]), script=script,
                             model=plain(getattr(encoder, "name", None) or self.service.model_name),
                             languages=", ".join(languages))
        return " ".join(part for part in (plain(before), worded, plain(after)) if part)

    def _search(
        self, text: str | None, image: Any, top_k: int, tags: str | None, say: str = ENGLISH
    ) -> tuple[list[Any], float, str | None, str | None, set[int]]:
        """(hits, milliseconds, notice (language, cut text; Markdown), why nothing matched, ids of hits whose files
        are gone), in the client's turn: the notice may read the model's files, the reason the store, the last
        the disk."""
        query = self._image(image, "query image") if image else None
        hits, took = self.service.search(text, query, top_k, tags)
        reason = None if hits else self.service.no_results_reason(tags)
        notice = self._worded_notice(self.service.search_notice(text), text, say, "query")
        return hits, took, notice, reason, gone_files(hits)

    async def search(self, text: Any, image: Any, top_k: Any, tags: Any, request: gr.Request = None):
        try:
            top_k = _number(top_k, "top_k")
            text, tags = _text(text), _text(tags)
            if not (text or "").strip() and not image:
                raise APIError(400, "empty_query", status_text(_locale(request), "empty_query"))
            hits, took, notice, reason, gone = await self._in_turn(
                request, self._search, text, image, top_k, tags, _locale(request)
            )
        except Exception as exc:
            return gr.skip(), _refused("search", exc, _locale(request))
        base, say = _base_url(request), _locale(request)
        items = [  # a photo deleted since indexed showed a broken thumbnail and no word
            (self.thumb(base, h.id), f"{h.score:.3f} · {display_path(os.path.basename(h.path))}"
             + (f" · {status_text(say, 'gone')}" if h.id in gone else ""))
            for h in hits
        ]
        if not hits:
            status = status_text(say, "none", reason=plain(reason or status_text(say, "no_match")))
        else:
            status = status_text(
                say, "found_one" if len(hits) == 1 else "found", count=len(hits), ms=f"{took:.0f}",
                model=self.service.model_name,
            )
        if notice:
            status += f"\n\n{status_text(say, 'note')} {notice}"
        status += self.originals(base, [(h.id, h.path) for h in hits], say)
        return items, status

    def _classify(
        self, image: Any, labels: str | None, template: str | None, say: str = ENGLISH
    ) -> tuple[list[tuple[str, float]], str | None]:
        ranked, _, _ = self.service.classify(self._image(image, "image"), labels, template)
        cleaned = self.service.clean_labels(labels)
        return ranked, self._worded_notice(self.service.classify_notice(cleaned), ", ".join(cleaned), say, "labels")

    async def classify(self, image: Any, labels: Any, template: Any, request: gr.Request = None):
        try:
            if not image:
                raise APIError(400, "no_image", status_text(_locale(request), "no_image"))
            labels, template = _text(labels), _text(template)
            self.service.classify_plan(labels, template)  # refused now, without waiting for a turn
            ranked, notice = await self._in_turn(request, self._classify, image, labels, template, _locale(request))
        except Exception as exc:
            return gr.skip(), _refused("classify", exc, _locale(request))
        note = self.service.library.encoder.scoring().note  # SigLIP: say the scores do not sum to 1
        say = _locale(request)
        lines = [status_text(say, "score_note", note=note)] if note else []
        if notice:
            lines.append(f"{status_text(say, 'note')} {notice}")
        return {label: float(p) for label, p in ranked}, "\n\n".join(lines)

    def browse(self, offset: int, request: gr.Request = None):
        records, next_offset = self.service.list_images(PAGE_SIZE, max(0, int(offset)))
        base = _base_url(request)
        items = [
            (self.thumb(base, r.id), f"#{r.id} · {display_path(os.path.basename(r.path))}") for r in records
        ]
        stats = (
            self.service.stats()
        )  # the served model space's, as /api/stats says (not the library's default)
        counts = stats["images"]
        say = _locale(request)
        shown = f"{offset + 1}-{offset + len(records)}" if records else status_text(say, "shown_none")
        summary = status_text(
            say, "summary", ok=counts.get("ok", 0), failed=counts.get("failed", 0), shown=shown
        ) + _tag_line(stats.get("tags") or {}, say) + self.originals(base, [(r.id, r.path) for r in records], say)
        return items, summary, int(offset), next_offset is not None

    async def _page(self, request: Any, offset: int, stay: int | None = None):
        """browse(offset) when this client's turn comes in `service.pages`; past the end, browse(stay)."""

        def read():
            page = self.browse(offset, request)
            return self.browse(stay, request) if stay is not None and not page[0] else page

        client = client_key(_host(request), getattr(request, "session_hash", None))
        return await self.service.pages.run(client, read)

    async def first_page(self, request: gr.Request = None):
        try:
            items, summary, _, _ = await self._page(request, 0)
        except Exception as exc:  # the summary line says why; nothing else changes
            return gr.skip(), _refused("library", exc)
        return items, summary

    async def previous_page(self, offset: int, request: gr.Request = None):
        try:
            items, summary, offset, _ = await self._page(request, max(0, int(offset) - PAGE_SIZE))
        except Exception as exc:
            return gr.skip(), _refused("library", exc), gr.skip()
        return items, summary, offset

    async def next_page(self, offset: int, request: gr.Request = None):
        try:
            # past the end: stay on the last page
            items, summary, new_offset, _ = await self._page(request, int(offset) + PAGE_SIZE, int(offset))
        except Exception as exc:
            return gr.skip(), _refused("library", exc), gr.skip()
        return items, summary, new_offset

    def _add(self, files: list[Any], say: str = "en") -> tuple[int, int, list[str]]:
        added, present, refused = 0, 0, []
        chosen = files[:1000]
        for index, item in enumerate(chosen):
            name = client_name(item)
            try:
                _, created = self.service.add(
                    self._image(item, (name or f"file {index + 1}")[:80]), filename=name
                )
            except Exception as exc:
                error = user_error(exc)  # a bad file is counted and named; a bug stops the batch
                if error is None:
                    raise
                refused.append(_photo_words(exc, say) or plain(error.detail))  # Markdown lines
                # the library, not the file (its own refusals, and any of the server's own: a store not answering):
                # no other file can be added, and each would be read, hashed and embedded only to wait on it
                if error.code in _LIBRARY_REFUSALS or error.status >= 500:
                    api_error(exc, "UI upload", logging.WARNING)  # the operator's log line (the store's name)
                    refused += [
                        status_text(
                            say,
                            "not_tried",
                            file=plain(client_name(rest) or status_text(say, "a_file")),
                            code=plain(error.code),
                        )
                        for rest in chosen[index + 1 :]
                    ]
                    break
                continue
            added += int(created)
            present += int(not created)
        return added, present, refused

    async def add(self, files: Any, token: Any, offset: int, request: gr.Request = None):
        try:
            if not files:
                raise APIError(400, "no_files", status_text(_locale(request), "no_files"))
            if not self.service.tokens.verify(_text(token) or None, _host(request)):  # guesses counted
                why = "token_wrong" if _text(token) else "token_needed"
                raise APIError(401, "unauthorized", status_text(_locale(request), why))
            files = files if isinstance(files, list) else [files]
            added, present, refused = await self._in_turn(request, self._add, files, _locale(request))
        except Exception as exc:  # the chosen files, the gallery and the summary stay as they were
            return _refused("add", exc, _locale(request)), gr.skip(), gr.skip(), gr.skip()
        lines = [status_text(_locale(request), "added", added=added, present=present, refused=len(refused))]
        lines += [f"- {reason}" for reason in refused[:20]]
        try:
            items, summary, offset, _ = await self._page(request, int(offset))  # not on the event loop
        except Exception as exc:
            return "\n".join([*lines, _refused("library", exc)]), gr.skip(), gr.skip(), None
        return "\n".join(lines), items, summary, None


# Refusals that are the library's state, not the file's (a read-only library, a full disk): a batch stops at the
# first, where each of up to 1,000 files was read, decoded and hashed only to be refused the same way.
_LIBRARY_REFUSALS = frozenset({"read_only_library", "insufficient_storage", "library_busy"})


def _tag_line(counts: dict[str, int], say: str = "en") -> str:
    """The library's tags for the Library tab's summary (read-only; `clipforge tag` makes them)."""
    if not counts:
        return ""
    return status_text(say, "tags") + ", ".join(
        f"{plain(k)} ({v})" for k, v in list(counts.items())[:20]
    )


def _text(value: Any) -> str | None:
    """A text field as sent by the client (preprocessing is off for events that take files)."""
    if value is None or isinstance(value, str):
        return value
    raise APIError(400, "bad_request", "expected text")
