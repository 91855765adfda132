"""The gradio UI at `/`: search the library by text, classify an image against typed labels,
and browse the library and add photos to it.

Every action goes through `LibraryService`, so the UI obeys the same limits, token and
validation as the REST API. Galleries show thumbnails served by the API's
`/api/images/{id}/thumb` (absolute URLs built from the browser's own request, so they work
behind whatever host name the user typed): no image is copied into gradio's cache.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry calls

import gradio as gr  # noqa: E402

from clipforge.server.errors import APIError  # noqa: E402
from clipforge.server.service import DEFAULT_TEMPLATE, LibraryService  # noqa: E402
from clipforge.server.uploads import sniff_image  # noqa: E402

__all__ = ["build_ui", "mount_ui"]

PAGE_SIZE = 24
DEFAULT_LABELS = "cat, dog, bird, car, airplane, ship, horse, truck, frog, deer"
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


def _read_file(path: str | Path, service: LibraryService, what: str):
    """A file gradio received from the browser, checked exactly like a REST upload."""
    size = os.path.getsize(path)
    if size > service.limits.max_upload_bytes:
        raise APIError(413, "payload_too_large",
                       f"{what} is larger than the limit of {service.limits.max_upload_bytes:,} bytes")
    return sniff_image(Path(path).read_bytes(), service.limits, what)


def _gr_error(exc: APIError) -> Exception:
    return gr.Error(exc.detail)


class _Handlers:
    """The UI's callbacks (a class so the pieces stay small and testable without a browser)."""

    def __init__(self, service: LibraryService) -> None:
        self.service = service

    def thumb(self, base: str, image_id: int) -> str:
        return f"{base}/api/images/{image_id}/thumb?size={self.service.limits.thumb_size}"

    def search(self, text: str, image_path: str | None, top_k: float, tags: str, request: gr.Request = None):
        try:
            image = _read_file(image_path, self.service, "query image") if image_path else None
            hits, took = self.service.search(text, image, int(top_k), tags)
        except APIError as exc:
            raise _gr_error(exc) from None
        base = _base_url(request)
        items = [(self.thumb(base, h.id), f"{h.score:.3f} · {os.path.basename(h.path)}") for h in hits]
        if not hits:
            status = "No results. Is the library empty? Add images in the *Library* tab."
        else:
            status = f"{len(hits)} results in {took:.0f} ms (score = cosine similarity with the query)."
        return items, status

    def classify(self, image_path: str | None, labels: str, template: str) -> dict[str, float]:
        if not image_path:
            raise _gr_error(APIError(400, "no_image", "upload an image to classify first"))
        try:
            image = _read_file(image_path, self.service, "image")
            ranked, _, _ = self.service.classify(image, labels, template)
        except APIError as exc:
            raise _gr_error(exc) from None
        return {label: float(p) for label, p in ranked}

    def browse(self, offset: int, request: gr.Request = None):
        records, next_offset = self.service.list_images(PAGE_SIZE, max(0, int(offset)))
        base = _base_url(request)
        items = [(self.thumb(base, r.id), f"#{r.id} · {os.path.basename(r.path)}") for r in records]
        counts = self.service.library.stats()["images"]
        shown = f"{offset + 1}-{offset + len(records)}" if records else "none"
        summary = (f"**{counts.get('ok', 0)} images** in the library ({counts.get('failed', 0)} files could not be "
                   f"read) · showing {shown}")
        return items, summary, int(offset), next_offset is not None

    def first_page(self, request: gr.Request = None):
        items, summary, _, _ = self.browse(0, request)
        return items, summary

    def previous_page(self, offset: int, request: gr.Request = None):
        items, summary, offset, _ = self.browse(max(0, int(offset) - PAGE_SIZE), request)
        return items, summary, offset

    def next_page(self, offset: int, request: gr.Request = None):
        items, summary, new_offset, _ = self.browse(int(offset) + PAGE_SIZE, request)
        if not items:  # past the end: stay on the last page
            items, summary, new_offset, _ = self.browse(int(offset), request)
        return items, summary, new_offset

    def add(self, files: list[Any] | None, token: str, offset: int, request: gr.Request = None):
        if not files:
            raise _gr_error(APIError(400, "no_files", "choose one or more images to add first"))
        if not self.service.tokens.matches(token or None):
            raise _gr_error(APIError(401, "unauthorized", "this server needs its token to add images"))
        added, present, refused = 0, 0, []
        for item in files:
            path = getattr(item, "name", None) or str(item)
            name = os.path.basename(path)
            try:
                _, created = self.service.add(_read_file(path, self.service, name))
            except APIError as exc:
                refused.append(f"{exc.detail}")
                continue
            added += int(created)
            present += int(not created)
        lines = [f"Added {added} image(s); {present} already in the library; {len(refused)} refused."]
        lines += [f"- {reason}" for reason in refused[:20]]
        items, summary, offset, _ = self.browse(offset, request)
        return "\n".join(lines), items, summary, None


def build_ui(service: LibraryService):
    """The gradio Blocks for `service` (not yet mounted)."""
    handlers = _Handlers(service)
    with gr.Blocks(title="clipforge", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"## clipforge — search and classify your photos\nModel: **{service.model_name}** · "
                    f"REST API: [/docs](/docs)")
        if service.notice:
            gr.Markdown(f"**Note:** {service.notice}", elem_id="model-notice")
        with gr.Tab("Search", id="search"):
            with gr.Row(equal_height=True):
                text = gr.Textbox(label="Describe the photo you are looking for", placeholder="a dog on the beach",
                                  scale=5, elem_id="search-text", max_length=service.limits.max_text_chars)
                search_button = gr.Button("Search", variant="primary", scale=1, elem_id="search-button")
            with gr.Accordion("Search with an image, filter by tag", open=False), gr.Row():
                query_image = gr.Image(type="filepath", label="Example image (added to the text)",
                                       sources=["upload", "clipboard"], height=200, elem_id="search-image")
                with gr.Column():
                    top_k = gr.Slider(1, min(100, service.limits.max_top_k), value=12, step=1, label="Results")
                    tags = gr.Textbox(label="Only images tagged (comma-separated zero-shot tags)",
                                      placeholder="e.g. dog, cat (see `clipforge tag`)")
            search_status = gr.Markdown(elem_id="search-status")
            results = gr.Gallery(label="Results", columns=4, height="auto", object_fit="contain",
                                 elem_id="search-results", interactive=False)
            inputs = [text, query_image, top_k, tags]
            search_button.click(handlers.search, inputs, [results, search_status], api_name=False)
            text.submit(handlers.search, inputs, [results, search_status], api_name=False)

        with gr.Tab("Classify", id="classify"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], height=300,
                                     elem_id="classify-image")
                    labels = gr.Textbox(label="Labels (comma-separated)", value=DEFAULT_LABELS, elem_id="labels")
                    template = gr.Textbox(label="Prompt template ({} = label), or a set name such as imagenet",
                                          value=DEFAULT_TEMPLATE)
                    classify_button = gr.Button("Classify", variant="primary", elem_id="classify-button")
                probabilities = gr.Label(label="Probabilities", num_top_classes=10, elem_id="probabilities")
            classify_button.click(handlers.classify, [image, labels, template], probabilities, api_name=False)

        with gr.Tab("Library", id="library"):
            summary = gr.Markdown(elem_id="library-summary")
            browse = gr.Gallery(label="Library", columns=6, height="auto", object_fit="cover",
                                elem_id="library-gallery", interactive=False)
            offset = gr.State(0)
            with gr.Row():
                previous = gr.Button("Previous page", size="sm")
                following = gr.Button("Next page", size="sm")
            with gr.Accordion("Add images", open=True):
                files = gr.File(file_count="multiple", file_types=["image"], label="Images to add",
                                elem_id="add-files")
                token = gr.Textbox(label="Server token", type="password", visible=service.tokens.enabled)
                add_button = gr.Button("Add to library", variant="primary", elem_id="add-button")
                add_status = gr.Markdown()
            previous.click(handlers.previous_page, offset, [browse, summary, offset], api_name=False)
            following.click(handlers.next_page, offset, [browse, summary, offset], api_name=False)
            add_button.click(handlers.add, [files, token, offset], [add_status, browse, summary, files],
                             api_name=False)

        demo.load(handlers.first_page, None, [browse, summary], api_name=False)
    return demo


def mount_ui(app: Any, service: LibraryService) -> Any:
    """Mount the UI at `/` of `app` (after the API routes, so /api and /docs win)."""
    demo = build_ui(service)
    upload_limit = service.limits.max_upload_bytes
    return gr.mount_gradio_app(app, demo, path="/", footer_links=["gradio", "settings"], max_file_size=upload_limit,
                               ssr_mode=False, pwa=False, mcp_server=False, css=CSS, run_history=False)
