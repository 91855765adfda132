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
like a REST upload (`ui_files`; the handlers themselves are `ui_handlers`). gradio's own
"uploaded files only" check, which a mounted app skips, is switched back on, and
`ui_guard.UIGuardMiddleware` refuses requests naming any other file before gradio sees them.

Languages (`ui_text`, words in the package data file `ui_text.json`): labels, buttons and tabs are gradio
translation keys, shown in Simplified or Traditional Chinese to a browser whose language is any Chinese tag
(`LocaleScriptMiddleware` puts `ui_text.browser_locale_script` into the page: gradio's frontend alone matched
only exactly zh-CN and zh-TW) and in English otherwise; the status lines written here follow the request's
Accept-Language by the same rule (the API's own messages inside them stay English, except the notices a class
most needs: a query's language, a phone photo's format, the offline model's banner, the page's 429 and 507,
`ui_text.RefusalWords`); the example labels,
template and query follow the served model's first language.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry calls

from clipforge.server.gradio_version import check_gradio  # noqa: E402

check_gradio()  # `create_app(ui=True)` from Python: the same line as `serve`
import gradio as gr  # noqa: E402
from starlette.routing import Mount, get_route_path  # noqa: E402

from clipforge.server.middleware import ASGIApp, Message, Receive, Scope, Send  # noqa: E402
from clipforge.server.service import OFFLINE_MODEL, LibraryService, model_notice  # noqa: E402
from clipforge.server.ui_config_cache import PageCache, UIPageCacheMiddleware  # noqa: E402
from clipforge.server.ui_events import JoinRules  # noqa: E402
from clipforge.server.ui_guard import UIGuardMiddleware  # noqa: E402
from clipforge.server.ui_handlers import Handlers as _Handlers  # noqa: E402  (tests reach it here too)
from clipforge.server.ui_streams import OpenStreams, StreamLimitMiddleware  # noqa: E402
from clipforge.server.ui_text import RefusalWords, browser_locale_script, examples_for, i18n, key  # noqa: E402

__all__ = ["LocaleScriptMiddleware", "build_ui", "mount_ui"]

log = logging.getLogger(__name__)

CSS = """
#model-notice { border-left: 4px solid #d97706; background: #fef3c7; color: #78350f; padding: 6px 12px;
                border-radius: 4px; }
#model-notice p { margin: 0; }
"""


def model_examples(service: LibraryService) -> dict[str, str]:
    """The example values the UI starts with (labels, search placeholder, template), in the served model's
    language: English labels on a Chinese-CLIP model would be a poor default (`ui_text.examples_for`)."""
    from clipforge.zeroshot.languages import model_languages

    return examples_for(model_languages(service.library.encoder))


_GALLERY_BUTTONS = ["fullscreen"]
"""gradio's gallery buttons that work here: its share button fails without a Hugging Face Space, and its download
buttons saved the 256-px thumbnails as `thumb`, `thumb-2`, ... (the originals are at `/api/images/{id}`)."""


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
        if service.notice and service.notice == model_notice(OFFLINE_MODEL):  # every student sees it: translated
            gr.Markdown(key("offline_model_notice"), elem_id="model-notice")
        elif service.notice:
            gr.Markdown(key("note") + f" {service.notice}", elem_id="model-notice")
        with gr.Tab(key("tab_search"), id="search"):
            with gr.Row(equal_height=True):
                text = gr.Textbox(
                    label=key("search_label"),
                    placeholder=examples["search"],
                    scale=5,
                    elem_id="search-text",
                    max_length=service.limits.max_text_chars,
                )
                search_button = gr.Button(
                    key("search_button"), variant="primary", scale=1, elem_id="search-button"
                )
            with gr.Accordion(key("search_more"), open=False), gr.Row():
                query_image = gr.Image(
                    type="filepath",
                    label=key("search_image"),
                    sources=["upload", "clipboard"],
                    height=200,
                    elem_id="search-image",
                    buttons=["fullscreen"],
                )
                with gr.Column():
                    top_k = gr.Slider(
                        1, min(100, service.limits.max_top_k), value=12, step=1, label=key("top_k")
                    )
                    tags = gr.Textbox(
                        label=key("tags_label"),
                        placeholder=key("tags_placeholder_zh_model" if chinese_model else "tags_placeholder"),
                    )
            search_status = gr.Markdown(elem_id="search-status")
            results = gr.Gallery(
                label=key("results"),
                columns=4,
                height="auto",
                object_fit="contain",
                elem_id="search-results",
                interactive=False,
                buttons=_GALLERY_BUTTONS,
            )
            inputs = [text, query_image, top_k, tags]
            # concurrency_limit=None: gradio's queue would serve each event first come, first served; the
            # handlers take turns fairly between clients in `service.gate` instead.
            search_button.click(
                handlers.search,
                inputs,
                [results, search_status],
                api_name=False,
                preprocess=False,
                concurrency_limit=None,
            )
            text.submit(
                handlers.search,
                inputs,
                [results, search_status],
                api_name=False,
                preprocess=False,
                concurrency_limit=None,
            )

        with gr.Tab(key("tab_classify"), id="classify"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(
                        type="filepath",
                        label=key("classify_image"),
                        sources=["upload", "clipboard"],
                        height=300,
                        elem_id="classify-image",
                        buttons=["fullscreen"],
                    )
                    labels = gr.Textbox(label=key("labels_label"), value=examples["labels"], elem_id="labels")
                    template = gr.Textbox(
                        label=key("template_label"), value=examples["template"], elem_id="template"
                    )
                    classify_button = gr.Button(
                        key("classify_button"), variant="primary", elem_id="classify-button"
                    )
                with gr.Column():
                    classify_status = gr.Markdown(elem_id="classify-status")
                    probabilities = gr.Label(
                        label=key("probabilities"), num_top_classes=10, elem_id="probabilities"
                    )
            classify_button.click(
                handlers.classify,
                [image, labels, template],
                [probabilities, classify_status],
                api_name=False,
                preprocess=False,
                concurrency_limit=None,
            )

        with gr.Tab(key("tab_library"), id="library"):
            summary = gr.Markdown(elem_id="library-summary")
            browse = gr.Gallery(
                label=key("library_gallery"),
                columns=6,
                height="auto",
                object_fit="cover",
                elem_id="library-gallery",
                interactive=False,
                buttons=_GALLERY_BUTTONS,
            )
            offset = gr.State(0)
            with gr.Row():
                previous = gr.Button(key("previous_page"), size="sm")
                following = gr.Button(key("next_page"), size="sm")
            with gr.Accordion(key("add_images"), open=True):
                files = gr.File(
                    file_count="multiple", file_types=["image"], label=key("add_files"), elem_id="add-files"
                )
                token = gr.Textbox(label=key("token"), type="password", visible=service.tokens.enabled)
                add_button = gr.Button(key("add_button"), variant="primary", elem_id="add-button")
                add_status = gr.Markdown(elem_id="add-status")
            # Paging takes turns per client in `service.pages`, not in gradio's first-come queue.
            previous.click(
                handlers.previous_page,
                offset,
                [browse, summary, offset],
                api_name=False,
                concurrency_limit=None,
            )
            following.click(
                handlers.next_page, offset, [browse, summary, offset], api_name=False, concurrency_limit=None
            )
            add_button.click(
                handlers.add,
                [files, token, offset],
                [add_status, browse, summary, files],
                api_name=False,
                preprocess=False,
                concurrency_limit=None,
            )

        demo.load(handlers.first_page, None, [browse, summary], api_name=False, concurrency_limit=None)
    demo.i18n_instance = i18n()  # what `mount_gradio_app(i18n=...)` sets: the config's translations
    return demo


class LocaleScriptMiddleware:
    """Puts `script` into the head of the UI's page (``GET /``, gradio's HTML), before gradio's own code runs.

    gradio chooses the page's language when its code starts, from `navigator.language`, and its `head=`
    option inserts tags only after that choice: so the page's HTML itself carries the script. The script is
    the same for every browser (it reads the browser's language where it runs), so the page needs no `Vary`.
    The page is asked for uncompressed (some 70 KB, gradio's config inlined; its scripts and styles, the
    megabytes, keep their compression)."""

    def __init__(self, app: ASGIApp, script: str) -> None:
        self.app = app
        self.script = script.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or get_route_path(scope) != "/":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() != b"accept-encoding"]
        start: Message | None = None
        body: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if start is None or message["type"] != "http.response.body":  # not a page held here: as it is
                if start is not None:
                    await send(start)
                    start = None
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            page, fields = b"".join(body), list(start.get("headers", ()))
            kind = next((v for k, v in fields if k.lower() == b"content-type"), b"")
            if kind.startswith(b"text/html") and b"<head>" in page:  # first in the head: before gradio's code
                page = page.replace(b"<head>", b"<head>" + self.script, 1)
                fields = [(k, v) for k, v in fields if k.lower() != b"content-length"]
                fields.append((b"content-length", str(len(page)).encode("latin-1")))
            await send({**start, "headers": fields})
            await send({"type": "http.response.body", "body": page, "more_body": False})

        await self.app({**scope, "headers": headers}, receive, rewrite)


def _forget_uploads(demo: gr.Blocks, paths: list[str], cache_files: int) -> None:
    """Drop deleted uploads from gradio's record of uploaded files (it never forgets one by itself: its cleaner
    skips files already gone); once the record outgrows twice the folder's budget, every entry whose file is gone
    (paths spelt through another route to the folder included)."""
    record = demo.upload_file_set
    record.difference_update(paths)
    if len(record) > 2 * cache_files:
        record.difference_update([p for p in list(record) if not os.path.lexists(p)])


_TEMP_DIR_MODULES = ("gradio.route_utils", "gradio.routes", "gradio.screen_recording_utils", "gradio.mcp")
"""gradio's modules holding `DEFAULT_TEMP_DIR`, computed from `$GRADIO_TEMP_DIR` when each was imported."""


def _gradio_temp_dir(upload_dir: str) -> None:
    """Point gradio's `DEFAULT_TEMP_DIR` at `upload_dir`, gradio's upload folder now.

    gradio reads `$GRADIO_TEMP_DIR` for it once, at import, before `clipforge serve` chooses its private folder:
    mounting then made `$TMPDIR/gradio/vibe_edit_history` (shared by every user of the machine), which outlived
    the server. In the upload folder it goes when the server's folder does."""
    for name in _TEMP_DIR_MODULES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "DEFAULT_TEMP_DIR"):
            module.DEFAULT_TEMP_DIR = upload_dir


def mount_ui(app: Any, service: LibraryService) -> Any:
    """Mount the UI at `/` of `app` (after the API routes, so /api and /docs win).

    gradio's upload folder is `$GRADIO_TEMP_DIR` (`clipforge serve` points it at a private
    folder of its own). The library's folder is on gradio's block list, errors other than our
    own messages are not shown to clients, and the guard middleware goes in front of gradio.
    """
    from gradio.utils import get_upload_folder

    upload_dir = os.path.realpath(get_upload_folder())
    os.makedirs(upload_dir, mode=0o700, exist_ok=True)
    _gradio_temp_dir(upload_dir)  # before the Blocks: each gradio app it makes makes a folder there
    demo = build_ui(service, upload_dir)
    limits = service.limits
    library_root = str(Path(service.library.paths.root).resolve())
    # gradio keeps a state per session (inputs included) for up to 10,000 sessions (~75 KB each here); this page
    # keeps one number. Before mounting: `StateHolder.set_blocks`, inside the mount, copies the capacity once.
    demo.state_session_capacity = limits.ui_sessions
    app = gr.mount_gradio_app(
        app,
        demo,
        path="/",
        # no "settings": its language picker left our tabs and status lines in the browser's language, and its PWA
        # and screen-recording panels are for gradio's developers
        footer_links=["gradio"],
        max_file_size=limits.max_upload_bytes,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        css=CSS,
        run_history=False,
        show_error=False,
        allowed_paths=[],
        i18n=demo.i18n_instance,
        blocked_paths=[library_root],
    )
    # A mounted app never "launches", and gradio skips its check that event inputs are files
    # uploaded to its folder until it has: mark it launched so the check runs on every event.
    demo.has_launched = True
    demo.state_holder.capacity = limits.ui_sessions  # what gradio enforces (`StateHolder.update`)
    # gradio runs 40 events at once, first come; ours wait for their turn in `fair.FairGate` inside one
    demo.max_threads = demo._queue.max_thread_count = limits.ui_event_slots
    # gradio records the last 10,000 events for its monitoring dashboard (closed here: `ui_guard._UNUSED`) and
    # rebuilds a pandas table of all of them after every event (16.7 ms of CPU each at 10,000, and pandas
    # imported on the first): keep one record and never rebuild
    demo._queue.ANALYTICS_MAX_EVENTS = 1
    demo._queue.ANAYLTICS_CACHE_FREQUENCY = sys.maxsize
    queue = demo._queue
    # innermost: the page gets its language script after every check of the guards outside it
    app.add_middleware(LocaleScriptMiddleware, script=browser_locale_script())
    rules = JoinRules(
        {i: len(fn.inputs) for i, fn in demo.fns.items()},
        unread=lambda session: len(queue.pending_event_ids_session.get(session, ())),
        sessions=lambda: queue.pending_event_ids_session,
        max_unread_events=limits.ui_unread_events,
        max_unread_sessions=limits.ui_unread_sessions,
        max_pending=limits.ui_pending_per_host,
        max_new_sessions=limits.ui_new_sessions_per_minute,
    )
    app.add_middleware(
        UIGuardMiddleware,
        upload_dir=upload_dir,
        max_json_bytes=limits.max_ui_request_bytes,
        cache_bytes=limits.ui_cache_bytes,
        cache_age_s=limits.ui_cache_age_s,
        rules=rules,
        cache_files=limits.ui_cache_files,
        max_body_bytes=limits.max_ui_upload_body_bytes,  # what a chunked upload (no Content-Length) reserves
        known_session=lambda session: session in queue.pending_messages_per_session,
        forget_uploads=lambda paths: _forget_uploads(demo, paths, limits.ui_cache_files),
    )
    streams = OpenStreams(per_host=limits.ui_streams_per_host, total=limits.ui_streams)
    app.add_middleware(StreamLimitMiddleware, streams=streams)  # outside the guard: a refusal costs nothing
    # outermost of the UI's layers: the page and gradio's config, once built for a request's URL and host, are
    # answered again without gradio (each build: ~3 ms of Python holding the GIL), and builds take turns
    mounted = next(r.app for r in app.routes if isinstance(r, Mount) and isinstance(r.app, gr.routes.App))
    pages = PageCache(
        demo,
        per_minute=limits.ui_new_sessions_per_minute,
        shared=lambda: demo.auth is None and mounted.auth is None and mounted.auth_dependency is None,
        at_once=limits.ui_page_builds,
        per_address=limits.ui_page_builds_per_host,
    )
    app.add_middleware(UIPageCacheMiddleware, cache=pages)
    app.add_middleware(RefusalWords)  # outside every guard: their 429s and 507s in a Chinese browser's words
    app.state.ui_page_cache = pages
    app.state.ui_streams = streams
    app.state.ui_blocks = demo
    app.state.ui_upload_dir = upload_dir
    return app
