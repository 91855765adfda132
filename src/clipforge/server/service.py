"""What the server does with a library, shared by the REST API and the gradio UI.

Both front ends validate through here, so a label list or a template that the API refuses is
refused by the UI with the same words, and both reach the library the same safe way:
queries are plain text (never query arithmetic, whose bare words may name server files),
templates are a known set name or a string with one `{}` checked by `clipforge.zeroshot.prompts`
(never a file to read, never a format spec), and
images are addressed by integer id.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clipforge.disk_full import disk_full  # the one "no room to write" test (SQLite refusals too)
from clipforge.errors import UserError
from clipforge.image import ImageLoadError
from clipforge.library.dbfile import display_path, text_path
from clipforge.server.errors import APIError, shown, without_folders
from clipforge.server.fair import FairGate
from clipforge.server.limits import ServerLimits
from clipforge.server.receiving import ReceivingBytes
from clipforge.server.security import TokenChecker
from clipforge.server.sending import SendingBytes
from clipforge.server.service_words import DEFAULT_TEMPLATE, RequestWords
from clipforge.server.uploads import SniffedImage

__all__ = ["DEFAULT_TEMPLATE", "LibraryService", "disk_full", "model_notice"]

_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


@contextlib.contextmanager
def _decoding(image: SniffedImage | None) -> Iterator[None]:
    """The library decodes a client's image (`uploads` only read its header); a bad one is named as the
    client knows it ("query image could not be decoded: truncated ..."), one 422 on every route."""
    try:
        yield
    except ImageLoadError as exc:
        if image is None:
            raise
        raise ImageLoadError(
            f"{image.what} could not be decoded: {exc.reason}", path=image.what, reason=exc.reason
        ) from None


def _busy(exc: BaseException) -> bool:
    """Another connection held the library's write lock past the busy wait (60 s): the store's `LibraryBusyError`
    (an sqlite3.OperationalError), or SQLite's own "database is locked" from a write that did not go through it."""
    from clipforge.library.dbfile import LibraryBusyError

    return isinstance(exc, LibraryBusyError) or (
        isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower())


OFFLINE_MODEL = "clipforge-tiny"


def model_notice(name: str | None) -> str | None:
    """A sentence people must see when results will be poor because of the model."""
    if name == OFFLINE_MODEL:
        return (
            f"Using the offline model {OFFLINE_MODEL}: a tiny CLIP trained on CIFAR-10, shipped so the app works "
            f"without downloads. Expect rough results; start the server with --model ViT-B/32 (or another "
            f"real checkpoint) once its weights are available."
        )
    if name and name.startswith("test-"):
        return f"Using the test architecture {name} with random weights: results are meaningless (for tests only)."
    return None


class LibraryService(RequestWords):
    """A library plus the server's limits, token and write lock."""

    def __init__(self, library: Any, token: str | None = None, limits: ServerLimits | None = None) -> None:
        self.library = library
        self.limits = limits or ServerLimits()
        self.tokens = TokenChecker(token)
        self._write_lock = threading.Lock()  # one upload at a time (the library also serialises its writes)
        # Model work takes turns, round-robin between clients (REST and UI alike): see `fair`.
        self.gate = FairGate(slots=1, per_client=self.limits.max_client_requests)
        # The library's pages (the UI's and GET /api/images) and GET /api/stats (SQLite reads, no model) take
        # turns in a gate of their own: a flood of "Next page" events or deep offsets neither fills the thread
        # pool, nor queues other users behind it, nor waits behind model work.
        self.pages = FairGate(slots=2, per_client=self.limits.max_client_requests, what="library listings")
        # Originals and thumbnails (a thumbnail miss decodes the original) take turns in a third gate: one
        # client's many connections cannot fill the thread pool. A browser's gallery fetches six at a
        # time per tab, so a client may hold four times the model's cap here.
        self.reads = FairGate(slots=2, per_client=4 * self.limits.max_client_requests, what="image downloads")
        # Bytes of answers still being sent (`sending`), and of request bodies being read or answered, counted
        # before they are read (`receiving`): an address may hold a quarter of the server's budget of each.
        self.sending = SendingBytes(self.limits.max_sending_bytes, self.limits.max_sending_bytes // 4)
        self.receiving = ReceivingBytes(self.limits.max_receiving_bytes, self.limits.max_receiving_bytes // 4)
        if hasattr(library, "listing_ttl"):  # a Milvus store: pages and stats read every row (see the limit)
            library.listing_ttl = self.limits.listing_cache_s
        encoder = library.encoder  # load the model now: a broken model fails at start, not on first use
        from clipforge.text.families import tokenize_for

        # and its tokenizer: without sentencepiece a SigLIP server started, then answered every text search 500
        tokenize_for(encoder.model, ["a photo"], encoder.context_length)
        self.model_name: str = encoder.name or f"custom model {encoder.fingerprint[:12]}"
        self.notice = model_notice(encoder.name)

    # -- operations -------------------------------------------------------------------------
    def search(
        self, text: str | None, image: SniffedImage | None, top_k: int, tags: str | list[str] | None = None
    ) -> tuple[list[Any], float]:
        """(hits, milliseconds): text, image or both summed; optional zero-shot tag filter."""
        text = self.clean_text(text)
        if text is None and image is None:
            raise APIError(400, "empty_query", "give a text, an image, or both")
        if not 1 <= int(top_k) <= self.limits.max_top_k:
            raise APIError(
                400,
                "invalid_top_k",
                f"top_k must be between 1 and {self.limits.max_top_k}, got {shown(top_k)}",
            )
        filter_tags = self.clean_labels(tags, "tags") or None
        start = time.perf_counter()
        # What the library refuses (a `UserError` of any layer) reaches the client through
        # `errors.api_error`; any other exception is a bug, not "a bad query".
        with _decoding(image):  # the bytes, read by the library's reader as `index add` reads files
            hits = self.library.search(
                text=text,
                image=image.data if image is not None else None,
                top_k=int(top_k),
                filter_tags=filter_tags,
            )
        return hits, (time.perf_counter() - start) * 1000

    def no_results_reason(self, tags: str | list[str] | None = None) -> str:
        """Why a search found nothing (an empty library, no photo with those tags, or no match), one sentence.

        It reads the store (counts by status, the tags' photos: a scan of a large library), so callers run it
        in the client's turn, as the search itself, never on the event loop."""
        return self.library.no_results_reason(self.clean_labels(tags, "tags") or None)

    def classify_plan(
        self, labels: str | list[str] | None, template: str | None
    ) -> tuple[list[str], str | list[str]]:
        """(labels, templates) of a classify, refused (400) when it would encode more than `max_prompts`
        prompts (labels x templates): 100 labels x the 80 `imagenet` templates cost minutes of CPU."""
        from clipforge.zeroshot.prompts import get_templates

        clean = self.clean_labels(labels)
        if not clean:
            raise APIError(400, "no_labels", "give at least one label, e.g. 'cat, dog, car'")
        # Chinese labels: the default prompt becomes its Chinese twin
        from clipforge.zeroshot.languages import templates_for_labels

        templates = templates_for_labels(self.clean_template(template), clean)
        count = len(get_templates(templates)) if isinstance(templates, str) else len(templates)
        if len(clean) * count > self.limits.max_prompts:
            raise APIError(  # a limit passed by a well-formed request: 413, as every other (400 is "malformed")
                413,
                "too_many_prompts",
                f"{len(clean)} labels x {count} templates = {len(clean) * count:,} prompts; at most "
                f"{self.limits.max_prompts:,} prompts per request: use fewer labels or a smaller template "
                f"set (imagenet7 has 7 templates, simple 1)",
            )
        return clean, templates

    def classify(
        self, image: SniffedImage, labels: str | list[str], template: str | None
    ) -> tuple[list[tuple[str, float]], str | list[str], float]:
        """((label, probability) most likely first, templates used, milliseconds)."""
        clean, templates = self.classify_plan(labels, template)
        start = time.perf_counter()
        with _decoding(image):
            ranked = self.library.classify_image(image.data, clean, templates)
        return ranked, templates, (time.perf_counter() - start) * 1000

    def add(self, image: SniffedImage, filename: str | None = None) -> tuple[Any, bool]:
        """(ImageRecord, created): keep and index the upload, unless these exact bytes are already in the
        library (under any name), in which case the existing image is returned."""
        sha256 = hashlib.sha256(image.data).hexdigest()
        with self._write_lock:
            existing = self.library.store.images_with_sha(sha256)
            if existing:
                return min(existing, key=lambda r: r.id), False
            try:
                with _decoding(image):
                    return self.library.add_bytes(image.data, filename=filename), True
            except (OSError, sqlite3.OperationalError) as exc:
                if isinstance(exc, OSError) and exc.errno in _NOT_WRITABLE:
                    # a library on a read-only folder or mount is served for search (`Store` reads it as it is)
                    self._forget_partial_upload(sha256)
                    raise APIError(
                        403,
                        "read_only_library",
                        "this server's library is read-only (its folder or "
                        "disk cannot be written): the image was not added",
                    ) from None
                if _busy(exc):  # another process (a `clipforge tag` of a large library) held it past the wait
                    # its file is whole and kept: a retry finds it, and another server may be using it (review 63)
                    raise APIError(
                        503,
                        "library_busy",
                        "the library is being written by another process (e.g. `clipforge tag`): the image was "
                        "not added; try again shortly",
                        {"Retry-After": "10"},
                    ) from None
                if not disk_full(exc):
                    raise
                self._forget_partial_upload(sha256)
                raise APIError(
                    507,
                    "insufficient_storage",
                    "the library's disk is full (or a file size limit "
                    "stopped the write): the image was not added",
                ) from None

    def _forget_partial_upload(self, sha256: str) -> None:
        """Remove what a write stopped by a full disk (or a read-only library) left of this upload in the library's
        uploads folder (`library.media.store_upload` names files `<sha[:2]>/<sha>.<ext>`) and its emptied folder.
        In the uploads' turn (`media.uploads_lock`, across processes) and only while no image of the library has
        these bytes: another server storing the same bytes meanwhile reused the file, answered 201, and lost it
        to this cleanup (review 63). A lock that cannot be had in time leaves the files (they cost only disk)."""
        from clipforge.library.media import uploads_lock

        folder = Path(self.library.paths.uploads_dir) / sha256[:2]
        with contextlib.suppress(OSError, sqlite3.Error), uploads_lock(self.library.paths):
            if self.library.store.images_with_sha(sha256):
                return
            for leftover in folder.glob(f"*{sha256}*") if folder.is_dir() else ():
                with contextlib.suppress(OSError):
                    if leftover.is_dir() and not leftover.is_symlink():
                        shutil.rmtree(leftover)
                    else:
                        leftover.unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty

    def list_images(self, limit: int, offset: int) -> tuple[list[Any], int | None]:
        if not 1 <= int(limit) <= self.limits.max_page_size:
            raise APIError(400, "invalid_limit", f"limit must be between 1 and {self.limits.max_page_size}")
        if not 0 <= int(offset) <= self.limits.max_offset:
            raise APIError(400, "invalid_offset", f"offset must be between 0 and {self.limits.max_offset}")
        records = self.library.list_images(limit=int(limit) + 1, offset=int(offset))
        next_offset = int(offset) + int(limit) if len(records) > int(limit) else None
        return records[: int(limit)], next_offset

    def tags(self, image_id: int) -> list[tuple[str, float]]:
        return self.library.tags(image_id)

    def _existing(self, image_id: int) -> Any:
        record = self.library.get_image(image_id)
        if record is None:
            raise APIError(404, "not_found", f"no image with id {image_id}")
        if record.status != "ok":
            raise APIError(404, "not_indexed", f"image {image_id} could not be indexed: {record.error}")
        return record

    def image_bytes(self, image_id: int, known: str | None = None) -> tuple[bytes | None, str, str]:
        """(bytes, MIME type, ETag) of an original; bytes None when `known` (If-None-Match) names its ETag, which
        is its content's sha256: an id removed and given to another photo has another tag, so a browser's
        copy of the old photo is never shown for it (ids are reused; copies were kept an hour, unasked)."""
        tag = f'"{self._existing(image_id).sha256}"'
        if _names(known, tag):
            return None, "", tag
        try:
            data, mime = self.library.image_bytes(image_id)
        except (OSError, ValueError) as exc:
            if isinstance(exc, UserError) and exc.http_status >= 500:  # the store's (a Milvus server not answering)
                raise
            raise _file_unavailable(image_id, exc) from None
        if not mime.startswith("image/"):
            raise APIError(404, "file_unavailable", f"image {image_id}'s file is no longer an image")
        return data, mime, tag

    def thumbnail(self, image_id: int, size: int, known: str | None = None) -> tuple[bytes | None, str]:
        """(JPEG, ETag) of a thumbnail, JPEG None when `known` names the tag (see `image_bytes`)."""
        if not 16 <= int(size) <= self.limits.max_thumb_size:
            raise APIError(
                400, "invalid_size", f"thumbnail size must be between 16 and {self.limits.max_thumb_size}"
            )
        tag = f'"{self._existing(image_id).sha256}-{int(size)}"'
        if _names(known, tag):
            return None, tag
        try:
            return self.library.thumbnail(image_id, int(size)), tag
        except (OSError, ValueError) as exc:
            if isinstance(exc, UserError) and exc.http_status >= 500:  # the store's (a Milvus server not answering)
                raise
            raise _file_unavailable(image_id, exc) from None

    def stats(self) -> dict[str, Any]:
        """The stats of the model space this server searches in, without absolute server paths.

        A library may hold several model spaces; `serve --model M` serves M's. Its `model`, `distinct_contents`,
        `index` and `tags` are M's on every store: a library's `stats` counts the space of the model it has loaded
        (`Library.space_fingerprint`), and the model is loaded first here."""
        import os

        self.library.encoder  # noqa: B018  (the served model, whose space the stats describe)
        stats = dict(self.library.stats())
        stats["library"] = os.path.basename(str(stats.get("library", "")).rstrip(os.sep))
        if isinstance(stats.get("index"), dict) and stats["index"].get("path"):
            stats["index"] = {**stats["index"], "path": os.path.basename(str(stats["index"]["path"]))}
        stats["failures"] = [
            {"filename": display_path(os.path.basename(text_path(f["path"]))), "reason": f["reason"]}  # b64: undone
            for f in stats.get("failures", [])
        ]
        stats["server"] = {
            "model": self.model_name,
            "model_notice": self.notice,
            "write_token_required": self.tokens.enabled,
            "limits": self.limits.to_dict(),
        }
        return stats


def _file_unavailable(image_id: int, exc: BaseException) -> APIError:
    """404 for an indexed file that cannot be served now, saying why without the server's path (a FIFO's
    `NotRegularFileError` named it: `/srv/photos/a.jpg is not a regular file`)."""
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or without_folders(str(exc))
    return APIError(404, "file_unavailable", f"image {image_id}'s file cannot be read now: {reason}")


def _names(if_none_match: str | None, tag: str) -> bool:
    """Whether an If-None-Match header names `tag` (a list of tags, weak ones too, or `*`)."""
    if not if_none_match:
        return False
    given = {t.strip().removeprefix("W/") for t in if_none_match[:4096].split(",")}
    return tag in given or "*" in given
