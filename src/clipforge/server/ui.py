"""The gradio UI at `/`: search the library by text, classify an image against typed labels,
and browse the library and add photos to it.

Every action goes through `LibraryService`, so the UI obeys the same limits, token and
validation as the REST API, and shows the API's own error messages. Galleries show thumbnails
served by the API's `/api/images/{id}/thumb` (absolute URLs built from the browser's own
request, so they work behind whatever host name the user typed): no image is copied into
gradio's cache.

Files: the events that take files run with gradio's preprocessing off, so a handler receives
the client's `FileData` as sent and opens it only when it is a regular file inside this
server's upload folder (what the browser uploaded); it reads the bytes and checks them exactly
like a REST upload. gradio's own "uploaded files only" check, which a mounted app skips, is
switched back on, and `ui_guard.UIGuardMiddleware` refuses requests naming any other file
before gradio sees them.

Languages (`ui_text`, words in the package data file `ui_text.json`): labels, buttons and tabs are gradio
translation keys, shown in Simplified or Traditional Chinese to a zh-CN / zh-TW browser and in English otherwise;
the status lines written here follow the request's Accept-Language (the API's own messages inside them stay
English); the example labels, template and query follow the served model's first language.
"""

from __future__ import annotations

import html
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry calls

import gradio as gr  # noqa: E402

from clipforge.library.dbfile import display_path  # noqa: E402
from clipforge.server.errors import APIError, api_error, user_error  # noqa: E402
from clipforge.server.fair import client_key  # noqa: E402
from clipforge.server.service import LibraryService  # noqa: E402
from clipforge.server.ui_events import JoinRules  # noqa: E402
from clipforge.server.ui_guard import UIGuardMiddleware  # noqa: E402
from clipforge.server.ui_streams import OpenStreams, StreamLimitMiddleware  # noqa: E402
from clipforge.server.ui_text import examples_for, i18n, key, status_locale, status_text  # noqa: E402
from clipforge.server.upload_paths import inside  # noqa: E402
from clipforge.server.uploads import SniffedImage, client_file_name, sniff_image  # noqa: E402

__all__ = ["build_ui", "mount_ui"]

log = logging.getLogger(__name__)

PAGE_SIZE = 24
CSS = """
#model-notice { border-left: 4px solid #d97706; background: #fef3c7; color: #78350f; padding: 6px 12px;
                border-radius: 4px; }
#model-notice p { margin: 0; }
"""


def _base_url(request: Any) -> str:
    """`http://host:port` as the browser reached this server (root of the API)."""
    inner = getattr(request, "request", None)
    if inner is not None and hasattr(inner, "base_url"):
        return str(inner.base_url).rstrip("/")
    headers = dict(getattr(request, "headers", {}) or {})
    return f"http://{headers.get('host', '127.0.0.1')}".rstrip("/")


def _client_name(value: Any) -> str | None:
    """The file name the browser reported, cut like a REST upload's (a label; never used to open anything)."""
    return client_file_name(value.get("orig_name") if isinstance(value, dict) else None)


def read_upload_file(value: Any, service: LibraryService, upload_dir: str, what: str) -> SniffedImage:
    """The image in a `FileData` the browser sent, if it names a file this page uploaded.

    Anything else (a server path, a URL, a path that leaves the upload folder through `..` or a
    symlink, a FIFO) is refused without being opened; the bytes are then checked like a REST
    upload, so the message for a bad file is the API's own.
    """
    path = value.get("path") if isinstance(value, dict) else getattr(value, "path", None)
    if not isinstance(path, str) or not path or "\0" in path or not inside(path, upload_dir):
        raise APIError(400, "not_an_upload", f"{what} was not uploaded through this page; upload it again")
    real = os.path.realpath(path)
    limit = service.limits.max_upload_bytes
    try:
        if not stat.S_ISREG(os.stat(real).st_mode):  # a FIFO or device is never opened
            raise APIError(400, "not_an_upload", f"{what} was not uploaded through this page; upload it again")
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise APIError(400, "not_an_upload", f"{what} is no longer on the server; upload it again") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise APIError(400, "not_an_upload", f"{what} was not uploaded through this page; upload it again")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise APIError(413, "payload_too_large", f"{what} is larger than the limit of {limit:,} bytes")
    return sniff_image(data, service.limits, what)


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


def _message(exc: APIError) -> str:
    """The API's own words for a refused request, as one Markdown line where the user is looking."""
    return f"⚠️ **{exc.status} {exc.code.replace('_', ' ')}**: {html.escape(exc.detail)}"


def _refused(event: str, exc: BaseException) -> str:
    """The status line for any failure of an event, through the server's one error edge: a user's mistake
    (an APIError, any `UserError`) is one log line and its own words; a bug is its traceback in the log
    and a generic sentence on the page. Either way the other outputs keep what they showed."""
    return _message(api_error(exc, f"UI {event}", logging.WARNING))


def _number(value: Any, name: str) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise APIError(400, f"invalid_{name}", f"{name} must be a number") from None


class _Handlers:
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

    def _search(self, text: str | None, image: Any, top_k: int,
                tags: str | None) -> tuple[list[Any], float, str | None, str | None]:
        """(hits, milliseconds, notice (language, cut text), why nothing matched), in the client's turn: the notice may read
        the model's files and the reason the store."""
        query = self._image(image, "query image") if image else None
        hits, took = self.service.search(text, query, top_k, tags)
        reason = None if hits else self.service.no_results_reason(tags)
        return hits, took, self.service.search_notice(text), reason

    async def search(self, text: Any, image: Any, top_k: Any, tags: Any, request: gr.Request = None):
        try:
            top_k = _number(top_k, "top_k")
            text, tags = _text(text), _text(tags)
            if not (text or "").strip() and not image:
                raise APIError(400, "empty_query", "type what to look for, or choose an example image")
            hits, took, notice, reason = await self._in_turn(request, self._search, text, image, top_k, tags)
        except Exception as exc:
            return gr.skip(), _refused("search", exc)
        base, say = _base_url(request), _locale(request)
        items = [(self.thumb(base, h.id), f"{h.score:.3f} · {display_path(os.path.basename(h.path))}") for h in hits]
        if not hits:
            status = status_text(say, "none", reason=html.escape(reason or status_text(say, "no_match")))
        else:
            status = status_text(say, "found", count=len(hits), ms=f"{took:.0f}", model=self.service.model_name)
        if notice:
            status += f"\n\n{status_text(say, 'note')} {html.escape(notice)}"
        return items, status

    def _classify(self, image: Any, labels: str | None,
                  template: str | None) -> tuple[list[tuple[str, float]], str | None]:
        ranked, _, _ = self.service.classify(self._image(image, "image"), labels, template)
        return ranked, self.service.language_notice(", ".join(label for label, _ in ranked))

    async def classify(self, image: Any, labels: Any, template: Any, request: gr.Request = None):
        try:
            if not image:
                raise APIError(400, "no_image", "upload an image to classify first")
            labels, template = _text(labels), _text(template)
            self.service.classify_plan(labels, template)  # refused now, without waiting for a turn
            ranked, notice = await self._in_turn(request, self._classify, image, labels, template)
        except Exception as exc:
            return gr.skip(), _refused("classify", exc)
        note = self.service.library.encoder.scoring().note  # SigLIP: say the scores do not sum to 1
        say = _locale(request)
        lines = [status_text(say, "score_note", note=note)] if note else []
        if notice:
            lines.append(f"{status_text(say, 'note')} {html.escape(notice)}")
        return {label: float(p) for label, p in ranked}, "\n\n".join(lines)

    def browse(self, offset: int, request: gr.Request = None):
        records, next_offset = self.service.list_images(PAGE_SIZE, max(0, int(offset)))
        base = _base_url(request)
        items = [(self.thumb(base, r.id), f"#{r.id} · {display_path(os.path.basename(r.path))}") for r in records]
        stats = self.service.library.stats()
        counts = stats["images"]
        say = _locale(request)
        shown = f"{offset + 1}-{offset + len(records)}" if records else status_text(say, "shown_none")
        summary = (status_text(say, "summary", ok=counts.get("ok", 0), failed=counts.get("failed", 0), shown=shown)
                   + _tag_line(stats.get("tags") or {}, say))
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
            name = _client_name(item)
            try:
                _, created = self.service.add(self._image(item, (name or f"file {index + 1}")[:80]), filename=name)
            except Exception as exc:
                error = user_error(exc)  # a bad file is counted and named; a bug stops the batch
                if error is None:
                    raise
                refused.append(f"{error.detail}")
                if error.code in _LIBRARY_REFUSALS:  # the library, not the file: no other file can be added
                    refused += [status_text(say, "not_tried", file=_client_name(rest) or status_text(say, "a_file"),
                                            code=error.code) for rest in chosen[index + 1:]]
                    break
                continue
            added += int(created)
            present += int(not created)
        return added, present, refused

    async def add(self, files: Any, token: Any, offset: int, request: gr.Request = None):
        try:
            if not files:
                raise APIError(400, "no_files", "choose one or more images to add first")
            if not self.service.tokens.verify(_text(token) or None, _host(request)):  # guesses counted
                raise APIError(401, "unauthorized", "this server needs its token to add images: type it in "
                                                    "the Server token field" if not _text(token) else
                                                    "the server token is wrong")
            files = files if isinstance(files, list) else [files]
            added, present, refused = await self._in_turn(request, self._add, files, _locale(request))
        except Exception as exc:  # the chosen files, the gallery and the summary stay as they were
            return _refused("add", exc), gr.skip(), gr.skip(), gr.skip()
        lines = [status_text(_locale(request), "added", added=added, present=present, refused=len(refused))]
        lines += [f"- {html.escape(reason)}" for reason in refused[:20]]
        try:
            items, summary, offset, _ = await self._page(request, int(offset))  # not on the event loop
        except Exception as exc:
            return "\n".join([*lines, _refused("library", exc)]), gr.skip(), gr.skip(), None
        return "\n".join(lines), items, summary, None


# Refusals that are the library's state, not the file's (a read-only library, a full disk): a batch stops at the
# first, where each of up to 1,000 files was read, decoded and hashed only to be refused the same way.
_LIBRARY_REFUSALS = frozenset({"read_only_library", "insufficient_storage"})


def _tag_line(counts: dict[str, int], say: str = "en") -> str:
    """The library's tags for the Library tab's summary (read-only; `clipforge tag` makes them)."""
    if not counts:
        return ""
    return status_text(say, "tags") + ", ".join(f"{html.escape(k)} ({v})" for k, v in list(counts.items())[:20])


def _text(value: Any) -> str | None:
    """A text field as sent by the client (preprocessing is off for events that take files)."""
    if value is None or isinstance(value, str):
        return value
    raise APIError(400, "bad_request", "expected text")


def model_examples(service: LibraryService) -> dict[str, str]:
    """The example values the UI starts with (labels, search placeholder, template), in the served model's
    language: English labels on a Chinese-CLIP model would be a poor default (`ui_text.examples_for`)."""
    from clipforge.zeroshot.languages import model_languages

    return examples_for(model_languages(service.library.encoder))


def build_ui(service: LibraryService, upload_dir: str):
    """The gradio Blocks for `service` (not yet mounted); `upload_dir` is gradio's upload folder.

    Fixed text is a translation key (`ui_text.key`), translated in the browser by its language; the
    example values follow the model's language (`model_examples`)."""
    handlers = _Handlers(service, upload_dir)
    examples = model_examples(service)
    chinese_model = examples == examples_for(("zh",))
    age = max(1, int(service.limits.ui_cache_age_s))
    with gr.Blocks(title="clipforge", analytics_enabled=False, delete_cache=(age, age)) as demo:
        # one translation marker per string (gradio translates the first): the model's name follows it
        gr.Markdown(key("header") + f" **{service.model_name}** · REST API: [/docs](/docs)")
        if service.notice:
            gr.Markdown(key("note") + f" {service.notice}", elem_id="model-notice")
        with gr.Tab(key("tab_search"), id="search"):
            with gr.Row(equal_height=True):
                text = gr.Textbox(label=key("search_label"), placeholder=examples["search"],
                                  scale=5, elem_id="search-text", max_length=service.limits.max_text_chars)
                search_button = gr.Button(key("search_button"), variant="primary", scale=1, elem_id="search-button")
            with gr.Accordion(key("search_more"), open=False), gr.Row():
                query_image = gr.Image(type="filepath", label=key("search_image"),
                                       sources=["upload", "clipboard"], height=200, elem_id="search-image")
                with gr.Column():
                    top_k = gr.Slider(1, min(100, service.limits.max_top_k), value=12, step=1, label=key("top_k"))
                    tags = gr.Textbox(label=key("tags_label"), placeholder=key(
                        "tags_placeholder_zh_model" if chinese_model else "tags_placeholder"))
            search_status = gr.Markdown(elem_id="search-status")
            results = gr.Gallery(label=key("results"), columns=4, height="auto", object_fit="contain",
                                 elem_id="search-results", interactive=False)
            inputs = [text, query_image, top_k, tags]
            # concurrency_limit=None: gradio's queue would serve each event first come, first served; the
            # handlers take turns fairly between clients in `service.gate` instead.
            search_button.click(handlers.search, inputs, [results, search_status], api_name=False, preprocess=False,
                                concurrency_limit=None)
            text.submit(handlers.search, inputs, [results, search_status], api_name=False, preprocess=False,
                        concurrency_limit=None)

        with gr.Tab(key("tab_classify"), id="classify"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", label=key("classify_image"), sources=["upload", "clipboard"],
                                     height=300, elem_id="classify-image")
                    labels = gr.Textbox(label=key("labels_label"), value=examples["labels"], elem_id="labels")
                    template = gr.Textbox(label=key("template_label"), value=examples["template"],
                                          elem_id="template")
                    classify_button = gr.Button(key("classify_button"), variant="primary", elem_id="classify-button")
                with gr.Column():
                    classify_status = gr.Markdown(elem_id="classify-status")
                    probabilities = gr.Label(label=key("probabilities"), num_top_classes=10, elem_id="probabilities")
            classify_button.click(handlers.classify, [image, labels, template], [probabilities, classify_status],
                                  api_name=False, preprocess=False, concurrency_limit=None)

        with gr.Tab(key("tab_library"), id="library"):
            summary = gr.Markdown(elem_id="library-summary")
            browse = gr.Gallery(label=key("library_gallery"), columns=6, height="auto", object_fit="cover",
                                elem_id="library-gallery", interactive=False)
            offset = gr.State(0)
            with gr.Row():
                previous = gr.Button(key("previous_page"), size="sm")
                following = gr.Button(key("next_page"), size="sm")
            with gr.Accordion(key("add_images"), open=True):
                files = gr.File(file_count="multiple", file_types=["image"], label=key("add_files"),
                                elem_id="add-files")
                token = gr.Textbox(label=key("token"), type="password", visible=service.tokens.enabled)
                add_button = gr.Button(key("add_button"), variant="primary", elem_id="add-button")
                add_status = gr.Markdown(elem_id="add-status")
            # Paging takes turns per client in `service.pages`, not in gradio's first-come queue.
            previous.click(handlers.previous_page, offset, [browse, summary, offset], api_name=False,
                           concurrency_limit=None)
            following.click(handlers.next_page, offset, [browse, summary, offset], api_name=False,
                            concurrency_limit=None)
            add_button.click(handlers.add, [files, token, offset], [add_status, browse, summary, files],
                             api_name=False, preprocess=False, concurrency_limit=None)

        demo.load(handlers.first_page, None, [browse, summary], api_name=False, concurrency_limit=None)
    demo.i18n_instance = i18n()  # what `mount_gradio_app(i18n=...)` sets: the config's translations
    return demo


def _forget_uploads(demo: gr.Blocks, paths: list[str], cache_files: int) -> None:
    """Drop deleted uploads from gradio's record of uploaded files (it never forgets one by itself: its cleaner
    skips files already gone); once the record outgrows twice the folder's budget, every entry whose file is gone
    (paths spelt through another route to the folder included)."""
    record = demo.upload_file_set
    record.difference_update(paths)
    if len(record) > 2 * cache_files:
        record.difference_update([p for p in list(record) if not os.path.lexists(p)])


def mount_ui(app: Any, service: LibraryService) -> Any:
    """Mount the UI at `/` of `app` (after the API routes, so /api and /docs win).

    gradio's upload folder is `$GRADIO_TEMP_DIR` (`clipforge serve` points it at a private
    folder of its own). The library's folder is on gradio's block list, errors other than our
    own messages are not shown to clients, and the guard middleware goes in front of gradio.
    """
    from gradio.utils import get_upload_folder

    upload_dir = os.path.realpath(get_upload_folder())
    os.makedirs(upload_dir, mode=0o700, exist_ok=True)
    demo = build_ui(service, upload_dir)
    limits = service.limits
    library_root = str(Path(service.library.paths.root).resolve())
    app = gr.mount_gradio_app(app, demo, path="/", footer_links=["gradio", "settings"],
                              max_file_size=limits.max_upload_bytes, ssr_mode=False, pwa=False, mcp_server=False,
                              css=CSS, run_history=False, show_error=False, allowed_paths=[], i18n=demo.i18n_instance,
                              blocked_paths=[library_root])
    # A mounted app never "launches", and gradio skips its check that event inputs are files
    # uploaded to its folder until it has: mark it launched so the check runs on every event.
    demo.has_launched = True
    # gradio keeps a state per session (inputs included) for up to 10,000 sessions; this page keeps one number
    demo.state_session_capacity = limits.ui_sessions
    # gradio runs 40 events at once, first come; ours wait for their turn in `fair.FairGate` inside one
    demo.max_threads = demo._queue.max_thread_count = limits.ui_event_slots
    # gradio records the last 10,000 events for its monitoring dashboard (closed here: `ui_guard._UNUSED`) and
    # rebuilds a pandas table of all of them after every event (16.7 ms of CPU each at 10,000, and pandas
    # imported on the first): keep one record and never rebuild
    demo._queue.ANALYTICS_MAX_EVENTS = 1
    demo._queue.ANAYLTICS_CACHE_FREQUENCY = sys.maxsize
    queue = demo._queue
    rules = JoinRules({i: len(fn.inputs) for i, fn in demo.fns.items()},
                      unread=lambda session: len(queue.pending_event_ids_session.get(session, ())),
                      sessions=lambda: queue.pending_event_ids_session, max_unread_events=limits.ui_unread_events,
                      max_unread_sessions=limits.ui_unread_sessions, max_pending=limits.ui_pending_per_host,
                      max_new_sessions=limits.ui_new_sessions_per_minute)
    app.add_middleware(UIGuardMiddleware, upload_dir=upload_dir, max_json_bytes=limits.max_ui_request_bytes,
                       cache_bytes=limits.ui_cache_bytes, cache_age_s=limits.ui_cache_age_s, rules=rules,
                       cache_files=limits.ui_cache_files, max_body_bytes=limits.max_body_bytes,
                       known_session=lambda session: session in queue.pending_messages_per_session,
                       forget_uploads=lambda paths: _forget_uploads(demo, paths, limits.ui_cache_files))
    streams = OpenStreams(per_host=limits.ui_streams_per_host, total=limits.ui_streams)
    app.add_middleware(StreamLimitMiddleware, streams=streams)  # outside the guard: a refusal costs nothing
    app.state.ui_streams = streams
    app.state.ui_blocks = demo
    app.state.ui_upload_dir = upload_dir
    return app
